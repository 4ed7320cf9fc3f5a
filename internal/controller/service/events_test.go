package service

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/workload"
)

func inst(id string, rev int64, st workload.Status) object {
	return object{kind: api.EventInstance, id: id, rev: rev,
		item: InstanceRecord{ID: id, Name: id, Value: workload.Instance{ID: id, Status: st}}}
}

func node(name string, rev int64) object {
	return object{kind: api.EventNode, id: name, rev: rev, item: NodeRecord{ID: name, Name: name}}
}

// ids are the events' ids and names, and their items' ids.
func ids(evs []Event) []string {
	out := []string{}
	for _, ev := range evs {
		id := ""
		switch it := ev.Item.(type) {
		case InstanceRecord:
			id = it.ID + ":" + string(it.Value.Status)
		case NodeRecord:
			id = it.ID
		}
		out = append(out, fmt.Sprintf("%d %s %s", ev.ID, ev.Name(), id))
	}
	return out
}

// testFeed is a feed reset with a listing (a at 5, n1 at 6), then a's
// change at 7, b's creation at 8, n1's removal at 9, a's removal at 10.
func testFeed() *feed {
	f := newFeed()
	f.reset(map[string]object{"/instance/a": inst("a", 5, workload.StatusPending), "/node/n1": node("n1", 6)})
	f.apply("/instance/a", 5, false, inst("a", 5, workload.StatusPending)) // seen by watch and listing
	f.apply("/instance/a", 7, false, inst("a", 7, workload.StatusRunning))
	f.apply("/instance/b", 8, false, inst("b", 8, workload.StatusPending))
	f.apply("/node/n1", 9, true, object{})
	f.apply("/instance/a", 10, true, object{})
	return f
}

