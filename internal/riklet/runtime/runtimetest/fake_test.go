package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

func inst(id string) runtime.Instance {
	return runtime.Instance{ID: id, Name: "n-" + id, Workload: workload.Workload{Kind: workload.KindPod,
		Spec: workload.Spec{Containers: []workload.Container{{Name: "c", Image: "a", Ports: workload.PortList{{Port: 80, TargetPort: 8080, Protocol: "TCP"}}}}}}}
}

func TestFakeLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var mu sync.Mutex
	var reported []runtime.Status
	f, err := New(workload.KindPod, dir, func(s runtime.Status) { mu.Lock(); reported = append(reported, s); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Start(ctx, inst("a"))
	if err != nil || st.Phase != runtime.PhaseRunning || st.IP == "" || len(st.Ports) != 1 || st.Ports[0].Port != 80 {
		t.Fatalf("start: %+v, %v", st, err)
	}
	again, _ := f.Start(ctx, inst("a"))
	if again.IP != st.IP {
		t.Errorf("start not idempotent: %s then %s", st.IP, again.IP)
	}
	f.FailNext(errors.New("boom"))
	if _, err := f.Start(ctx, inst("b")); err == nil || slices.Contains(f.Running(), "b") {
		t.Errorf("FailNext: %v, running %v", err, f.Running())
	}
	if _, err := f.Start(ctx, inst("b")); err != nil {
		t.Fatal(err)
	}
	if err := f.Exit("b", 3); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(reported) != 1 || reported[0].Phase != runtime.PhaseExited || *reported[0].ExitCode != 3 {
		t.Errorf("reported %+v", reported)
	}
	mu.Unlock()
	if err := f.Exit("b", 3); err == nil {
		t.Error("second exit accepted")
	}
	var buf bytes.Buffer
	if err := f.Logs(ctx, inst("a"), runtime.LogOptions{Tail: 2}, &buf); err != nil || buf.String() != "n-a line 2\nn-a line 3\n" {
		t.Errorf("logs %q, %v", buf.String(), err)
	}
	if err := f.Logs(ctx, inst("zz"), runtime.LogOptions{}, &buf); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs of unknown: %v", err)
	}
	if err := f.Plant("orphan", "orphan"); err != nil {
		t.Fatal(err)
	}

	// A new fake on the same dir adopts: a running, b exited, c unknown;
	// the orphan is removed.
	g, err := New(workload.KindPod, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	sts, err := g.Recover(ctx, []runtime.Instance{inst("a"), inst("b"), inst("c")})
	if err != nil {
		t.Fatal(err)
	}
	phases := map[string]runtime.Phase{}
	for _, s := range sts {
		phases[s.InstanceID] = s.Phase
	}
	if phases["a"] != runtime.PhaseRunning || phases["b"] != runtime.PhaseExited || phases["c"] != runtime.PhaseFailed {
		t.Errorf("recover = %+v", sts)
	}
	if !slices.Equal(g.Removed(), []string{"orphan"}) || !slices.Equal(g.Running(), []string{"a"}) {
		t.Errorf("removed %v, running %v", g.Removed(), g.Running())
	}
	if err := g.Stop(ctx, inst("a")); err != nil || len(g.Running()) != 0 || g.Stops() != 1 {
		t.Errorf("stop: %v, running %v", err, g.Running())
	}
	if err := g.Stop(ctx, inst("a")); err != nil {
		t.Errorf("stop not idempotent: %v", err)
	}
}
