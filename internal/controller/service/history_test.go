package service

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

func TestAppendEvents(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	ev := func(s int, reason, msg string) api.Event { return api.Event{Time: at(s), Reason: reason, Message: msg} }
	for _, tc := range []struct {
		name      string
		list, add []api.Event
		max       int
		want      []api.Event
	}{
		{"append", []api.Event{ev(1, "A", "")}, []api.Event{ev(2, "B", "")}, 10, []api.Event{ev(1, "A", ""), ev(2, "B", "")}},
		{"repeat folded", []api.Event{ev(1, "A", "x")}, []api.Event{ev(2, "A", "x"), ev(3, "A", "x")}, 10,
			[]api.Event{{Time: at(3), Reason: "A", Message: "x", Count: 3}}},
		{"other message kept", []api.Event{ev(1, "A", "x")}, []api.Event{ev(2, "A", "y")}, 10, []api.Event{ev(1, "A", "x"), ev(2, "A", "y")}},
		{"bounded: oldest go", []api.Event{ev(1, "A", ""), ev(2, "B", "")}, []api.Event{ev(3, "C", ""), ev(4, "D", "")}, 3,
			[]api.Event{ev(2, "B", ""), ev(3, "C", ""), ev(4, "D", "")}},
	} {
		got := appendEvents(tc.list, tc.add, tc.max)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestInstanceEvents(t *testing.T) {
	code := 3
	pending := workload.Instance{Status: workload.StatusPending}
	onN1 := workload.Instance{Status: workload.StatusPending, Node: "n1", Message: "scheduled on n1"}
	creating := workload.Instance{Status: workload.StatusCreating, Node: "n1", Message: "pulling image nginx"}
	pulled := workload.Instance{Status: workload.StatusCreating, Node: "n1", Message: "pulled image nginx (2 MB in 1.2s)"}
	running := workload.Instance{Status: workload.StatusRunning, Node: "n1", IP: "10.0.0.2"}
	restarted := workload.Instance{Status: workload.StatusRunning, Node: "n1", Restarts: 1, Reason: "liveness probe failed: timeout", Message: "restarting in 10s"}
	exited := workload.Instance{Status: workload.StatusTerminated, Node: "n1", Reason: "Completed", ExitCode: &code}
	lost := workload.Instance{Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", Restarts: 1}
	for _, tc := range []struct {
		name          string
		before, after workload.Instance
		want          []note
	}{
		{"unplaced", workload.Instance{}, workload.Instance{Status: workload.StatusPending, Reason: "no node fits"},
			[]note{{api.EventPending, "no node fits"}}},
		{"scheduled", pending, onN1, []note{{api.EventScheduled, "on n1"}}},
		{"pulling", onN1, creating, []note{{api.EventCreating, "pulling image nginx"}}},
		{"pulled", creating, pulled, []note{{api.EventCreating, "pulled image nginx (2 MB in 1.2s)"}}},
		{"started", pulled, running, []note{{api.EventStarted, ""}}},
		{"restarted", running, restarted, []note{{api.EventRestarting, "restart 1: liveness probe failed: timeout: restarting in 10s"},
			{api.EventUpdated, "liveness probe failed: timeout: restarting in 10s"}}},
		{"exited", running, exited, []note{{api.EventExited, "Completed: exit code 3"}}},
		{"node lost", running, lost, []note{{api.EventRescheduled, api.ReasonNodeLost + ": rescheduling: node n1 lost"}}},
		{"nothing new", running, running, nil},
	} {
		if got := instanceEvents(tc.before, tc.after); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Events are kept per object, bounded, in the store: a controller started
// again on the same store (or another sharing it) lists them; an instance
// removed takes its history with it.
func TestEventHistoryPersisted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.workload("web")
	inst := f.instances("web", 1)[0]
	f.s.Ingest(ctx, Status{InstanceID: inst.ID, Status: workload.StatusPending, Node: "n1", Message: "scheduled on n1"})
	f.s.Ingest(ctx, Status{InstanceID: inst.ID, Status: workload.StatusRunning, Node: "n1"})
	for i := range api.MaxEvents + 5 {
		f.s.Record(ctx, api.EventKindWorkload, "web", "RolloutProgress", fmt.Sprintf("step %d", i))
	}
	f.s.flushHistory(ctx)

	again := newFixtureOn(t, f.st) // a restarted controller
	evs, err := again.s.Events(ctx, api.EventKindInstance, inst.Name)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs {
		reasons = append(reasons, e.Reason)
	}
	if want := []string{api.EventScheduled, api.EventStarted}; fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("instance events %v, want %v", reasons, want)
	}
	wl, err := again.s.Events(ctx, api.EventKindWorkload, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(wl) != api.MaxEvents || wl[len(wl)-1].Message != fmt.Sprintf("step %d", api.MaxEvents+4) {
		t.Errorf("workload history: %d events ending %+v, want the last %d", len(wl), wl[len(wl)-1], api.MaxEvents)
	}

	if err := again.s.DeleteInstance(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	again.s.Ingest(ctx, Status{InstanceID: inst.ID, Status: workload.StatusTerminated, Node: "n1", Reason: api.ReasonDestroyed})
	again.s.flushHistory(ctx)
	if evs, err := f.s.Events(ctx, api.EventKindInstance, inst.Name); err != nil || len(evs) != 0 {
		t.Errorf("history of a removed instance: %v, %v; want none", evs, err)
	}
	if _, err := f.s.Events(ctx, "pod", "web"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown kind: %v, want invalid argument", err)
	}
}
