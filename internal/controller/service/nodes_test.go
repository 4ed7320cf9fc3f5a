package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
)

func TestNodeNeedsWrite(t *testing.T) {
	base := api.Node{Name: "n1", Status: "Ready", Capacity: api.Resources{CPU: 4000, Memory: 8192},
		Usage: api.Resources{CPU: 100}, Allocated: api.Allocation{CPU: 500}, Kinds: []string{"pod"},
		Labels: map[string]string{"zone": "a"}, Address: "10.0.0.1", Instances: 2, Load1: 0.1,
		LastHeartbeat: "2026-01-02T03:04:05Z"}
	with := func(f func(*api.Node)) api.Node { v := base; f(&v); return v }
	tests := []struct {
		name   string
		stored *api.Node
		cur    api.Node
		want   bool
	}{
		{"none stored", nil, base, true},
		{"same", &base, base, false},
		{"heartbeat, usage and load only", &base, with(func(v *api.Node) {
			v.LastHeartbeat, v.Usage, v.Load1 = "2026-01-02T03:04:34Z", api.Resources{CPU: 900, Memory: 10}, 3
		}), false},
		{"heartbeat 30 s later", &base, with(func(v *api.Node) { v.LastHeartbeat = "2026-01-02T03:04:35Z" }), true},
		{"heartbeat went back", &base, with(func(v *api.Node) { v.LastHeartbeat = "2026-01-02T03:04:00Z" }), true},
		{"first heartbeat", ptr(with(func(v *api.Node) { v.LastHeartbeat = "" })), base, true},
		{"status", &base, with(func(v *api.Node) { v.Status = "NotReady" }), true},
		{"capacity", &base, with(func(v *api.Node) { v.Capacity.Disk = 1 }), true},
		{"allocated", &base, with(func(v *api.Node) { v.Allocated.Memory = 64 }), true},
		{"instances", &base, with(func(v *api.Node) { v.Instances = 3 }), true},
		{"address", &base, with(func(v *api.Node) { v.Address = "10.0.0.2" }), true},
		{"kinds", &base, with(func(v *api.Node) { v.Kinds = []string{"pod", "function"} }), true},
		{"labels", &base, with(func(v *api.Node) { v.Labels = map[string]string{"zone": "b"} }), true},
		{"nil and empty alike", ptr(with(func(v *api.Node) { v.Kinds, v.Labels = nil, nil })),
			with(func(v *api.Node) { v.Kinds, v.Labels = []string{}, map[string]string{} }), false},
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

// testNode is a node as the scheduler lists it, last heard of at hb.
func testNode(name string, hb time.Time) api.Node {
	return api.Node{
		Name: name, Status: "Ready", Address: "10.0.0.1", Instances: 3, Load1: 0.5,
		Capacity:      api.Resources{CPU: 4000, Memory: 8192, Disk: 100000},
		Usage:         api.Resources{CPU: 1000, Memory: 2048},
		Allocated:     api.Allocation{CPU: 500, Memory: 256},
		Kinds:         []string{"pod", "function"},
		Labels:        map[string]string{"zone": "a"},
		LastHeartbeat: hb.UTC().Format(time.RFC3339),
	}
}

var hb0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// storedNode reads /node/{name}; ok false when it is not there.
func storedNode(t testing.TB, st store.Store, name string) (NodeRecord, store.KV, bool) {
	t.Helper()
	kv, err := st.Get(context.Background(), nodeKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return NodeRecord{}, kv, false
	}
	if err != nil {
		t.Fatalf("reading node %s: %v", name, err)
	}
	var rec NodeRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatalf("decoding node %s: %v", kv.Value, err)
	}
	return rec, kv, true
}

// sync lists the nodes and stores them as the lease holder does.
func (f *fixture) sync(nodes ...api.Node) {
	f.t.Helper()
	f.sched.set(func(s *fakeScheduler) { s.nodes = nodes })
	if _, err := f.s.syncNodes(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func TestNodesStoredRefreshedAndDeleted(t *testing.T) {
	f := newFixture(t)
	n1, n2 := testNode("n1", hb0), testNode("n2", hb0)
	f.sync(n1, n2)
	rec, kv, _ := storedNode(t, f.st, "n1")
	if diff := cmp.Diff(NodeRecord{ID: "n1", Name: "n1", Value: n1}, rec); diff != "" {
		t.Errorf("stored n1 (-want +got):\n%s", diff)
	}
	if _, _, ok := storedNode(t, f.st, "n2"); !ok || strings.Contains(string(kv.Value), "stale") {
		t.Errorf("n2 stored: %v; stored n1 %s", ok, kv.Value)
	}

	// Heartbeat, usage and load only: not rewritten.
	hbOnly := testNode("n1", hb0.Add(25*time.Second))
	hbOnly.Usage, hbOnly.Load1 = api.Resources{CPU: 3000, Memory: 4000}, 2.5
	f.sync(hbOnly, n2)
	if _, kv2, _ := storedNode(t, f.st, "n1"); kv2.Revision != kv.Revision {
		t.Fatalf("n1 rewritten on a heartbeat-only change: %s", kv2.Value)
	}

	// Anything else: rewritten at once.
	more := testNode("n1", hb0.Add(25*time.Second))
	more.Instances = 4
	f.sync(more, n2)
	if rec, _, _ := storedNode(t, f.st, "n1"); rec.Value.Instances != 4 || rec.Value.LastHeartbeat != "2026-01-02T03:04:30Z" {
		t.Fatalf("n1 not rewritten with 4 instances: %+v", rec.Value)
	}

	// Heartbeats 30 s after the stored one: rewritten, then not for 24 s.
	f.sync(testNode("n1", hb0.Add(55*time.Second)), n2) // instances 3 again
	rec, kv, _ = storedNode(t, f.st, "n1")
	if rec.Value.LastHeartbeat != "2026-01-02T03:05:00Z" || rec.Value.Instances != 3 {
		t.Fatalf("n1 not refreshed: %+v", rec.Value)
	}
	f.sync(testNode("n1", hb0.Add(84*time.Second)), n2)
	if _, kv2, _ := storedNode(t, f.st, "n1"); kv2.Revision != kv.Revision {
		t.Fatalf("n1 rewritten 24 s after the stored heartbeat: %s", kv2.Value)
	}

	// A node the scheduler no longer lists is deleted.
	f.sync(testNode("n1", hb0.Add(84*time.Second)))
	if _, _, ok := storedNode(t, f.st, "n2"); ok {
		t.Fatal("n2 not deleted")
	}
	if _, _, ok := storedNode(t, f.st, "n1"); !ok {
		t.Fatal("n1 deleted with n2")
	}
}

// While the scheduler is unreachable the stored nodes are listed, stale;
// ErrUnavailable when none is stored; other errors are passed on.
func TestNodesWhenSchedulerDown(t *testing.T) {
	f := newFixture(t)
	down := fmt.Errorf("listing nodes: %w", errdefs.ErrUnavailable)
	f.sched.set(func(s *fakeScheduler) { s.err = down })
	_, err := f.s.Nodes(t.Context())
	if !errors.Is(err, errdefs.ErrUnavailable) || err.Error() != "scheduler unreachable" {
		t.Errorf("nothing stored: %v", err)
	}
	f.sched.set(func(s *fakeScheduler) { s.err = nil })
	n2 := testNode("n2", hb0)
	n2.Kinds, n2.Labels = nil, nil
	f.sync(testNode("n1", hb0), n2)
	live, err := f.s.Nodes(t.Context())
	if err != nil || len(live) != 2 || live[0].Value.Stale || live[0].Value.Status != "Ready" {
		t.Fatalf("live: %+v %v", live, err)
	}
	f.sched.set(func(s *fakeScheduler) { s.err = down })
	stale, err := f.s.Nodes(t.Context())
	if err != nil || len(stale) != 2 {
		t.Fatalf("stored: %+v %v", stale, err)
	}
	for i, rec := range stale {
		want := live[i].Value
		want.Status, want.Stale = api.NodeStatusUnknown, true
		if want.Kinds == nil {
			want.Kinds, want.Labels = []string{}, map[string]string{}
		}
		if diff := cmp.Diff(want, rec.Value); diff != "" {
			t.Errorf("stale %s (-want +got):\n%s", rec.Name, diff)
		}
	}
	boom := errors.New("boom")
	f.sched.set(func(s *fakeScheduler) { s.err = boom })
	if _, err := f.s.Nodes(t.Context()); !errors.Is(err, boom) {
		t.Errorf("other error: %v", err)
	}
	if _, _, ok := storedNode(t, f.st, "n1"); !ok {
		t.Error("n1 deleted while the scheduler was down")
	}
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
// nodes: only the lease holder asks and writes; the other takes over once
// it holds the lease.
func TestNodesOnlyLeaseHolderWrites(t *testing.T) {
	a := newFixture(t)
	stB := &countingStore{Store: a.st}
	b := newFixtureOn(t, stB)
	b.leader.Store(false)
	a.sched.set(func(s *fakeScheduler) { s.nodes = []api.Node{testNode("n1", hb0)} })
	b.sched.set(func(s *fakeScheduler) { s.nodes = []api.Node{testNode("n9", hb0)} })
	ctx := t.Context()
	a.s.nodesTick(ctx)
	b.s.nodesTick(ctx)
	if _, _, ok := storedNode(t, a.st, "n1"); !ok {
		t.Fatal("n1 not stored by the holder")
	}
	if b.sched.listCount() != 0 || stB.writes.Load() != 0 {
		t.Fatalf("b without the lease asked for nodes %d times, wrote %d", b.sched.listCount(), stB.writes.Load())
	}

	a.leader.Store(false)
	b.leader.Store(true)
	a.s.nodesTick(ctx)
	b.s.nodesTick(ctx)
	_, _, ok1 := storedNode(t, a.st, "n1")
	_, _, ok9 := storedNode(t, a.st, "n9")
	if ok1 || !ok9 || stB.writes.Load() != 2 {
		t.Errorf("after b took over: n1 stored %v, n9 stored %v; b wrote %d times, want 2", ok1, ok9, stB.writes.Load())
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
	f := newFixtureOn(t, st)
	const nodes = 10
	step := func(sec int64) int64 {
		t.Helper()
		var list []api.Node
		for i := range nodes {
			n := testNode(string(rune('a'+i))+"-node", hb0.Add(time.Duration(sec)*time.Second))
			n.Usage.CPU, n.Load1 = 100+sec*7+int64(i), float64(sec%13)/10 // moves every beat
			list = append(list, n)
		}
		before := st.writes.Load()
		f.sync(list...)
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
