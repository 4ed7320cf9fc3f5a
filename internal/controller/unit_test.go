package controller

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

func intp(i int) *int { return &i }

func TestApplyMetric(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", IP: "10.0.0.2",
		Ports: []workload.PortMapping{{Port: 80, TargetPort: 80}}}
	pending := workload.Instance{ID: "i", Status: workload.StatusPending}
	deleting := running
	deleting.DeleteRequested = true
	deleting.Status = workload.StatusDestroying
	rescheduled := workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Restarts: 1}
	alive := applyContext{WorkloadExists: true, Policy: workload.RestartAlways, Now: now}
	never := applyContext{WorkloadExists: true, Policy: workload.RestartNever, Now: now}
	orphan := applyContext{WorkloadExists: false, Policy: workload.RestartAlways, Now: now}
	m := func(st commonpb.ResourceStatus, f func(*commonpb.InstanceMetric)) *commonpb.InstanceMetric {
		x := &commonpb.InstanceMetric{InstanceId: "i", Status: st, Node: "n1"}
		if f != nil {
			f(x)
		}
		return x
	}
	tests := []struct {
		name string
		in   workload.Instance
		m    *commonpb.InstanceMetric
		c    applyContext
		want outcome
		out  workload.Instance
	}{
		{"pending to creating", pending, m(commonpb.ResourceStatus_CREATING, func(x *commonpb.InstanceMetric) { x.Message = "pulling" }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusCreating, Node: "n1", Message: "pulling", UpdatedAt: now}},
		{"same status again", running, m(commonpb.ResourceStatus_RUNNING, nil), alive, outcomeKeep, running},
		{"unknown status ignored", running, m(commonpb.ResourceStatus_UNKNOWN, nil), alive, outcomeKeep, running},
		{"exit code kept on failure", running, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.HasExitCode = true; x.ExitCode = 1; x.Reason = api.ReasonError }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonError, ExitCode: intp(1), UpdatedAt: now}},
		{"restarts never go down", workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", Restarts: 3}, m(commonpb.ResourceStatus_RUNNING, func(x *commonpb.InstanceMetric) { x.Restarts = 1 }), alive, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", Restarts: 3}},
		{"terminated of deleted removes", deleting, m(commonpb.ResourceStatus_TERMINATED, nil), alive, outcomeRemove, deleting},
		{"terminated of orphan removes", running, m(commonpb.ResourceStatus_TERMINATED, nil), orphan, outcomeRemove, running},
		{"terminated of live is kept, with a reason", running, m(commonpb.ResourceStatus_TERMINATED, nil), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusTerminated, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonUnknown, UpdatedAt: now}},
		{"running while deleting stays destroying", deleting, m(commonpb.ResourceStatus_RUNNING, nil), alive, outcomeKeep, deleting},
		{"node lost reschedules", running, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), alive, outcomeReschedule,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", FormerNodes: []string{"n1"}, Restarts: 1, UpdatedAt: now}},
		{"node lost with Never fails", running, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), never, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", IP: "10.0.0.2", Ports: running.Ports, Reason: api.ReasonNodeLost, UpdatedAt: now}},
		// Issue 8 (2): removed only once its node confirms it stopped it.
		{"node lost of deleted waits for its node", deleting, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), alive, outcomeWrite,
			func() workload.Instance {
				d := deleting
				d.Reason, d.Message, d.UpdatedAt = api.ReasonNodeLost, "node n1 lost: waiting for it to stop the instance", now
				return d
			}()},
		{"node lost of orphan waits for its node", running, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), orphan, outcomeWrite,
			func() workload.Instance {
				d := running
				d.Status, d.Reason, d.Message, d.UpdatedAt = workload.StatusDestroying, api.ReasonNodeLost, "node n1 lost: waiting for it to stop the instance", now
				return d
			}()},
		{"lost with Never and back: destroyed", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(commonpb.ResourceStatus_RUNNING, nil), never, outcomeDestroy,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		{"lost with Never, copy destroyed: still failed", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(commonpb.ResourceStatus_TERMINATED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonDestroyed }), never, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		{"node lost twice is one reschedule", rescheduled, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), alive, outcomeKeep, rescheduled},
		{"node lost after a pending status ignored", workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNoNodeFits, Restarts: 1},
			m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), alive, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNoNodeFits, Restarts: 1}},
		{"node lost of a scheduled instance reschedules", workload.Instance{ID: "i", Status: workload.StatusPending, Node: "n1", Message: "scheduled on n1"},
			m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), alive, outcomeReschedule,
			workload.Instance{ID: "i", Status: workload.StatusPending, Reason: api.ReasonNodeLost, Message: "rescheduling: node n1 lost", FormerNodes: []string{"n1"}, Restarts: 1, UpdatedAt: now}},
		{"node lost twice with Never is one failure", workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost},
			m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost }), never, outcomeKeep,
			workload.Instance{ID: "i", Status: workload.StatusFailed, Node: "n1", Reason: api.ReasonNodeLost}},
		// Issue 8: the node it leaves may still run a copy: remembered,
		// for a DESTROY to wait for it too.
		{"moved: former node remembered", running, m(commonpb.ResourceStatus_RUNNING, func(x *commonpb.InstanceMetric) { x.Node = "n2" }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n2", FormerNodes: []string{"n1"}, UpdatedAt: now}},
		{"moved back: not a former node any more", workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n2", FormerNodes: []string{"n1", "n3"}},
			m(commonpb.ResourceStatus_RUNNING, nil), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusRunning, Node: "n1", FormerNodes: []string{"n3", "n2"}, UpdatedAt: now}},
		// Found by the chaos suite: a restarting pod's address was still
		// shown while the node gave it to another pod.
		{"restarting forgets its address", running, m(commonpb.ResourceStatus_CREATING, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonBackOff }), alive, outcomeWrite,
			workload.Instance{ID: "i", Status: workload.StatusCreating, Node: "n1", Ports: running.Ports, Reason: api.ReasonBackOff, UpdatedAt: now}},
		{"node lost from an old node ignored", running, m(commonpb.ResourceStatus_FAILED, func(x *commonpb.InstanceMetric) { x.Reason = api.ReasonNodeLost; x.Node = "n0" }), alive, outcomeKeep, running},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := cloneInstance(tt.in)
			got := applyMetric(&in, tt.m, tt.c)
			if got != tt.want {
				t.Errorf("outcome = %d, want %d", got, tt.want)
			}
			if diff := cmp.Diff(tt.out, in); diff != "" {
				t.Errorf("instance (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInstanceName(t *testing.T) {
	for _, wl := range []string{"web", strings.Repeat("a", 57), strings.Repeat("b", 56) + "-c", "x"} {
		n := instanceName(wl)
		if err := workload.ValidName(n); err != nil {
			t.Errorf("instanceName(%q) = %q: %v", wl, n, err)
		}
	}
	seen := map[string]bool{}
	for range 200 {
		seen[instanceName("web")] = true
	}
	if len(seen) < 190 {
		t.Errorf("only %d distinct names in 200", len(seen))
	}
}

func TestSchedulerTarget(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:4996": "localhost:4996",
		"http://10.0.0.1:4996/": "10.0.0.1:4996",
		"localhost:4996":        "localhost:4996",
		"https://sched:1":       "sched:1",
		"dns:///scheduler:4996": "dns:///scheduler:4996",
	} {
		if got := schedulerTarget(in); got != want {
			t.Errorf("schedulerTarget(%q) = %q, want %q", in, got, want)
		}
	}
}

