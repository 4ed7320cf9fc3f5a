package pod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtime"
)

// execOutputMax bounds the output of a command run by Exec kept for its
// caller (a probe's message).
const execOutputMax = 1 << 10

// Exec runs cmd in container of the running pod id (its first container
// when container is empty) and returns its exit code and the start of its
// output. Exec probes use it; ctx bounds the command.
func (r *Runtime) Exec(ctx context.Context, id, container string, cmd []string) (int, string, error) {
	if len(cmd) == 0 {
		return 0, "", errors.New("no command")
	}
	r.mu.Lock()
	p := r.pods[id]
	var rid string
	if p != nil && !p.exited && !p.stopping {
		for _, c := range p.Containers {
			if container == "" || c.Name == container {
				rid = c.RuncID
				break
			}
		}
	}
	r.mu.Unlock()
	switch {
	case p == nil:
		return 0, "", runtime.ErrNotFound
	case rid == "":
		return 0, "", fmt.Errorf("container %q not running", container)
	}
	out := &capped{max: execOutputMax}
	code, err := r.ctrs.Exec(ctx, rid, cmd, out)
	return code, out.String(), err
}

// Exec implements containers: `runc exec`, its output to out. A command
// still running when ctx ends gets SIGTERM (runc forwards it), then runc
// is killed.
func (c *runcCLI) Exec(ctx context.Context, id string, cmd []string, out io.Writer) (int, error) {
	args := append([]string{"--root", c.root, "exec", id}, cmd...)
	x := exec.CommandContext(ctx, c.runc.Command, args...)
	x.Stdout, x.Stderr = out, out
	x.Cancel = func() error { return x.Process.Signal(syscall.SIGTERM) }
	x.WaitDelay = 2 * time.Second
	err := x.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, fmt.Errorf("runc exec: %w", ctx.Err())
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	case err != nil:
		return -1, fmt.Errorf("runc exec: %w", err)
	}
	return 0, nil
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
