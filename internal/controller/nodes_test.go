package controller

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

func TestNodeNeedsWrite(t *testing.T) {
	base := NodeView{Name: "n1", Status: "Ready", Capacity: Resources{CPU: 4000, Memory: 8192},
		Usage: Resources{CPU: 100}, Allocated: Allocation{CPU: 500}, Kinds: []string{"pod"},
		Labels: map[string]string{"zone": "a"}, Address: "10.0.0.1", Instances: 2, Load1: 0.1,
		LastHeartbeat: "2026-01-02T03:04:05Z"}
	with := func(f func(*NodeView)) NodeView { v := base; f(&v); return v }
	tests := []struct {
		name   string
		stored *NodeView
		cur    NodeView
		want   bool
	}{
		{"none stored", nil, base, true},
		{"same", &base, base, false},
		{"heartbeat, usage and load only", &base, with(func(v *NodeView) {
			v.LastHeartbeat, v.Usage, v.Load1 = "2026-01-02T03:04:34Z", Resources{CPU: 900, Memory: 10}, 3
		}), false},
		{"heartbeat 30 s later", &base, with(func(v *NodeView) { v.LastHeartbeat = "2026-01-02T03:04:35Z" }), true},
		{"heartbeat went back", &base, with(func(v *NodeView) { v.LastHeartbeat = "2026-01-02T03:04:00Z" }), true},
		{"first heartbeat", ptr(with(func(v *NodeView) { v.LastHeartbeat = "" })), base, true},
		{"status", &base, with(func(v *NodeView) { v.Status = "NotReady" }), true},
		{"capacity", &base, with(func(v *NodeView) { v.Capacity.Disk = 1 }), true},
		{"allocated", &base, with(func(v *NodeView) { v.Allocated.Memory = 64 }), true},
		{"instances", &base, with(func(v *NodeView) { v.Instances = 3 }), true},
		{"address", &base, with(func(v *NodeView) { v.Address = "10.0.0.2" }), true},
		{"kinds", &base, with(func(v *NodeView) { v.Kinds = []string{"pod", "function"} }), true},
		{"labels", &base, with(func(v *NodeView) { v.Labels = map[string]string{"zone": "b"} }), true},
		{"nil and empty alike", ptr(with(func(v *NodeView) { v.Kinds, v.Labels = nil, nil })),
			with(func(v *NodeView) { v.Kinds, v.Labels = []string{}, map[string]string{} }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nodeNeedsWrite(tt.stored, tt.cur, 30*time.Second); got != tt.want {
				t.Errorf("nodeNeedsWrite = %v, want %v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidNodeName(t *testing.T) {
	for name, want := range map[string]bool{
		"n1": true, "node-1.example.com": true, "": false, "a/b": false, " n1": false, "n\x00": false,
		strings.Repeat("a", 254): false,
	} {
		if got := validNodeName(name); got != want {
			t.Errorf("validNodeName(%q) = %v, want %v", name, got, want)
		}
	}
}

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

// storedNode reads /node/{name}; ok false when it is not there.
func storedNode(t testing.TB, st store.Store, name string) (nodeRecord, store.KV, bool) {
	t.Helper()
	kv, err := st.Get(context.Background(), nodeKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return nodeRecord{}, kv, false
	}
	if err != nil {
		t.Fatalf("reading node %s: %v", name, err)
	}
	var rec nodeRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatalf("decoding node %s: %v", kv.Value, err)
	}
	return rec, kv, true
}

// waitLists waits until the fake scheduler answered n more ListNodes calls:
// the syncs before the last have completed.
func waitLists(t testing.TB, f *fakeScheduler, n int) {
	t.Helper()
	start := f.listCount()
	eventually(t, "node syncs", func() bool { return f.listCount() >= start+n })
}

func fastNodes(s *Server) { s.nodesEvery = 20 * time.Millisecond }

func TestNodesStoredRefreshedAndDeleted(t *testing.T) {
	e := newEnvTuned(t, fastNodes)
	n1, n2 := testNode("n1", hb0), testNode("n2", hb0)
	e.sched.setNodes(n1, n2)
	eventually(t, "nodes stored", func() bool {
		_, _, ok1 := storedNode(t, e.st, "n1")
		_, _, ok2 := storedNode(t, e.st, "n2")
		return ok1 && ok2
	})
	rec, kv, _ := storedNode(t, e.st, "n1")
	if diff := cmp.Diff(nodeRecord{ID: "n1", Name: "n1", Value: nodeView(n1)}, rec); diff != "" {
		t.Errorf("stored n1 (-want +got):\n%s", diff)
	}
	if strings.Contains(string(kv.Value), "stale") {
		t.Errorf("stored record has a stale field: %s", kv.Value)
	}

	// Heartbeat, usage and load only: not rewritten.
	hbOnly := testNode("n1", hb0+25_000)
	hbOnly.Usage, hbOnly.Load1 = &commonpb.Resources{CpuMillis: 3000, MemoryMib: 4000}, 2.5
	e.sched.setNodes(hbOnly, n2)
	waitLists(t, e.sched, 5)
	if _, kv2, _ := storedNode(t, e.st, "n1"); kv2.Revision != kv.Revision {
		t.Fatalf("n1 rewritten on a heartbeat-only change: %s", kv2.Value)
	}

	// Anything else: rewritten at once.
	more := testNode("n1", hb0+25_000)
	more.Instances = 4
	e.sched.setNodes(more, n2)
	eventually(t, "n1 rewritten with 4 instances", func() bool {
		rec, _, ok := storedNode(t, e.st, "n1")
		return ok && rec.Value.Instances == 4 && rec.Value.LastHeartbeat == "2026-01-02T03:04:30Z"
	})

	// Heartbeats 30 s after the stored one: rewritten, then not for 24 s.
	e.sched.setNodes(testNode("n1", hb0+55_000), n2) // instances 3 again
	eventually(t, "n1 refreshed", func() bool {
		rec, _, _ := storedNode(t, e.st, "n1")
		return rec.Value.LastHeartbeat == "2026-01-02T03:05:00Z" && rec.Value.Instances == 3
	})
	_, kv, _ = storedNode(t, e.st, "n1")
	e.sched.setNodes(testNode("n1", hb0+84_000), n2)
	waitLists(t, e.sched, 5)
	if _, kv2, _ := storedNode(t, e.st, "n1"); kv2.Revision != kv.Revision {
		t.Fatalf("n1 rewritten 24 s after the stored heartbeat: %s", kv2.Value)
	}

	// A node the scheduler no longer lists is deleted.
	e.sched.setNodes(testNode("n1", hb0+84_000))
	eventually(t, "n2 deleted", func() bool { _, _, ok := storedNode(t, e.st, "n2"); return !ok })
	if _, _, ok := storedNode(t, e.st, "n1"); !ok {
		t.Fatal("n1 deleted with n2")
	}
}

func TestNodesListServesStoredWhenSchedulerDown(t *testing.T) {
	e := newEnvTuned(t, fastNodes)
	n2 := testNode("n2", 0)
	n2.Status, n2.Labels, n2.Kinds = "NotReady", nil, nil
	e.sched.setNodes(testNode("n1", hb0), n2)

	r := e.must(200, "GET", "/api/v0/nodes.list", nil)
	if strings.Contains(string(r.body), "stale") || !strings.Contains(string(r.body), `"status":"Ready"`) {
		t.Errorf("live list: %s", r.body)
	}
	eventually(t, "nodes stored", func() bool {
		_, _, ok1 := storedNode(t, e.st, "n1")
		_, _, ok2 := storedNode(t, e.st, "n2")
		return ok1 && ok2
	})

	e.sched.stop()
	r = e.must(200, "GET", "/api/v0/nodes.list", nil)
	var items []nodeItem
	r.decode(t, &items)
	want1 := nodeView(testNode("n1", hb0))
	want1.Status, want1.Stale = NodeStatusUnknown, true
	want2 := nodeView(n2)
	want2.Status, want2.Stale = NodeStatusUnknown, true
	want := []nodeItem{{ID: "n1", Name: "n1", Value: want1}, {ID: "n2", Name: "n2", Value: want2}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("stale list (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(r.body), `"stale":true`) || !strings.Contains(string(r.body), `"labels":{}`) {
		t.Errorf("stale list body: %s", r.body)
	}

	// Syncs failing while the scheduler is down delete nothing.
	time.Sleep(100 * time.Millisecond) // several sync periods
	if _, _, ok := storedNode(t, e.st, "n1"); !ok {
		t.Fatal("n1 deleted while the scheduler is down")
	}
}

// nodeController is a controller on st syncing the nodes of a scheduler
// fast, with a fast lease; stop ends it (also at cleanup).
type nodeController struct {
	s    *Server
	stop func()
}

func startNodeController(t *testing.T, st store.Store, schedAddr string) *nodeController {
	t.Helper()
	s, err := NewServer(Config{Store: st, SchedulerAddr: schedAddr, Logger: testLogger(t), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	fastNodes(s)
	s.lease.renew, s.lease.ttl = 20*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	s.startBackground(ctx, &wg)
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait(); s.link.close() }) }
	t.Cleanup(stop)
	return &nodeController{s: s, stop: stop}
}

// countingStore counts writes and deletes under /node/.
type countingStore struct {
	store.Store
	writes atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	if strings.HasPrefix(key, nodePrefix) {
		c.writes.Add(1)
	}
	return c.Store.Put(ctx, key, value, rev)
}

func (c *countingStore) Delete(ctx context.Context, key string, rev int64) error {
	if strings.HasPrefix(key, nodePrefix) {
		c.writes.Add(1)
	}
	return c.Store.Delete(ctx, key, rev)
}

// Two controllers on one store, each with its own scheduler listing other
// nodes: only the lease holder asks and writes; the other takes over when
// it stops.
func TestNodesOnlyLeaseHolderWrites(t *testing.T) {
	st := openShared(t)
	schedA, schedB := startFakeScheduler(t, "127.0.0.1:0"), startFakeScheduler(t, "127.0.0.1:0")
	schedA.setNodes(testNode("n1", hb0))
	schedB.setNodes(testNode("n9", hb0))
	stA, stB := &countingStore{Store: st}, &countingStore{Store: st}

	a := startNodeController(t, stA, schedA.addr)
	eventually(t, "a holds the lease", a.s.lease.held.Load)
	b := startNodeController(t, stB, schedB.addr)
	schedB.waitSubscribed(t)
	eventually(t, "n1 stored by a", func() bool { _, _, ok := storedNode(t, st, "n1"); return ok })
	waitLists(t, schedA, 10) // b would have synced as often
	if b.s.lease.held.Load() || schedB.listCount() != 0 || stB.writes.Load() != 0 {
		t.Fatalf("b: lease %v, asked for nodes %d times, wrote %d", b.s.lease.held.Load(), schedB.listCount(), stB.writes.Load())
	}
	b.s.nodesTick(context.Background())
	if schedB.listCount() != 0 || stB.writes.Load() != 0 {
		t.Fatal("b synced the nodes without the lease")
	}
	if _, _, ok := storedNode(t, st, "n9"); ok {
		t.Fatal("n9 stored")
	}

	a.stop()
	eventually(t, "b takes over", b.s.lease.held.Load)
	eventually(t, "b stores n9 and deletes n1", func() bool {
		_, _, ok1 := storedNode(t, st, "n1")
		_, _, ok9 := storedNode(t, st, "n9")
		return !ok1 && ok9
	})
	if stB.writes.Load() != 2 {
		t.Errorf("b wrote %d times, want 2", stB.writes.Load())
	}
}

// Store writes for 10 nodes heartbeating every 5 s, synced every 5 s, over
// a simulated minute: only the 30 s refresh writes.
func TestNodeWritesPerMinute(t *testing.T) {
	bst, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	st := &countingStore{Store: bst}
	sched := startFakeScheduler(t, "127.0.0.1:0")
	s, err := NewServer(Config{Store: st, SchedulerAddr: sched.addr, Logger: testLogger(t), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.link.close)
	const nodes = 10
	ctx := context.Background()
	step := func(sec int64) int64 {
		t.Helper()
		var list []*controllerpb.Node
		for i := range nodes {
			n := testNode(string(rune('a'+i))+"-node", hb0+sec*1000)
			n.Usage.CpuMillis, n.Load1 = 100+sec*7+int64(i), float64(sec%13)/10 // moves every beat
			list = append(list, n)
		}
		sched.setNodes(list...)
		before := st.writes.Load()
		if _, err := s.syncNodes(ctx); err != nil {
			t.Fatalf("sync at %d s: %v", sec, err)
		}
		return st.writes.Load() - before
	}
	if got := step(0); got != nodes {
		t.Fatalf("first sync wrote %d, want %d", got, nodes)
	}
	var minute int64
	for sec := int64(5); sec <= 60; sec += 5 {
		minute += step(sec)
	}
	t.Logf("%d nodes, heartbeat and sync every 5 s: %d store writes per minute (%d if every sync wrote)", nodes, minute, nodes*12)
	if minute != 2*nodes {
		t.Errorf("writes in a minute = %d, want %d (one refresh per node every 30 s)", minute, 2*nodes)
	}
}