// Two controllers on one store updating the same instance concurrently must
// not lose updates (compare-and-set).
func TestUpdateInstanceCAS(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a, b := newRepo(st), newRepo(st)
	rec := instanceRecord{ID: "id-1", Name: "web-aaaaa", Value: workload.Instance{ID: "id-1", Name: "web-aaaaa", Kind: workload.KindPod}}
	if err := a.createInstance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := b.createInstance(ctx, rec); err == nil {
		t.Fatal("second create of the same name succeeded")
	}
	var wg sync.WaitGroup
	for _, r := range []*repo{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, _, err := r.updateInstance(ctx, "id-1", func(i *workload.Instance) (change, error) {
					i.Restarts++
					return write, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, _, err := a.findInstanceByID(ctx, "id-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Restarts != 100 {
		t.Errorf("restarts = %d after 100 concurrent increments", got.Value.Restarts)
	}
}

// The OpenAPI description parses and documents every route served, with
// the role routeRoles gives it (x-rik-role), and 401 wherever a token is
// needed.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Role      string         `json:"x-rik-role"`
			Security  *[]any         `json:"security"`
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	for _, p := range routePatterns(t) {
		method, path, _ := strings.Cut(p, " ")
		op, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			t.Errorf("openapi.yaml lacks %s", p)
			continue
		}
		if want := string(routeRoles[p]); op.Role != want {
			t.Errorf("openapi.yaml: %s has x-rik-role %q, the controller asks for %q", p, op.Role, want)
		}
		_, has401 := op.Responses["401"]
		public := routeRoles[p] == rolePublic
		if public != (op.Security != nil && len(*op.Security) == 0) || public == has401 {
			t.Errorf("openapi.yaml: %s: security %v, 401 documented %v, public %v", p, op.Security, has401, public)
		}
	}
}

// routePatterns are the routes a controller registers.
func routePatterns(t *testing.T) []string {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := NewServer(Config{Store: st, SchedulerAddr: "127.0.0.1:1", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.link.close)
	if len(s.patterns) == 0 {
		t.Fatal("no route recorded")
	}
	return s.patterns
}

func TestPublishChanges(t *testing.T) {
	s := &Server{events: newBroker()}
	ch, unsub := s.events.subscribe()
	defer unsub()
	rec := func(id string, st workload.Status) instanceRecord {
		return instanceRecord{ID: id, Name: id, Value: workload.Instance{ID: id, Status: st}}
	}
	old := map[string]instanceRecord{"/a": rec("a", workload.StatusPending), "/b": rec("b", workload.StatusRunning), "/d": rec("d", workload.StatusRunning)}
	cur := map[string]instanceRecord{"/a": rec("a", workload.StatusRunning), "/c": rec("c", workload.StatusPending), "/d": rec("d", workload.StatusRunning)}
	publishChanges(s, old, cur)
	got := map[string]workload.Status{}
	for len(ch) > 0 {
		var r instanceRecord
		if err := json.Unmarshal(<-ch, &r); err != nil {
			t.Fatal(err)
		}
		got[r.ID] = r.Value.Status
	}
	want := map[string]workload.Status{"a": workload.StatusRunning, "b": workload.StatusTerminated, "c": workload.StatusPending}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}
