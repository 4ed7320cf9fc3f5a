package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/workload"
)

func TestCreateThenDestroy(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("i1", podDef("web", "Always"))
	n.wantNames("i1", "CREATING", "RUNNING")
	run := n.last("i1")
	if !strings.HasPrefix(run.GetIp(), "10.99.") || run.GetWorkloadId() != "wl-i1" || len(run.GetPorts()) != 1 ||
		run.GetPorts()[0].GetPort() != 8080 || run.GetTimingsMs()["start"] != 1 {
		t.Errorf("running status = %v", run)
	}
	fi, err := os.Stat(n.dir + "/ledger.json")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v %v", fi, err)
	}
	e, ok := n.led.Get("i1")
	if !ok || e.Name != "name-i1" || e.WorkloadID != "wl-i1" || e.Kind != workload.KindPod || e.Last.IP != run.GetIp() ||
		!e.CreatedAt.Equal(n.clock.Now()) {
		t.Fatalf("ledger entry = %+v", e)
	}
	n.wantDisk(map[string]workload.Status{"i1": workload.StatusRunning})
	if r := n.fake.Running(); !slices.Equal(r, []string{"i1"}) {
		t.Fatalf("fake runs %v", r)
	}

	// A duplicate CREATE re-reports, it does not start again.
	n.create("i1", podDef("web", "Always"))
	n.wantNames("i1", "CREATING", "RUNNING", "RUNNING")
	if n.fake.Starts() != 1 {
		t.Errorf("starts = %d, want 1", n.fake.Starts())
	}

	n.destroy("i1")
	n.wantNames("i1", "CREATING", "RUNNING", "RUNNING", "DESTROYING", "TERMINATED(Destroyed)")
	if n.fake.Stops() != 1 || len(n.fake.Running()) != 0 {
		t.Errorf("stops %d, running %v", n.fake.Stops(), n.fake.Running())
	}
	if got := n.fake.Forgotten(); !slices.Equal(got, []string{"i1"}) {
		t.Errorf("forgotten %v after destroy, want [i1]", got)
	}
	n.wantDisk(map[string]workload.Status{})
}

func TestDestroyUnknownInstance(t *testing.T) {
	n := newNode(t, "", options{})
	n.destroy("ghost")
	n.wantNames("ghost", "TERMINATED(Destroyed)")
	if m := n.last("ghost"); m.GetMessage() != "not on this node" || m.GetWorkloadId() != "wl-ghost" {
		t.Errorf("status = %v", m)
	}
	if n.fake.Stops() != 0 {
		t.Errorf("stop called for an unknown instance")
	}
	// Its mark is gone: a later CREATE starts it.
	n.create("ghost", podDef("web", "Always"))
	n.wantNames("ghost", "TERMINATED(Destroyed)", "CREATING", "RUNNING")
}

func TestCreateRejected(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("f1", functionDef)
	n.create("bad", `{"kind":"Pod"`)
	n.wantNames("f1", "FAILED(NoRuntime)")
	if m := n.last("f1"); m.GetMessage() != `this node has no runtime for kind "function"` {
		t.Errorf("status = %v", m)
	}
	n.wantNames("bad", "FAILED(InvalidDefinition)")
	if n.last("bad").GetMessage() == "" {
		t.Error("no message for an invalid definition")
	}
	if n.fake.Starts() != 0 || n.led.Len() != 0 {
		t.Errorf("rejected orders reached the runtime or the ledger")
	}
}

func TestInvalidOrdersRejected(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("../../etc", podDef("web", "Always"))
	n.wantNames("../../etc", "FAILED(InvalidInstanceID)")
	n.destroy("a/b")
	n.wantNames("a/b", "TERMINATED(Destroyed)")
	n.sup.Create("", "w", "", []byte(podDef("web", "Always"))) // nothing to report it for
	n.sup.Create("n1", "w", "Not A Label", []byte(podDef("web", "Always")))
	n.settle()
	n.wantNames("n1", "FAILED(InvalidDefinition)")
	if m := n.last("n1"); !strings.Contains(m.GetMessage(), "instance_name") {
		t.Errorf("status = %v", m)
	}
	n.collect()
	if len(n.sent) != 3 {
		t.Errorf("statuses %v, want one per named order", schedlinktest.Names(n.sent))
	}
	if n.fake.Starts() != 0 || n.fake.Stops() != 0 || n.led.Len() != 0 {
		t.Errorf("invalid orders reached the runtime or the ledger")
	}
}

type reasonErr struct{}

func (reasonErr) Error() string  { return "pulling alpine:3: 404" }
func (reasonErr) Reason() string { return api.ReasonImagePullFailed }

