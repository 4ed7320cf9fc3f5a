package riklet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/riklet/ledger"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/riklet/schedlink/schedlinktest"
	"github.com/rik-org/rik/internal/workload"
)

// node is a riklet under test.
type node struct {
	cfg     Config
	pods    *runtimetest.Factory
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// testConfig is a riklet config with fast reconnects and a fake pod
// runtime.
func testConfig(t testing.TB, addr, stateDir string) (Config, *runtimetest.Factory) {
	pods := &runtimetest.Factory{Kind: workload.KindPod, Dir: filepath.Join(stateDir, "fake")}
	return Config{
		MasterAddr:        addr,
		Hostname:          "node-1",
		StateDir:          stateDir,
		Runtimes:          []RuntimeFactory{pods.New},
		Labels:            map[string]string{"zone": "a"},
		HeartbeatInterval: 50 * time.Millisecond,
		Insecure:          true,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		connMin:           10 * time.Millisecond,
		connMax:           50 * time.Millisecond,
	}, pods
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startNode runs a riklet until the test ends (or stop).
func startNode(t testing.TB, cfg Config, pods *runtimetest.Factory) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cfg: cfg, pods: pods, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n
}

// stop stops the riklet and returns what Run returned.
func (n *node) stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true
	n.cancel()
	select {
	case err := <-n.done:
		return err
	case <-time.After(schedlinktest.WaitFor):
		return errors.New("Run did not return after cancel")
	}
}

