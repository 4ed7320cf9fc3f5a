package pod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/runtime"
)

// Recover adopts the owned pods whose containers all still run, reports
// the others as exited, and removes every pod resource no owned instance
// holds (runc containers, bundles and mounts, cgroups, netns, veths,
// leases, logs).
func (r *Runtime) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	list, err := r.ctrs.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing runc containers: %w", err)
	}
	byRuncID := map[string]ctrState{}
	for _, c := range list {
		byRuncID[c.ID] = c
	}
	var statuses []runtime.Status
	ownedIDs := map[string]bool{}
	keep := map[string]bool{} // runc ids of owned pods
	for _, inst := range owned {
		ownedIDs[inst.ID] = true
		if validID(inst.ID) != nil {
			continue
		}
		statuses = append(statuses, r.adopt(ctx, inst, byRuncID))
		if p, err := r.load(inst.ID); err == nil {
			for _, c := range p.Containers {
				keep[c.RuncID] = true
			}
		}
	}
	running, errs := r.removeOrphanContainers(ctx, list, keep)
	errs = append(errs, r.removeOrphanPods(ctx, ownedIDs, running)...)
	return statuses, errors.Join(errs...)
}

// removeOrphanContainers stops and deletes the containers not in keep,
// concurrently: each may take its stop grace, and the node registers only
// once recovered. It returns the runc ids of those it could not stop.
func (r *Runtime) removeOrphanContainers(ctx context.Context, list []ctrState, keep map[string]bool) (running []string, errs []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range list {
		if keep[c.ID] {
			continue
		}
		r.log.Info("removing orphan container", "container", c.ID)
		wg.Go(func() {
			if err := r.stopContainer(ctx, &container{RuncID: c.ID}); err != nil {
				mu.Lock()
				errs = append(errs, err)
				running = append(running, c.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return running, errs
}

// removeOrphanPods removes the pod directories, logs, cgroups and networks
// of pods not owned, except those of pods whose container still runs
// (running: runc ids).
func (r *Runtime) removeOrphanPods(ctx context.Context, owned map[string]bool, running []string) []error {
	var errs []error
	orphans := map[string]bool{}
	for _, sub := range []string{"pods", "logs"} {
		ents, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, sub))
		for _, e := range ents {
			orphans[e.Name()] = true
		}
	}
	for _, id := range r.cgroups.Children(r.cfg.CgroupDir) {
		orphans[id] = true
	}
	netOwners, err := r.net.Owners()
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range netOwners {
		orphans[id] = true
	}
	for id := range orphans {
		if owned[id] || validID(id) != nil {
			continue
		}
		if slices.ContainsFunc(running, func(rid string) bool { return strings.HasPrefix(rid, id+"-") }) {
			continue // its container still runs: keep its address and network
		}
		r.log.Info("removing orphan pod resources", "id", id)
		unlock := r.locks.Lock(id)
		if err := r.cleanup(ctx, id, nil); err != nil {
			errs = append(errs, err)
		}
		unlock()
		if err := os.RemoveAll(r.logDir(id)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// adopt takes over an owned pod found running, or reports it exited.
func (r *Runtime) adopt(ctx context.Context, inst runtime.Instance, byRuncID map[string]ctrState) runtime.Status {
	unlock := r.locks.Lock(inst.ID)
	defer unlock()
	p, err := r.load(inst.ID)
	if err != nil {
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseFailed, Reason: api.ReasonNotFound, Message: "pod not found on node"}
	}
	var gone []string
	for _, c := range p.Containers {
		if rc, ok := byRuncID[c.RuncID]; !ok || rc.Status != "running" {
			gone = append(gone, c.Name)
		}
	}
	n, netOK := r.net.Get(inst.ID)
	if len(gone) > 0 || !netOK || len(p.Containers) == 0 {
		msg := "pod network gone"
		if len(gone) > 0 {
			msg = fmt.Sprintf("container %s exited while the riklet was down", strings.Join(gone, ", "))
		}
		return runtime.Status{InstanceID: inst.ID, Phase: runtime.PhaseExited, IP: p.IP, Reason: api.ReasonUnknown, Message: msg}
	}
	p.ready = make(chan struct{})
	close(p.ready)
	p.IP = n.IP.String()
	for _, c := range p.Containers {
		c.done = make(chan struct{})
		pid := byRuncID[c.RuncID].Pid
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if r.procs.Watch(r.bg, pid) {
				r.containerExited(p, c, nil)
			}
		}()
	}
	if r.cfg.Exposer != nil && len(p.Ports) > 0 {
		if err := r.cfg.Exposer.Expose(ctx, p.ID, n.IP, p.Ports); err != nil {
			r.log.Warn("re-exposing adopted pod", "id", p.ID, "err", err)
		}
	}
	r.mu.Lock()
	r.pods[p.ID] = p
	r.mu.Unlock()
	r.log.Info("adopted running pod", "id", p.ID, "ip", p.IP)
	return p.status()
}