func TestStartFailure(t *testing.T) {
	n := newNode(t, "", options{})
	for _, tc := range []struct {
		id, reason string
		err        error
	}{
		{"s1", api.ReasonStartFailed, errors.New("boom")},
		{"s2", api.ReasonImagePullFailed, fmt.Errorf("creating: %w", reasonErr{})},
		{"s3", api.ReasonStartTimeout, fmt.Errorf("pulling: %w", context.DeadlineExceeded)},
	} {
		stops := n.fake.Stops()
		n.fake.FailNext(tc.err)
		n.create(tc.id, podDef("web", "Always"))
		n.wantNames(tc.id, "CREATING", "FAILED("+tc.reason+")")
		if m := n.last(tc.id); !strings.Contains(m.GetMessage(), tc.err.Error()) {
			t.Errorf("%s: status = %v", tc.id, m)
		}
		if got := n.fake.Stops(); got != stops+1 {
			t.Errorf("%s: rollback stops = %d, want %d", tc.id, got, stops+1)
		}
	}
	n.wantDisk(map[string]workload.Status{"s1": workload.StatusFailed, "s2": workload.StatusFailed, "s3": workload.StatusFailed})
	for _, id := range []string{"s1", "s2", "s3"} {
		n.destroy(id)
		if m := n.last(id); m.GetReason() != api.ReasonDestroyed {
			t.Errorf("%s after destroy: %v", id, m)
		}
	}
	n.wantDisk(map[string]workload.Status{})
}

// An instance the node cannot record is not started.
func TestCreateNotRecorded(t *testing.T) {
	n := newNode(t, "", options{})
	if err := os.RemoveAll(n.dir); err != nil { // the ledger cannot be written
		t.Fatal(err)
	}
	n.create("l1", podDef("web", "Always"))
	n.wantNames("l1", "CREATING", "FAILED(LedgerError)")
	if n.fake.Starts() != 0 || n.led.Len() != 0 {
		t.Errorf("starts %d, ledger %d entries: an unrecorded instance went on", n.fake.Starts(), n.led.Len())
	}
}

func TestProgressForwarded(t *testing.T) {
	n := newNode(t, "", options{})
	n.fake.SetProgress("pulling alpine:3 (1/2 layers)")
	n.create("p1", podDef("web", "Always"))
	got := n.statusesOf("p1")
	if len(got) != 3 || got[1].GetStatus().String() != "CREATING" || got[1].GetMessage() != "pulling alpine:3 (1/2 layers)" {
		t.Errorf("statuses = %v", got)
	}
	if e, _ := n.led.Get("p1"); e.Last.Message != "" {
		t.Errorf("progress saved in the ledger: %+v", e.Last)
	}
}

// A runtime that sees an instance's address change (a pod network
// restored) reports it; the ledger follows.
func TestNewAddressReported(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("a1", podDef("web", "Always"))
	n.sup.Report(runtime.Status{InstanceID: "a1", Phase: runtime.PhaseRunning, IP: "10.99.9.9"})
	n.sup.Report(runtime.Status{InstanceID: "a1", Phase: runtime.PhaseRunning}) // no address: nothing
	n.settle()
	if e, _ := n.led.Get("a1"); e.Last.IP != "10.99.9.9" {
		t.Errorf("ledger address %q", e.Last.IP)
	}
	if m := n.last("a1"); m.GetIp() != "10.99.9.9" || len(n.statusesOf("a1")) != 3 {
		t.Errorf("statuses %v, last %v", n.names("a1"), m)
	}
}

func TestDestroyCancelsStart(t *testing.T) {
	n := newNode(t, "", options{})
	entered := make(chan struct{})
	n.fake.SetStartHook(func(ctx context.Context, inst runtime.Instance) error {
		close(entered)
		<-ctx.Done() // a pull that never ends
		return ctx.Err()
	})
	n.sup.Create("k1", "wl-k1", "", []byte(podDef("web", "Always")))
	<-entered
	n.destroy("k1")
	n.wantNames("k1", "CREATING", "DESTROYING", "TERMINATED(Destroyed)")
	n.wantDisk(map[string]workload.Status{})
	if len(n.fake.Running()) != 0 {
		t.Errorf("running %v", n.fake.Running())
	}
}

func TestDestroyRetriesFailedStop(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("k2", podDef("web", "Always"))
	n.fake.FailNextStop(errors.New("device busy"))
	n.destroy("k2")
	m := n.last("k2")
	if m.GetStatus().String() != "DESTROYING" || !strings.Contains(m.GetMessage(), "device busy") {
		t.Errorf("status = %v", m)
	}
	if got := n.clock.Pending(); !slices.Equal(got, []time.Duration{base}) {
		t.Fatalf("pending delays %v, want one retry in %v", got, base)
	}
	n.advance(base)
	n.wantNames("k2", "CREATING", "RUNNING", "DESTROYING", "DESTROYING", "TERMINATED(Destroyed)")
	if got := n.fake.Stops(); got != 2 || len(n.fake.Running()) != 0 {
		t.Errorf("stops = %d, running %v", got, n.fake.Running())
	}
}

