package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/workload"
)

func TestEvents(t *testing.T) {
	e := newEnvTuned(t, tuning{keepaliveEvery: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := subscribeEvents(t, ctx, e.http, e.token)
	if n := e.metric("rik_controller_event_subscribers"); n != "1" {
		t.Errorf("subscribers gauge = %s, want 1", n)
	}

	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusPending || ev.Name != in.Name {
		t.Errorf("first event %+v", ev)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusRunning || ev.Value.Node != "n1" {
		t.Errorf("running event %+v", ev)
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusDestroying {
		t.Errorf("destroying event %+v", ev)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusTerminated {
		t.Errorf("removal event %+v", ev)
	}
	// keepalive comments arrive
	deadline := time.After(5 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-ch:
			seen = ev.name == "comment" && strings.Contains(ev.data, "keepalive")
		case <-deadline:
			t.Fatal("no keepalive")
		}
	}
	cancel()
	eventually(t, "subscriber gone", func() bool { return e.metric("rik_controller_event_subscribers") == "0" })
}
