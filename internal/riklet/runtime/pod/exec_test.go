package pod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Exec implements containers for the fake node: "true" exits 0, "echo
// WORDS" prints them and exits 0, anything else prints "nope" and exits 1.
// The container must be running.
func (n *fakeNode) Exec(ctx context.Context, id string, cmd []string, out io.Writer) (int, error) {
	n.mu.Lock()
	c := n.ctrs[id]
	running := c != nil && n.state(c).Status == "running"
	n.mu.Unlock()
	if !running {
		return -1, fmt.Errorf("runc exec: container %s is not running", id)
	}
	switch cmd[0] {
	case "true":
		return 0, nil
	case "echo":
		fmt.Fprintln(out, strings.Join(cmd[1:], " "))
		return 0, nil
	}
	fmt.Fprint(out, strings.Repeat("nope", 1000))
	return 1, nil
}

func TestFakeExec(t *testing.T) {
	e := newFakeEnv(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("web", e.ctr("web"), e.ctr("side"))
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if code, out, err := r.Exec(ctx, inst.ID, "side", []string{"echo", "hi"}); code != 0 || out != "hi\n" || err != nil {
		t.Errorf("exec echo in side = %d %q %v", code, out, err)
	}
	if code, _, err := r.Exec(ctx, inst.ID, "", []string{"true"}); code != 0 || err != nil {
		t.Errorf("exec true in the first container = %d %v", code, err)
	}
	code, out, err := r.Exec(ctx, inst.ID, "web", []string{"false"})
	if code != 1 || err != nil || len(out) != execOutputMax {
		t.Errorf("exec false = %d, %d bytes of output, %v", code, len(out), err)
	}
	if _, _, err := r.Exec(ctx, inst.ID, "nosuch", []string{"true"}); err == nil {
		t.Error("exec in a missing container ran")
	}
	if _, _, err := r.Exec(ctx, inst.ID, "web", nil); err == nil {
		t.Error("exec of no command ran")
	}
	if _, _, err := r.Exec(ctx, "unknown", "web", []string{"true"}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("exec in an unknown pod: %v", err)
	}
	if err := r.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Exec(ctx, inst.ID, "web", []string{"true"}); err == nil {
		t.Error("exec in a stopped pod ran")
	}
}

// TestExecRunc runs commands in a real container with runc exec (root).
func TestExecRunc(t *testing.T) {
	e := setup(t)
	r := e.runtime(t)
	ctx := context.Background()
	inst := instance("probed", workload.Container{Name: "main", Image: e.ref, Command: []string{"sh", "-c", "touch /tmp/ok; exec sleep 3600"}})
	if _, err := r.Start(ctx, inst); err != nil {
		t.Fatal(err)
	}
	defer r.Stop(ctx, inst)
	if code, out, err := r.Exec(ctx, inst.ID, "main", []string{"sh", "-c", "test -f /tmp/ok && echo fine"}); code != 0 || out != "fine\n" || err != nil {
		t.Errorf("exec = %d %q %v", code, out, err)
	}
	if code, out, err := r.Exec(ctx, inst.ID, "main", []string{"sh", "-c", "echo bad >&2; exit 4"}); code != 4 || out != "bad\n" || err != nil {
		t.Errorf("failing exec = %d %q %v", code, out, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := r.Exec(short, inst.ID, "main", []string{"sleep", "60"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec past its deadline: %v", err)
	}
}
