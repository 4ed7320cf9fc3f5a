package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/probe"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/workload"
)

// Restart delays of the tests (a fake clock: only their values matter).
const (
	base  = 10 * time.Millisecond
	max   = 40 * time.Millisecond
	reset = time.Minute
)

// node is a supervisor under test, as a riklet runs it: a ledger in dir,
// a fake pod runtime keeping its state in dir/fake, a fake clock. Every
// step waits until the supervisor is idle: no sleeps, no polling.
type node struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	led   *ledger.Ledger
	fake  *runtimetest.Fake // nil: no runtime
	probe *fakeProber
	sup   *Supervisor
	ctx   context.Context
	stop  context.CancelFunc

	mu   sync.Mutex
	sent []*commonpb.InstanceMetric // what the ledger queued for the scheduler, in order
}

// options change how a node is started.
type options struct {
	noRuntime bool                                               // the pod runtime failed to start
	wrap      func(n *node, f *runtimetest.Fake) runtime.Runtime // wraps the fake
	noRecover bool                                               // Recover is left to the test
}

// newNode starts a node on dir (a new one if empty) with a new clock.
func newNode(t *testing.T, dir string, o options) *node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	led, err := ledger.Open(filepath.Join(dir, "ledger.json"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, dir: dir, clock: newFakeClock(), led: led, ctx: ctx, stop: cancel, probe: &fakeProber{}}
	n.sup = New(ctx, Config{
		Ledger: led, Clock: n.clock, RestartBase: base, RestartMax: max, RestartReset: reset,
		NewProber: func(probe.Sink) Prober { return n.probe },
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	var rts []runtime.Runtime
	if !o.noRuntime {
		if n.fake, err = runtimetest.New(workload.KindPod, filepath.Join(dir, "fake"), n.sup.Report); err != nil {
			t.Fatal(err)
		}
		var rt runtime.Runtime = n.fake
		if o.wrap != nil {
			rt = o.wrap(n, n.fake)
		}
		rts = append(rts, rt)
	}
	n.sup.SetRuntimes(rts)
	t.Cleanup(n.close)
	if !o.noRecover {
		n.sup.Recover(ctx)
		n.settle()
	}
	return n
}

// close stops the node as a riklet stops: what runs keeps running.
func (n *node) close() {
	n.stop()
	n.sup.Close()
}

// restart stops the node and starts another on its state, as a restarted
// riklet.
func (n *node) restart(o options) *node {
	n.close()
	return newNode(n.t, n.dir, o)
}

// settle waits until the supervisor has nothing queued nor running.
func (n *node) settle() { n.sup.queue.drain() }

func (n *node) create(id, def string) {
	n.sup.Create(id, "wl-"+id, "name-"+id, []byte(def))
	n.settle()
}

func (n *node) destroy(id string) {
	n.sup.Destroy(id, "wl-"+id)
	n.settle()
}

// exit makes the fake report that id exited with code.
func (n *node) exit(id string, code int) {
	n.t.Helper()
	if err := n.fake.Exit(id, code); err != nil {
		n.t.Fatal(err)
	}
	n.settle()
}

// advance moves the clock d forward and waits for what it started.
func (n *node) advance(d time.Duration) {
	n.clock.Advance(d)
	n.settle()
}

// collect moves what the ledger queued into n.sent, as the scheduler
// session sends it.
func (n *node) collect() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		m, ok := n.led.Peek()
		if !ok {
			return
		}
		n.sent = append(n.sent, m)
		n.led.Pop(m)
	}
}

// statusesOf lists the statuses queued for id, in order.
func (n *node) statusesOf(id string) []*commonpb.InstanceMetric {
	n.collect()
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*commonpb.InstanceMetric
	for _, m := range n.sent {
		if m.GetInstanceId() == id {
			out = append(out, m)
		}
	}
	return out
}

// names lists the statuses of id as "STATUS(Reason)".
func (n *node) names(id string) []string { return schedlinktest.Names(n.statusesOf(id)) }

// last is the last status queued for id.
func (n *node) last(id string) *commonpb.InstanceMetric {
	n.t.Helper()
	s := n.statusesOf(id)
	if len(s) == 0 {
		n.t.Fatalf("no status for %s", id)
	}
	return s[len(s)-1]
}

// onDisk is the ledger as a restarted riklet would read it: status per
// instance.
func (n *node) onDisk() map[string]workload.Status {
	n.t.Helper()
	l, err := ledger.Open(filepath.Join(n.dir, "ledger.json"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]workload.Status{}
	for _, e := range l.List() {
		out[e.InstanceID] = e.Last.Status
	}
	return out
}

// wantDisk checks the ledger on disk holds exactly want.
func (n *node) wantDisk(want map[string]workload.Status) {
	n.t.Helper()
	if got := n.onDisk(); fmt.Sprint(got) != fmt.Sprint(want) {
		n.t.Errorf("ledger on disk %v, want %v", got, want)
	}
}

func (n *node) wantNames(id string, want ...string) {
	n.t.Helper()
	if got := n.names(id); !slices.Equal(got, want) {
		n.t.Errorf("statuses of %s = %v, want %v", id, got, want)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func podDef(name, policy string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":%q,"restartPolicy":%q,
		"spec":{"containers":[{"name":"c","image":"alpine:3","ports":[{"port":8080,"targetPort":80}]}]}}`, name, policy)
}

const functionDef = `{"apiVersion":"v1","kind":"Function","name":"fn",
	"spec":{"function":{"execution":{"rootfs":"http://127.0.0.1:1/rootfs.ext4"}}}}`
