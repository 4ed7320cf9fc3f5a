package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/store"
)

const hb0 = 1767323045000 // 2026-01-02T03:04:05Z

func testNode(name string, hbMs int64) *controllerpb.Node {
	return &controllerpb.Node{
		Name: name, Status: "Ready", Address: "10.0.0.1", Instances: 3, Load1: 0.5,
		Capacity:            &commonpb.Resources{CpuMillis: 4000, MemoryMib: 8192, DiskMib: 100000},
		Usage:               &commonpb.Resources{CpuMillis: 1000, MemoryMib: 2048},
		Allocated:           &commonpb.Resources{CpuMillis: 500, MemoryMib: 256},
		Kinds:               []string{"pod", "function"},
		Labels:              map[string]string{"zone": "a"},
		LastHeartbeatUnixMs: hbMs,
	}
}

// n1 is testNode("n1", hb0) as the API shows it.
var n1 = api.Node{
	Name: "n1", Status: "Ready", Address: "10.0.0.1", Instances: 3, Load1: 0.5,
	Capacity:  api.Resources{CPU: 4000, Memory: 8192, Disk: 100000},
	Usage:     api.Resources{CPU: 1000, Memory: 2048},
	Allocated: api.Allocation{CPU: 500, Memory: 256},
	Kinds:     []string{"pod", "function"}, Labels: map[string]string{"zone": "a"},
	LastHeartbeat: "2026-01-02T03:04:05Z",
}

// stored reports whether the node is in the store.
func (e *env) stored(name string) bool {
	e.t.Helper()
	_, err := e.st.Get(context.Background(), "/node/"+name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		e.t.Fatal(err)
	}
	return err == nil
}

func TestNodesList(t *testing.T) {
	e := newEnvTuned(t, tuning{nodesEvery: 20 * time.Millisecond})
	e.sched.setNodes(testNode("n1", hb0), &controllerpb.Node{Name: "n2", Status: "NotReady"})
	var items []api.Item[api.Node]
	e.must(200, "GET", "/api/v0/nodes.list", nil).decode(t, &items)
	want := []api.Item[api.Node]{{ID: "n1", Name: "n1", Value: n1},
		{ID: "n2", Name: "n2", Value: api.Node{Name: "n2", Status: "NotReady", Kinds: []string{}, Labels: map[string]string{}}}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}

	// The scheduler down and no node stored: 503.
	e.sched.setNodes()
	eventually(t, "stored nodes deleted", func() bool { return !e.stored("n1") && !e.stored("n2") })
	e.sched.stop()
	r := e.do("GET", "/api/v0/nodes.list", nil)
	if r.code != 503 || r.errorText(t) != "scheduler unreachable" {
		t.Errorf("scheduler down, no stored nodes: %d %s", r.code, r.body)
	}
}

func TestNodesListServesStoredWhenSchedulerDown(t *testing.T) {
	e := newEnvTuned(t, tuning{nodesEvery: 20 * time.Millisecond})
	n2 := testNode("n2", 0)
	n2.Status, n2.Labels, n2.Kinds = "NotReady", nil, nil
	e.sched.setNodes(testNode("n1", hb0), n2)

	r := e.must(200, "GET", "/api/v0/nodes.list", nil)
	if strings.Contains(string(r.body), "stale") || !strings.Contains(string(r.body), `"status":"Ready"`) {
		t.Errorf("live list: %s", r.body)
	}
	eventually(t, "nodes stored", func() bool { return e.stored("n1") && e.stored("n2") })

	e.sched.stop()
	r = e.must(200, "GET", "/api/v0/nodes.list", nil)
	var items []api.Item[api.Node]
	r.decode(t, &items)
	want1 := n1
	want1.Status, want1.Stale = api.NodeStatusUnknown, true
	want2 := api.Node{Name: "n2", Status: api.NodeStatusUnknown, Stale: true, Address: "10.0.0.1", Instances: 3, Load1: 0.5,
		Capacity: n1.Capacity, Usage: n1.Usage, Allocated: n1.Allocated, Kinds: []string{}, Labels: map[string]string{}}
	want := []api.Item[api.Node]{{ID: "n1", Name: "n1", Value: want1}, {ID: "n2", Name: "n2", Value: want2}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("stale list (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(r.body), `"stale":true`) || !strings.Contains(string(r.body), `"labels":{}`) {
		t.Errorf("stale list body: %s", r.body)
	}

	// Syncs failing while the scheduler is down delete nothing.
	time.Sleep(100 * time.Millisecond) // several sync periods
	if !e.stored("n1") {
		t.Fatal("n1 deleted while the scheduler is down")
	}
}
