package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/workload"
)

// A restarted riklet adopts what still runs, reports what ended while it
// was down through the restart policy, and removes what it does not own.
func TestRecoverAdopts(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("a1", podDef("web", "Always"))
	n.create("a2", podDef("job", "Never"))
	n.create("a3", podDef("lost", "Never"))
	n.create("a4", podDef("lost-always", "Always"))
	n.create("a5", podDef("ended", "OnFailure"))
	n.exit("a2", 0)
	n.close()

	// While riklet is down: a3 and a4 vanish, a5 ends, an orphan appears.
	f, err := runtimetest.New(workload.KindPod, n.dir+"/fake", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a3", "a4"} {
		if err := f.Stop(context.Background(), runtime.Instance{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Exit("a5", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Plant("orphan", "orphan"); err != nil {
		t.Fatal(err)
	}

	n2 := newNode(t, n.dir, options{})
	// What the node registers with once recovered.
	snap := n2.led.Snapshot()
	got := map[string]string{}
	for i, m := range snap {
		got[m.GetInstanceId()] = schedlinktest.Names(snap[i : i+1])[0]
	}
	want := map[string]string{"a1": "RUNNING", "a2": "TERMINATED(Completed)", "a3": "FAILED(Lost)",
		"a4": "CREATING(BackOff)", "a5": "TERMINATED(Completed)"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("settled %v, want %v", got, want)
	}
	if got := n2.names("a2"); len(got) != 0 {
		t.Errorf("a2 (ended before) reported again: %v", got)
	}
	if m := n2.last("a1"); m.GetIp() == "" {
		t.Errorf("a1 adopted without its address: %v", m)
	}
	if r := n2.fake.Removed(); !slices.Equal(r, []string{"orphan"}) {
		t.Errorf("removed = %v", r)
	}
	// a4 (Always) is restarted, a1 adopted without a restart.
	n2.advance(base)
	if m := n2.last("a4"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != 1 {
		t.Errorf("a4 = %v", m)
	}
	if r := n2.fake.Running(); !slices.Equal(r, []string{"a1", "a4"}) || n2.fake.Starts() != 1 {
		t.Errorf("running %v, starts %d", r, n2.fake.Starts())
	}
	n2.destroy("a2")
	n2.wantDisk(map[string]workload.Status{"a1": workload.StatusRunning, "a3": workload.StatusFailed,
		"a4": workload.StatusRunning, "a5": workload.StatusTerminated})
}

func TestRecoverRemovesLeftoversWithEmptyLedger(t *testing.T) {
	dir := t.TempDir()
	f, err := runtimetest.New(workload.KindPod, dir+"/fake", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Plant("leftover", "leftover"); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, dir, options{})
	if r := n.fake.Removed(); !slices.Equal(r, []string{"leftover"}) {
		t.Errorf("removed = %v", r)
	}
	if n.led.Len() != 0 {
		t.Errorf("ledger holds %d", n.led.Len())
	}
}

// An entry whose definition no longer parses is still passed to its
// runtime (by id) and ends FAILED when it cannot be restarted.
func TestRecoverBadDefinition(t *testing.T) {
	n := newNode(t, "", options{})
	if err := n.led.Add(ledger.Entry{InstanceID: "bad", Name: "bad", Kind: "pods", Definition: []byte(`{"kind":"Pod"}`),
		Last: ledger.LastStatus{Status: workload.StatusRunning}}); err != nil {
		t.Fatal(err)
	}
	n2 := n.restart(options{})
	n2.wantNames("bad", "FAILED(InvalidDefinition)")
	if m := n2.last("bad"); !strings.Contains(m.GetMessage(), "parsing definition of bad") {
		t.Errorf("status = %v", m)
	}
}

// exitingOnRecover is a runtime whose adopted instances exit while Recover
// still runs, as a crash-looping container may right after the riklet
// adopted it; Recover returns only once the supervisor handled what it
// was given meanwhile.
type exitingOnRecover struct {
	*runtimetest.Fake
	n *node
}

func (r exitingOnRecover) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	sts, err := r.Fake.Recover(ctx, owned)
	for _, st := range sts {
		if st.Phase == runtime.PhaseRunning {
			if err := r.Fake.Exit(st.InstanceID, 1); err != nil {
				return nil, err
			}
		}
	}
	r.n.settle()
	return sts, err
}

// An exit reported while the riklet recovers is applied after the instance
// is adopted, not lost under the RUNNING status of its adoption.
func TestExitDuringRecover(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("r1", podDef("web", "Always"))
	n2 := n.restart(options{wrap: func(n *node, f *runtimetest.Fake) runtime.Runtime { return exitingOnRecover{f, n} }})
	n2.wantNames("r1", "RUNNING", "CREATING(BackOff)")
	n2.advance(base)
	if m := n2.last("r1"); m.GetStatus().String() != "RUNNING" || m.GetRestarts() != 1 {
		t.Errorf("status = %v", m)
	}
	if n2.fake.Starts() != 1 || !slices.Equal(n2.fake.Running(), []string{"r1"}) {
		t.Errorf("starts %d, running %v", n2.fake.Starts(), n2.fake.Running())
	}
}

// blockingRecover is a runtime whose Recover lasts until its context ends,
// then fails, as listing containers does when the riklet is stopped while
// it starts.
type blockingRecover struct {
	*runtimetest.Fake
	entered chan struct{}
}

func (r blockingRecover) Recover(ctx context.Context, owned []runtime.Instance) ([]runtime.Status, error) {
	close(r.entered)
	<-ctx.Done()
	return nil, fmt.Errorf("listing containers: %w", ctx.Err())
}

// A riklet stopped while it recovers does not take its owned instances for
// lost: the ledger keeps them as they were, for the next start to adopt.
func TestStopDuringRecoverKeepsLedger(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("s1", podDef("job", "Never"))
	entered := make(chan struct{})
	n2 := n.restart(options{noRecover: true, wrap: func(_ *node, f *runtimetest.Fake) runtime.Runtime {
		return blockingRecover{f, entered}
	}})
	done := make(chan struct{})
	go func() { defer close(done); n2.sup.Recover(n2.ctx) }()
	<-entered
	n2.close()
	<-done
	n2.wantDisk(map[string]workload.Status{"s1": workload.StatusRunning})
	if got := n2.names("s1"); len(got) != 0 {
		t.Errorf("statuses after an interrupted recovery: %v", got)
	}
	// The next start adopts it.
	n3 := n2.restart(options{})
	n3.wantNames("s1", "RUNNING")
}

// Issue 8 (3): a riklet whose runtime failed to start (its network setup
// killed by the next stop) must neither fail nor drop what it owns: the
// containers still run. A later riklet with its runtime destroys what was
// being destroyed and adopts the rest.
func TestRuntimeMissingKeepsLedger(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("r1", podDef("web", "Always"))
	n.create("d1", podDef("gone", "Always"))
	n.create("j1", podDef("job", "Never"))
	n.exit("j1", 0)
	// Stopped mid-delete: d1 is DESTROYING in the ledger, still running.
	n.led.Update("d1", func(e *ledger.Entry) { e.Last = ledger.LastStatus{Status: workload.StatusDestroying} })

	n2 := n.restart(options{noRuntime: true})
	if k := n2.sup.Kinds(); len(k) != 0 {
		t.Errorf("kinds %v without a runtime", k)
	}
	if m := n2.last("r1"); m.GetStatus().String() != "RUNNING" ||
		m.GetMessage() != `this node has no runtime for kind "pod" now: its state cannot be checked` {
		t.Errorf("r1 = %v", m)
	}
	if got := n2.names("j1"); len(got) != 0 {
		t.Errorf("j1 (ended before) reported again: %v", got)
	}
	if m := n2.last("d1"); m.GetStatus().String() != "DESTROYING" || !strings.Contains(m.GetMessage(), "to stop it") {
		t.Errorf("d1 = %v", m)
	}
	n2.destroy("r1")
	n2.advance(max) // retries, in vain
	for _, id := range []string{"r1", "d1"} {
		for _, m := range n2.statusesOf(id) {
			if m.GetStatus().String() == "TERMINATED" || m.GetStatus().String() == "FAILED" {
				t.Errorf("%s reported %v with no runtime to stop it", id, m)
			}
		}
	}
	n2.wantDisk(map[string]workload.Status{"r1": workload.StatusDestroying, "d1": workload.StatusDestroying,
		"j1": workload.StatusTerminated})

	// With its runtime back, both are destroyed, and only then TERMINATED.
	n3 := n2.restart(options{})
	for _, id := range []string{"r1", "d1"} {
		n3.wantNames(id, "TERMINATED(Destroyed)")
	}
	if r := n3.fake.Running(); len(r) != 0 {
		t.Errorf("still running after destroy: %v", r)
	}
	n3.wantDisk(map[string]workload.Status{"j1": workload.StatusTerminated})
}
