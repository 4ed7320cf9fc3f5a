package pod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Stop stops the pod's containers (SIGTERM, StopGrace, SIGKILL) and removes
// everything it holds. Stopping an unknown pod is not an error.
func (r *Runtime) Stop(ctx context.Context, inst runtime.Instance) error {
	if err := validID(inst.ID); err != nil {
		return err
	}
	unlock := r.locks.Lock(inst.ID)
	defer unlock()
	return r.cleanup(ctx, inst.ID, inst.Workload.Spec.Containers)
}

// cleanup stops and removes everything pod id may hold: the containers of
// its record and of spec, their bundles and mounts, cgroups, network,
// exposure. Missing pieces are fine. Call with the pod's lock held.
func (r *Runtime) cleanup(ctx context.Context, id string, spec []workload.Container) error {
	r.mu.Lock()
	p := r.pods[id]
	if p != nil {
		p.stopping = true
	}
	r.mu.Unlock()
	if p == nil {
		p, _ = r.load(id)
	}
	var errs []error
	if r.cfg.Exposer != nil && p != nil && len(p.Ports) > 0 {
		if err := r.cfg.Exposer.Unexpose(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("unexposing pod %s: %w", id, err))
		}
	}
	if err := r.stopContainers(ctx, podContainers(id, p, spec)); err != nil {
		// A container may still run: its rootfs, cgroup and address (the
		// lease) stay until it is stopped; the caller retries.
		return fmt.Errorf("stopping pod %s: %w", id, errors.Join(append(errs, err)...))
	}
	errs = append(errs, r.removeResources(ctx, id)...)
	r.mu.Lock()
	if r.pods[id] == p || p == nil {
		delete(r.pods, id)
	}
	r.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping pod %s: %w", id, err)
	}
	return nil
}

// podContainers lists every container pod id may have: those of its record
// p (nil: none), and those of spec.
func podContainers(id string, p *pod, spec []workload.Container) []*container {
	var out []*container
	seen := map[string]bool{}
	if p != nil {
		for _, c := range p.Containers {
			if !seen[c.RuncID] {
				seen[c.RuncID] = true
				out = append(out, c)
			}
		}
	}
	for _, c := range spec {
		if rid := runcID(id, c.Name); !seen[rid] {
			seen[rid] = true
			out = append(out, &container{Name: c.Name, RuncID: rid})
		}
	}
	return out
}

// stopContainers stops cs concurrently (each may take its stop grace) and
// returns the errors of those it could not stop.
func (r *Runtime) stopContainers(ctx context.Context, cs []*container) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := r.stopContainer(ctx, c); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// removeResources removes what pod id holds once its containers are
// stopped: rootfs mounts, cgroups, network, then its directory (kept when
// something else could not be removed, for the next try).
func (r *Runtime) removeResources(ctx context.Context, id string) []error {
	var errs []error
	dir := r.podDir(id)
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				if err := r.mounts.Unmount(filepath.Join(dir, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := r.cgroups.Remove(r.cgroup(id)); err != nil {
		errs = append(errs, err)
	}
	if err := r.net.Teardown(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
		}
	}
	return errs
}

// removeUnloadable removes the state runc keeps of a container it cannot
// load: a `runc run` killed (start timeout, CPU starvation) before it
// recorded the container leaves a directory under its root that makes
// every later `runc run` of the id fail ("container with given ID already
// exists"). Its processes, if any, are in the pod's cgroup, removed next.
func (r *Runtime) removeUnloadable(ctx context.Context, c *container) error {
	if !r.ctrs.HasRecord(c.RuncID) {
		return nil // no such container
	}
	_ = r.ctrs.Delete(ctx, c.RuncID)
	if _, err := r.ctrs.State(ctx, c.RuncID); err == nil || ctx.Err() != nil {
		return fmt.Errorf("container %s: runc could not load it, then could: try again", c.RuncID)
	}
	r.log.Warn("removing the state of a container runc cannot load", "container", c.RuncID)
	if err := r.ctrs.DropRecord(c.RuncID); err != nil {
		return fmt.Errorf("removing broken container %s: %w", c.RuncID, err)
	}
	return nil
}

// stopContainer sends SIGTERM, waits StopGrace, sends SIGKILL, then deletes
// the container from runc.
func (r *Runtime) stopContainer(ctx context.Context, c *container) error {
	st, err := r.ctrs.State(ctx, c.RuncID)
	if err != nil {
		if ctx.Err() != nil { // runc could not even be asked
			return fmt.Errorf("stopping container %s: %w", c.RuncID, ctx.Err())
		}
		if c.done != nil {
			select { // the runc run of a container that never got made
			case <-c.done:
			case <-ctx.Done():
				return fmt.Errorf("stopping container %s: %w", c.RuncID, ctx.Err())
			}
		}
		return r.removeUnloadable(ctx, c) // no such container, or a broken one
	}
	if st.Status == "running" || st.Status == "paused" || st.Status == "created" {
		r.terminate(ctx, c, st.Pid)
	}
	if c.done == nil {
		// Nobody waits for this init: one whose `runc run` was given up on
		// is our child (we are a subreaper) and now a zombie. runc gives
		// no pid for a container whose init already ended.
		pid := st.Pid
		if pid <= 0 {
			pid = c.pid
		}
		r.procs.Reap(pid)
	}
	if err := r.ctrs.Delete(ctx, c.RuncID); err != nil {
		if _, serr := r.ctrs.State(ctx, c.RuncID); serr == nil || ctx.Err() != nil {
			return fmt.Errorf("deleting container %s: %w", c.RuncID, err)
		}
	}
	if c.done != nil {
		select { // runc run returns once the container is gone
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

// terminate ends the processes of container c (init pid): SIGTERM to its
// init, then, after StopGrace, SIGKILL to all.
func (r *Runtime) terminate(ctx context.Context, c *container, pid int) {
	if err := r.ctrs.Kill(ctx, c.RuncID, syscall.SIGTERM, false); err != nil {
		r.log.Debug("SIGTERM", "container", c.RuncID, "err", err)
	}
	if r.waitStopped(ctx, c, pid, r.cfg.StopGrace) {
		return
	}
	r.log.Info("container did not stop in time, killing", "container", c.RuncID, "grace", r.cfg.StopGrace)
	if err := r.ctrs.Kill(ctx, c.RuncID, syscall.SIGKILL, true); err != nil {
		r.log.Debug("SIGKILL", "container", c.RuncID, "err", err)
	}
	r.waitStopped(ctx, c, pid, 10*time.Second)
}

// waitStopped waits until the container's process ended, at most d.
func (r *Runtime) waitStopped(ctx context.Context, c *container, pid int, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	if c.done != nil {
		select {
		case <-c.done:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if !r.procs.Alive(pid) {
			return true
		}
		select {
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
