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

func TestPublishChanges(t *testing.T) {
	s := newFixture(t).s
	ch, unsub := s.Subscribe()
	defer unsub()
	rec := func(id string, st workload.Status) InstanceRecord {
		return InstanceRecord{ID: id, Name: id, Value: workload.Instance{ID: id, Status: st, Reason: "r"}}
	}
	old := map[string]InstanceRecord{"/a": rec("a", workload.StatusPending), "/b": rec("b", workload.StatusRunning), "/d": rec("d", workload.StatusRunning)}
	cur := map[string]InstanceRecord{"/a": rec("a", workload.StatusRunning), "/c": rec("c", workload.StatusPending), "/d": rec("d", workload.StatusRunning)}
	s.publishChanges(old, cur)
	got := map[string]workload.Instance{}
	for len(ch) > 0 {
		r := <-ch
		got[r.ID] = r.Value
	}
	want := map[string]workload.Instance{
		"a": {ID: "a", Status: workload.StatusRunning, Reason: "r"},
		"b": {ID: "b", Status: workload.StatusTerminated, Reason: api.ReasonDeleted}, // removed
		"c": {ID: "c", Status: workload.StatusPending, Reason: "r"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

func TestBrokerDropsSlowSubscriber(t *testing.T) {
	b := newBroker()
	slow, _ := b.subscribe()
	fast, unsub := b.subscribe()
	defer unsub()
	for i := range subscriberBuffer + 1 {
		b.publish(InstanceRecord{ID: fmt.Sprint(i)})
		<-fast
	}
	if b.count() != 1 {
		t.Fatalf("subscribers = %d, want 1 (slow one dropped)", b.count())
	}
	n := 0
	for range slow {
		n++
	}
	if n != subscriberBuffer {
		t.Errorf("slow subscriber got %d buffered events before close, want %d", n, subscriberBuffer)
	}
}

// Run follows the store: changes written by anyone reach subscribers, a
// removed record once more as TERMINATED.
func TestSubscribeFollowsTheStore(t *testing.T) {
	f := newFixture(t)
	other := newFixtureOn(t, f.st) // another controller writes
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	ch, unsub := f.s.Subscribe()
	defer unsub()
	next := func() InstanceRecord {
		t.Helper()
		select {
		case rec := <-ch:
			return rec
		case <-time.After(10 * time.Second):
			t.Fatal("no change published")
		}
		return InstanceRecord{}
	}
	// The watch is up once a first write is published; write until then.
	other.workload("web")
	var in InstanceRecord
	for first := true; first; {
		in = other.instances("web", 1)[0]
		select {
		case rec := <-ch:
			first = rec.ID != in.ID
		case <-time.After(100 * time.Millisecond):
		}
	}
	other.s.Ingest(ctx, Status{InstanceID: in.ID, Status: workload.StatusRunning, Node: "n1"})
	if rec := next(); rec.ID != in.ID || rec.Value.Status != workload.StatusRunning {
		t.Errorf("after RUNNING: %+v", rec)
	}
	if err := other.s.DeleteInstance(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if rec := next(); rec.Value.Status != workload.StatusDestroying {
		t.Errorf("after delete: %+v", rec)
	}
	other.s.Ingest(ctx, Status{InstanceID: in.ID, Status: workload.StatusTerminated, Node: "n1", Reason: api.ReasonDestroyed})
	if rec := next(); rec.ID != in.ID || rec.Value.Status != workload.StatusTerminated {
		t.Errorf("after removal: %+v", rec)
	}
}
