package controller

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/controller/service"
)

// events.list answers an object's kept history to viewers (without env
// values), refuses callers without a token, and names a bad query's field.
func TestEventsList(t *testing.T) {
	e := newEnv(t)
	viewer := e.newTokenFor(service.RoleViewer)
	e.createWorkload(secretPod)
	inst := e.createInstances(map[string]any{"workload_id": "secret"})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: inst.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})

	var evs []api.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.as(viewer, "GET", "/api/v0/events.list?kind=instance&name="+inst.Name, nil)
		if r.code != http.StatusOK {
			t.Fatalf("viewer: %d %s", r.code, r.body)
		}
		if strings.Contains(string(r.body), "hunter2") {
			t.Fatalf("events show an env value: %s", r.body)
		}
		r.decode(t, &evs)
		if len(evs) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var reasons []string
	for _, ev := range evs {
		reasons = append(reasons, ev.Reason)
		if ev.Kind != api.EventKindInstance || ev.Name != inst.Name || ev.Time.IsZero() {
			t.Errorf("event %+v: want kind instance, name %s, a time", ev, inst.Name)
		}
	}
	if strings.Join(reasons, ",") != "Scheduled,Started" {
		t.Errorf("events %v, want Scheduled, Started", reasons)
	}
	if r := e.as(viewer, "GET", "/api/v0/events.list?kind=workload&name=secret", nil); r.code != 200 || !strings.Contains(string(r.body), `"Created"`) {
		t.Errorf("workload events: %d %s", r.code, r.body)
	}
	if r := e.as(viewer, "GET", "/api/v0/events.list?kind=node&name=nobody", nil); r.code != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("events of an unknown node: %d %s, want []", r.code, r.body)
	}
	if r := e.as("", "GET", "/api/v0/events.list?kind=workload&name=secret", nil); r.code != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.code)
	}
	for query, field := range map[string]string{"kind=pod&name=x": "kind:", "kind=instance": "name:"} {
		r := e.as(viewer, "GET", "/api/v0/events.list?"+query, nil)
		if r.code != http.StatusBadRequest || !strings.HasPrefix(r.errorText(t), field) {
			t.Errorf("?%s: %d %s, want 400 naming %s", query, r.code, r.body, field)
		}
	}
}