// ledgerOf is the ledger on disk in dir: status per instance.
func ledgerOf(t *testing.T, dir string) map[string]workload.Status {
	t.Helper()
	l, err := ledger.Open(filepath.Join(dir, "ledger.json"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]workload.Status{}
	for _, e := range l.List() {
		out[e.InstanceID] = e.Last.Status
	}
	return out
}

func podDef(name string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":%q,
		"spec":{"containers":[{"name":"c","image":"alpine:3","ports":[{"port":8080,"targetPort":80}]}]}}`, name)
}

var is = schedlinktest.Is

// Run wires the node: the runtimes that start (one that fails is left
// out), the supervisor behind the scheduler's orders, the ledger behind
// the statuses; on exit the runtimes are closed and what runs is left for
// the next riklet to adopt.
func TestRunWiresTheNode(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, "http://"+sched.Addr+"/", dir)
	broken := &runtimetest.Factory{Kind: workload.KindFunction, Err: errors.New("no /dev/kvm")}
	cfg.Runtimes = append(cfg.Runtimes, broken.New)
	n := startNode(t, cfg, pods)
	reg := sched.WaitReady(t, 1)
	if got := reg.GetKinds(); !slices.Equal(got, []string{"pod"}) || reg.GetHostname() != "node-1" || reg.GetLabels()["zone"] != "a" {
		t.Errorf("registration %v, want kinds [pod] (the function runtime failed)", reg)
	}

	sched.Create("i1", podDef("web"))
	sched.WaitStatus(t, "i1", is(commonpb.ResourceStatus_RUNNING))
	if got := schedlinktest.Names(sched.StatusesOf("i1")); !slices.Equal(got, []string{"CREATING", "RUNNING"}) {
		t.Errorf("statuses %v", got)
	}
	sched.Destroy("i1")
	sched.WaitStatus(t, "i1", is(commonpb.ResourceStatus_TERMINATED))
	sched.Create("k1", podDef("kept"))
	sched.WaitStatus(t, "k1", is(commonpb.ResourceStatus_RUNNING))
	f := pods.Last()
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !f.Closed() {
		t.Error("runtime not closed when the riklet stopped")
	}
	if r := f.Running(); !slices.Equal(r, []string{"k1"}) {
		t.Errorf("running after exit = %v, want k1 kept", r)
	}
	if got := ledgerOf(t, dir); fmt.Sprint(got) != "map[k1:RUNNING]" {
		t.Errorf("ledger after exit = %v", got)
	}
}

// A riklet whose state does not outlive it (rik dev in a temporary
// directory) stops what it runs on exit: nothing would adopt it later.
// One that cannot be stopped is kept in the ledger, and Run says so.
func TestRunStopOnExit(t *testing.T) {
	sched := schedlinktest.Start(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched.Addr, dir)
	cfg.StopOnExit = true
	n := startNode(t, cfg, pods)
	sched.WaitReady(t, 1)
	for _, id := range []string{"e1", "e2"} {
		sched.Create(id, podDef("web"))
		sched.WaitStatus(t, id, is(commonpb.ResourceStatus_RUNNING))
	}
	f := pods.Last()
	f.FailNextStop(errors.New("device busy"))
	if err := n.stop(); err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Errorf("Run = %v, want the stop error", err)
	}
	if r := f.Running(); len(r) != 1 {
		t.Errorf("running after exit: %v, want the one that failed to stop", r)
	}
	if got := ledgerOf(t, dir); len(got) != 1 {
		t.Errorf("ledger after a failed stop = %v, want it kept", got)
	}

	n = startNode(t, cfg, pods)
	sched.WaitReady(t, 2)
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r := pods.Last().Running(); len(r) != 0 {
		t.Errorf("still running after exit: %v", r)
	}
	if got := ledgerOf(t, dir); len(got) != 0 {
		t.Errorf("ledger after exit = %v, want empty", got)
	}
}

// Issue 8 (3): a riklet stopped while its runtime starts (its network
// setup killed by the stop) recovers nothing: without the runtime, it
// would take what still runs for lost.
func TestRunStoppedWhileRuntimesStart(t *testing.T) {
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.json"), 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for id, st := range map[string]workload.Status{"r1": workload.StatusRunning, "d1": workload.StatusDestroying} {
		if err := l.Add(ledger.Entry{InstanceID: id, Kind: workload.KindPod, Definition: []byte(podDef(id)), Last: ledger.LastStatus{Status: st}}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := os.ReadFile(filepath.Join(dir, "ledger.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := testConfig(t, "127.0.0.1:1", dir)
	entered := make(chan struct{})
	cfg.Runtimes = []RuntimeFactory{func(ctx context.Context, _ runtime.Reporter) (runtime.Runtime, error) {
		close(entered)
		<-ctx.Done()
		return nil, errors.New("starting sdn: signal: killed")
	}}
	n := startNode(t, cfg, nil)
	<-entered
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if after, err := os.ReadFile(filepath.Join(dir, "ledger.json")); err != nil || string(after) != string(before) {
		t.Errorf("ledger = %s (%v), want it untouched: %s", after, err, before)
	}
}

// A runtime that fails to start is tried again (a transient failure must
// not leave the node without it), a bounded number of times.
func TestRuntimeConstructionRetried(t *testing.T) {
	cfg, pods := testConfig(t, "127.0.0.1:1", t.TempDir())
	var calls, always atomic.Int32
	flaky := func(ctx context.Context, report runtime.Reporter) (runtime.Runtime, error) {
		if calls.Add(1) < 3 {
			return nil, errors.New("iptables: resource temporarily unavailable")
		}
		return pods.New(ctx, report)
	}
	failing := func(context.Context, runtime.Reporter) (runtime.Runtime, error) {
		always.Add(1)
		return nil, errors.New("no /dev/kvm")
	}
	cfg.Runtimes = []RuntimeFactory{flaky, nil, failing}
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	rts := buildRuntimes(context.Background(), cfg, func(runtime.Status) {})
	if len(rts) != 1 || rts[0] != runtime.Runtime(pods.Last()) {
		t.Errorf("runtimes %v, want the pod runtime built on its third try", rts)
	}
	if calls.Load() != 3 || always.Load() != runtimeAttempts {
		t.Errorf("tries: %d and %d, want 3 and %d", calls.Load(), always.Load(), runtimeAttempts)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad address", func(c *Config) { c.MasterAddr = "http://h:1/path" }, "master address"},
		{"token without hash", func(c *Config) { c.Insecure, c.JoinToken = false, "abcdef.0123456789abcdef" }, "--ca-cert-hash"},
		{"malformed hash", func(c *Config) { c.Insecure, c.JoinToken, c.CACertHash = false, "a.b", "sha256:xyz" }, "--ca-cert-hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t, "127.0.0.1:1", t.TempDir())
			tc.edit(&cfg)
			if err := Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.StateDir, "ledger.json")); !os.IsNotExist(err) {
				t.Errorf("refused riklet wrote its ledger: %v", err)
			}
		})
	}
}
