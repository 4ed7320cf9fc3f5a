package riklet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	rt "github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/workload"
)

// Issue 8 (3): a riklet stopped mid-delete, whose runtime then fails to
// start (its network setup killed by the next stop), must neither fail nor
// drop what it owns: the containers still run. A later riklet with its
// runtime destroys what was being destroyed and adopts the rest.
func TestRuntimeFailingToStartKeepsLedger(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	dir := t.TempDir()
	cfg, pods := testConfig(t, sched, dir)
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	sched.create("r1", podDef("web", "Always"))
	sched.create("d1", podDef("gone", "Always"))
	for _, id := range []string{"r1", "d1"} {
		sched.waitStatus(t, id, is(commonpb.ResourceStatus_RUNNING))
	}
	n.stop(t)
	// Stopped mid-delete: d1 is DESTROYING in the ledger, still running.
	l, err := OpenLedger(filepath.Join(dir, "ledger.json"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := l.Get("d1")
	e.Last = LastStatus{Status: workload.StatusDestroying}
	if err := l.Put(e); err != nil {
		t.Fatal(err)
	}

	// Stopped again while its runtime starts: nothing is recovered.
	cfg2, _ := testConfig(t, sched, dir)
	entered := make(chan struct{})
	cfg2.Runtimes = []RuntimeFactory{func(ctx context.Context, _ rt.Reporter) (rt.Runtime, error) {
		close(entered)
		<-ctx.Done()
		return nil, errors.New("starting sdn: signal: killed")
	}}
	n2 := startNode(t, cfg2, nil)
	<-entered
	n2.stop(t)
	assertLedger(t, dir, map[string]workload.Status{"r1": workload.StatusRunning, "d1": workload.StatusDestroying})

	// Its runtime fails for good: the entries stay as they are.
	cfg3, _ := testConfig(t, sched, dir)
	cfg3.Runtimes = []RuntimeFactory{func(context.Context, rt.Reporter) (rt.Runtime, error) {
		return nil, errors.New("starting sdn: signal: killed")
	}}
	n3 := startNode(t, cfg3, nil)
	reg := waitReady(t, sched, 2)
	for _, m := range reg.GetInstances() {
		if m.GetStatus() == commonpb.ResourceStatus_FAILED || m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Errorf("registered without a runtime: %v", m)
		}
	}
	sched.destroy("r1")
	sched.waitStatus(t, "r1", is(commonpb.ResourceStatus_DESTROYING))
	n3.stop(t)
	for _, m := range sched.statusesOf("r1") {
		if m.GetStatus() == commonpb.ResourceStatus_TERMINATED {
			t.Errorf("r1 reported TERMINATED with no runtime to stop it: %v", m)
		}
	}
	assertLedger(t, dir, map[string]workload.Status{"r1": workload.StatusDestroying, "d1": workload.StatusDestroying})
	if r := pods.Last().Running(); !slices.Equal(r, []string{"d1", "r1"}) {
		t.Fatalf("fake runtime runs %v, want d1 r1 (nothing stopped them)", r)
	}

	// With its runtime back, both are destroyed, and only then TERMINATED.
	cfg4, pods4 := testConfig(t, sched, dir)
	n4 := startNode(t, cfg4, pods4)
	for _, id := range []string{"r1", "d1"} {
		m := sched.waitStatus(t, id, is(commonpb.ResourceStatus_TERMINATED))
		if m.GetReason() != api.ReasonDestroyed {
			t.Errorf("%s TERMINATED with reason %q, want %q", id, m.GetReason(), api.ReasonDestroyed)
		}
	}
	if r := n4.fake(t).Running(); len(r) != 0 {
		t.Errorf("still running after destroy: %v", r)
	}
	assertLedger(t, dir, map[string]workload.Status{})
}

// assertLedger checks the ledger on disk holds exactly want.
func assertLedger(t *testing.T, dir string, want map[string]workload.Status) {
	t.Helper()
	var got map[string]workload.Status
	eventually(t, func() bool {
		got = map[string]workload.Status{}
		for _, e := range readLedger(t, dir).Instances {
			got[e.InstanceID] = e.Last.Status
		}
		if len(got) != len(want) {
			return false
		}
		for id, st := range want {
			if got[id] != st {
				return false
			}
		}
		return true
	}, func() string { return "ledger " + fmtStatuses(got) })
}

func fmtStatuses(m map[string]workload.Status) string {
	var s []string
	for id, st := range m {
		s = append(s, id+"="+string(st))
	}
	slices.Sort(s)
	return "[" + strings.Join(s, " ") + "]"
}

// Issue 8 (4): a riklet configured with a heartbeat as long as the
// scheduler's node timeout is declared lost by any jitter. It uses the
// interval the scheduler's registration header allows instead.
func TestHeartbeatFromScheduler(t *testing.T) {
	sched := startScheduler(t, "127.0.0.1:0")
	sched.mu.Lock()
	sched.heartbeatHeader = "20ms"
	sched.mu.Unlock()
	cfg, pods := testConfig(t, sched, t.TempDir())
	cfg.HeartbeatInterval = time.Hour
	startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	// One heartbeat is sent when the status stream opens; more come only
	// at the allowed interval (an hour otherwise).
	eventually(t, func() bool { return sched.heartbeatCount() >= 3 }, func() string {
		return fmt.Sprintf("%d heartbeats with a 20ms interval allowed", sched.heartbeatCount())
	})
}
