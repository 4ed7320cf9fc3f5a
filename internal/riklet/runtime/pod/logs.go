package pod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rik-org/rik/internal/riklet/logfile"
	"github.com/rik-org/rik/internal/riklet/runtime"
)

// Logs writes a container's output (stdout and stderr, interleaved) to w:
// the last opts.Tail lines (0: all kept, including the rotated file), then,
// with opts.Follow, what comes next until ctx ends or the pod stops.
func (r *Runtime) Logs(ctx context.Context, inst runtime.Instance, opts runtime.LogOptions, w io.Writer) error {
	if err := validID(inst.ID); err != nil {
		return err
	}
	name := opts.Container
	if name == "" {
		if len(inst.Workload.Spec.Containers) > 0 {
			name = inst.Workload.Spec.Containers[0].Name
		} else if p, err := r.load(inst.ID); err == nil && len(p.Containers) > 0 {
			name = p.Containers[0].Name
		}
	}
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return fmt.Errorf("logs of %s: container %q: %w", inst.ID, name, runtime.ErrNotFound)
	}
	path := filepath.Join(r.logDir(inst.ID), name+".log")
	off, err := logfile.Tail(path, opts.Tail, w)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logs of %s/%s: %w", inst.ID, name, runtime.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("logs of %s/%s: %w", inst.ID, name, err)
	}
	if !opts.Follow {
		return nil
	}
	return logfile.Follow(ctx, path, off, w, func() bool { return r.running(inst.ID) })
}

// Forget removes the logs of a stopped pod (Stop keeps them, so the logs
// of a pod that ended can still be read).
func (r *Runtime) Forget(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	if r.running(id) {
		return fmt.Errorf("forgetting pod %s: still running", id)
	}
	if err := os.RemoveAll(r.logDir(id)); err != nil {
		return fmt.Errorf("forgetting pod %s: %w", id, err)
	}
	return nil
}

// running reports whether pod id runs (started or adopted, not exited).
func (r *Runtime) running(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pods[id]
	return ok && !p.exited && !p.stopping
}

// rotateLoop rotates container logs above cfg.LogMaxSize until ctx ends.
func (r *Runtime) rotateLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		var paths []string
		for id, p := range r.pods {
			for _, c := range p.Containers {
				paths = append(paths, filepath.Join(r.logDir(id), c.Name+".log"))
			}
		}
		r.mu.Unlock()
		for _, path := range paths {
			if err := logfile.Rotate(path, r.cfg.LogMaxSize); err != nil {
				r.log.Warn("rotating log", "path", path, "err", err)
			}
		}
	}
}