// A subscriber resuming from an id the feed holds gets what followed; from
// one it does not (before the listing, 0, or from elsewhere) a resync.
func TestFeedSubscribe(t *testing.T) {
	for _, c := range []struct {
		name     string
		since    int64
		kinds    []string
		backlog  []string
		sync     *api.Sync
		connHead int64
	}{
		{name: "from now", since: -1, backlog: nil},
		{name: "replay", since: 8, backlog: []string{"9 node.deleted n1", "10 instance a:TERMINATED"}},
		{name: "replay of a kind", since: 7, kinds: []string{api.EventInstance},
			backlog: []string{"8 instance b:PENDING", "10 instance a:TERMINATED"}},
		{name: "replay, nothing missed", since: 10, backlog: nil},
		{name: "from the first event held", since: 7, backlog: []string{"8 instance b:PENDING", "9 node.deleted n1", "10 instance a:TERMINATED"}},
		{name: "from before the listing: resync", since: 6, backlog: []string{"8 instance b:PENDING"},
			sync: &api.Sync{Instances: []string{"b"}}},
		{name: "everything", since: 0, backlog: []string{"8 instance b:PENDING"}, sync: &api.Sync{Instances: []string{"b"}}},
		{name: "an id from elsewhere", since: 99, kinds: []string{api.EventNode}, backlog: nil, sync: &api.Sync{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := testFeed().subscribe(c.since, c.kinds)
			defer sub.Cancel()
			if diff := cmp.Diff(c.backlog, ids(sub.Backlog), cmpEmpty); diff != "" {
				t.Errorf("backlog (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.sync, sub.Sync); diff != "" {
				t.Errorf("sync (-want +got):\n%s", diff)
			}
			if sub.Head != 10 || (c.sync != nil && sub.SyncID != 10) {
				t.Errorf("head %d, sync id %d, want 10", sub.Head, sub.SyncID)
			}
		})
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 || cmp.Equal(a, b) })

// After a reset (a restart, or the watch re-listed) nothing is replayed:
// subscribers are dropped and resume with a resync, until events come.
func TestFeedReset(t *testing.T) {
	f := testFeed()
	live := f.subscribe(-1, nil)
	f.reset(map[string]object{"/instance/b": inst("b", 12, workload.StatusRunning)})
	if _, ok := <-live.C; ok {
		t.Fatal("subscriber kept across a reset")
	}
	sub := f.subscribe(12, nil)
	if sub.Sync == nil || len(sub.Backlog) != 0 {
		t.Errorf("resuming at the listing's head: backlog %v, sync %v, want an empty resync", ids(sub.Backlog), sub.Sync)
	}
	// The removal of a record the listing did not have: whoever is
	// before it cannot be replayed to.
	f.apply("/instance/gone", 14, true, object{})
	f.apply("/instance/b", 15, false, inst("b", 15, workload.StatusFailed))
	if sub := f.subscribe(13, nil); sub.Sync == nil {
		t.Errorf("resuming across a removal not seen: %v, want a resync", ids(sub.Backlog))
	}
	if sub := f.subscribe(14, nil); sub.Sync != nil || !cmp.Equal(ids(sub.Backlog), []string{"15 instance b:FAILED"}) {
		t.Errorf("resuming after it: %v %v", ids(sub.Backlog), sub.Sync)
	}
}

// The feed keeps historySize events; a subscriber from before them gets a
// resync. A slow subscriber is dropped.
func TestFeedHistoryAndSlowSubscriber(t *testing.T) {
	f := newFeed()
	f.reset(nil)
	slow := f.subscribe(-1, nil)
	fast := f.subscribe(-1, nil)
	n := int64(historySize + subscriberBuffer)
	for rev := int64(1); rev <= n; rev++ {
		f.apply("/instance/a", rev, false, inst("a", rev, workload.StatusRunning))
		<-fast.C
	}
	if f.count() != 1 {
		t.Fatalf("subscribers = %d, want 1 (the slow one dropped)", f.count())
	}
	got := 0
	for range slow.C {
		got++
	}
	if got != subscriberBuffer {
		t.Errorf("slow subscriber got %d events before its end, want %d", got, subscriberBuffer)
	}
	if sub := f.subscribe(n-historySize, nil); sub.Sync != nil || len(sub.Backlog) != historySize {
		t.Errorf("from the oldest kept: %d events, sync %v", len(sub.Backlog), sub.Sync)
	}
	if sub := f.subscribe(n-historySize-1, nil); sub.Sync == nil {
		t.Errorf("from before the oldest kept: %d events replayed, want a resync", len(sub.Backlog))
	}
}

// Run follows the store: changes written by anyone reach subscribers with
// their revision as id, a removed instance once more as TERMINATED.
func TestSubscribeFollowsTheStore(t *testing.T) {
	f := newFixture(t)
	other := newFixtureOn(t, f.st) // another controller writes
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	sub, err := f.s.Subscribe(ctx, -1, []string{api.EventInstance, api.EventWorkload})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	last := sub.Head
	next := func() Event {
		t.Helper()
		select {
		case ev := <-sub.C:
			if ev.ID <= last {
				t.Errorf("event id %d after %d", ev.ID, last)
			}
			last = ev.ID
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no change published")
		}
		return Event{}
	}
	wl := other.workload("web")
	if ev := next(); ev.Name() != api.EventWorkload || ev.Item.(WorkloadRecord).ID != wl.ID {
		t.Errorf("after creating a workload: %+v", ev)
	}
	in := other.instances("web", 1)[0]
	if ev := next(); ev.Item.(InstanceRecord).ID != in.ID {
		t.Errorf("after creating an instance: %+v", ev)
	}
	other.s.Ingest(ctx, Status{InstanceID: in.ID, Status: workload.StatusRunning, Node: "n1"})
	if ev := next(); ev.Item.(InstanceRecord).ID != in.ID || ev.Item.(InstanceRecord).Value.Status != workload.StatusRunning {
		t.Errorf("after RUNNING: %+v", ev)
	}
	if err := other.s.DeleteInstance(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Item.(InstanceRecord).Value.Status != workload.StatusDestroying {
		t.Errorf("after delete: %+v", ev)
	}
	other.s.Ingest(ctx, Status{InstanceID: in.ID, Status: workload.StatusTerminated, Node: "n1", Reason: api.ReasonDestroyed})
	if ev := next(); ev.Item.(InstanceRecord).ID != in.ID || ev.Item.(InstanceRecord).Value.Status != workload.StatusTerminated || !ev.Deleted {
		t.Errorf("after removal: %+v", ev)
	}
}