// Orders of different instances run concurrently; those of one instance
// run in order, and a DESTROY right after a CREATE aborts its start
// whether or not it began.
func TestConcurrentOrders(t *testing.T) {
	n := newNode(t, "", options{})
	inStart := make(chan string, 100)
	release := make(chan struct{})
	n.fake.SetStartHook(func(ctx context.Context, inst runtime.Instance) error {
		if strings.HasPrefix(inst.ID, "x") {
			<-ctx.Done() // a pull that lasts until the DESTROY cancels it
			return ctx.Err()
		}
		inStart <- inst.ID
		<-release
		return nil
	})
	const N = 20
	for i := 0; i < N; i++ {
		n.sup.Create(fmt.Sprintf("c%d", i), "w", "", []byte(podDef("web", "Always")))
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("x%d", i)
		n.sup.Create(id, "w", "", []byte(podDef("web", "Always")))
		n.sup.Destroy(id, "w")
	}
	// Two starts in progress at once, neither returned: concurrent.
	for i := 0; i < 2; i++ {
		select {
		case <-inStart:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d start(s) in progress: starts do not run concurrently", i)
		}
	}
	close(release)
	n.settle()
	for i := 0; i < N; i++ {
		n.wantNames(fmt.Sprintf("c%d", i), "CREATING", "RUNNING")
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("x%d", i)
		n.wantNames(id, "CREATING", "DESTROYING", "TERMINATED(Destroyed)")
	}
	if r := n.fake.Running(); len(r) != N {
		t.Errorf("running %d, want %d", len(r), N)
	}
	if n.led.Len() != N {
		t.Errorf("ledger holds %d, want %d", n.led.Len(), N)
	}
}

func TestLogs(t *testing.T) {
	n := newNode(t, "", options{})
	n.create("l1", podDef("web", "Always"))
	var b bytes.Buffer
	if err := n.sup.Logs(context.Background(), "l1", runtime.LogOptions{Tail: 1}, &b); err != nil || b.String() != "name-l1 line 3\n" {
		t.Errorf("logs %q, %v", b.String(), err)
	}
	if err := n.sup.Logs(context.Background(), "nope", runtime.LogOptions{}, &b); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs of an unknown instance: %v", err)
	}
	n2 := n.restart(options{noRuntime: true})
	if err := n2.sup.Logs(context.Background(), "l1", runtime.LogOptions{}, &b); err == nil ||
		!strings.Contains(err.Error(), "no runtime") {
		t.Errorf("logs without a runtime: %v", err)
	}
}

// A node whose state does not outlive it stops what it runs on exit; one
// that cannot be stopped stays in the ledger, and StopAll says so.
func TestStopAll(t *testing.T) {
	n := newNode(t, "", options{})
	for _, id := range []string{"e1", "e2", "e3"} {
		n.create(id, podDef("web", "Always"))
	}
	n.fake.FailNextStop(errors.New("device busy"))
	n.close()
	err := n.sup.StopAll()
	if err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Fatalf("StopAll = %v, want the stop error", err)
	}
	if r := n.fake.Running(); len(r) != 1 {
		t.Errorf("running after StopAll: %v, want the one that failed to stop", r)
	}
	n.wantDisk(map[string]workload.Status{n.fake.Running()[0]: workload.StatusRunning})
	if err := n.sup.StopAll(); err != nil {
		t.Fatalf("second StopAll: %v", err)
	}
	if r := n.fake.Running(); len(r) != 0 {
		t.Errorf("running %v", r)
	}
	n.wantDisk(map[string]workload.Status{})
}

// BenchmarkCreateDestroy: b.N instances created (RUNNING) then destroyed
// (TERMINATED), all in flight together, through the supervisor, the
// ledger (fsync per change) and the fake runtime.
func BenchmarkCreateDestroy(b *testing.B) {
	dir := b.TempDir()
	discard := slog.New(slog.DiscardHandler)
	led, err := ledger.Open(dir+"/ledger.json", 0, discard)
	if err != nil {
		b.Fatal(err)
	}
	sup := New(context.Background(), Config{Ledger: led, Logger: discard})
	defer sup.Close()
	fake, err := runtimetest.New(workload.KindPod, dir+"/fake", sup.Report)
	if err != nil {
		b.Fatal(err)
	}
	sup.SetRuntimes([]runtime.Runtime{fake})
	def := []byte(podDef("web", "Always"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sup.Create(fmt.Sprintf("b%d", i), "w", "", def)
	}
	sup.queue.drain()
	if led.Len() != b.N {
		b.Fatalf("%d instances, want %d", led.Len(), b.N)
	}
	for i := 0; i < b.N; i++ {
		sup.Destroy(fmt.Sprintf("b%d", i), "w")
	}
	sup.queue.drain()
	if led.Len() != 0 {
		b.Fatalf("%d instances left", led.Len())
	}
}
