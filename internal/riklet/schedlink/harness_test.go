package schedlink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

const waitFor = schedlinktest.WaitFor

// logsOf waits for the end of log request rid and returns its data, its
// end chunk and the number of data chunks.
func logsOf(t testing.TB, s *schedlinktest.Scheduler, rid string) ([]byte, *commonpb.LogChunk, int) {
	t.Helper()
	var data []byte
	var end *commonpb.LogChunk
	var chunks int
	eventually(t, func() bool {
		data, end, chunks = nil, nil, 0
		for _, c := range s.ChunksOf(rid) {
			if c.GetEof() {
				end = c
				continue
			}
			if len(c.GetData()) > maxLogChunk {
				t.Errorf("chunk of %d bytes", len(c.GetData()))
			}
			chunks++
			data = append(data, c.GetData()...)
		}
		return end != nil
	}, func() string { return "eof of " + rid })
	return data, end, chunks
}

// hasChunk reports whether a chunk of rid (an end chunk if eof) came.
func hasChunk(s *schedlinktest.Scheduler, rid string, eof bool) func() bool {
	return func() bool {
		return slices.ContainsFunc(s.ChunksOf(rid), func(c *commonpb.LogChunk) bool { return c.GetEof() == eof })
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, cond func() bool, msg func() string) {
	t.Helper()
	testutil.Eventually(t, waitFor, cond, msg)
}

// fakeSupervisor records the orders it is given; its instances' logs are
// those of a fake runtime.
type fakeSupervisor struct {
	rt *runtimetest.Fake

	mu     sync.Mutex
	orders []string // "create id workload name" or "destroy id workload"
	defs   map[string]string
}

func newFakeSupervisor(t testing.TB) *fakeSupervisor {
	f, err := runtimetest.New(workload.KindPod, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeSupervisor{rt: f, defs: map[string]string{}}
}

func (f *fakeSupervisor) Create(id, workloadID, name string, def []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, fmt.Sprintf("create %s %s %s", id, workloadID, name))
	f.defs[id] = string(def)
}

func (f *fakeSupervisor) Destroy(id, workloadID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.orders = append(f.orders, fmt.Sprintf("destroy %s %s", id, workloadID))
}

func (f *fakeSupervisor) Logs(ctx context.Context, id string, opts runtime.LogOptions, w io.Writer) error {
	return f.rt.Logs(ctx, runtime.Instance{ID: id}, opts, w)
}

func (f *fakeSupervisor) Kinds() []string { return []string{"pod"} }

func (f *fakeSupervisor) ordersTaken() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.orders...)
}

// run runs a session until the test ends (or stop) and reports what Run
// returned.
type run struct {
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func (r *run) stop(t testing.TB) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Errorf("Run did not return after cancel")
	}
}

// testConfig is a fast, insecure session config for addr.
func testConfig(t testing.TB, addr string) Config {
	return Config{
		Addr: addr, Hostname: "node-1", Labels: map[string]string{"zone": "a"}, StateDir: t.TempDir(),
		HeartbeatInterval: 50 * time.Millisecond, Version: "v-test", Insecure: true,
		ConnMin: 10 * time.Millisecond, ConnMax: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// startLink runs a session with cfg until the test ends.
func startLink(t testing.TB, cfg Config, id *Identity, sup Supervisor, st Statuses) *run {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, done: make(chan error, 1)}
	l := New(cfg, id, sup, st)
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// node is a session under test with its fake supervisor and its ledger.
type node struct {
	sched *schedlinktest.Scheduler
	sup   *fakeSupervisor
	led   *ledger.Ledger
	run   *run
}

// setup starts a scheduler and a session and waits until it registered.
func setup(t *testing.T) *node {
	t.Helper()
	n := &node{sched: schedlinktest.Start(t, "127.0.0.1:0"), sup: newFakeSupervisor(t), led: openLedger(t)}
	n.run = startLink(t, testConfig(t, n.sched.Addr), nil, n.sup, n.led)
	n.sched.WaitReady(t, 1)
	return n
}

func openLedger(t testing.TB) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.json"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
