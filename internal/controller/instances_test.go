package controller

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/workload"
)

var generatedName = regexp.MustCompile(`^web-[a-z0-9]{5}$`)

func TestInstancesCreate(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))

	one := e.createInstances(map[string]any{"workload_id": wl.ID})
	if len(one) != 1 {
		t.Fatalf("default replicas: %d instances", len(one))
	}
	in := one[0]
	if _, err := uuid.Parse(in.ID); err != nil || in.Value.ID != in.ID {
		t.Errorf("id %q / %q", in.ID, in.Value.ID)
	}
	if !generatedName.MatchString(in.Name) || in.Value.Name != in.Name {
		t.Errorf("generated name %q", in.Name)
	}
	if in.Value.Status != workload.StatusPending || in.Value.WorkloadID != wl.ID || in.Value.WorkloadName != "web" ||
		in.Value.Kind != workload.KindPod || in.Value.CreatedAt.IsZero() {
		t.Errorf("new instance %+v", in.Value)
	}
	if _, err := e.st.Get(t.Context(), "/instance/pods/default/"+in.Name); err != nil {
		t.Errorf("stored key: %v", err)
	}
	orders := e.waitOrders(in.ID, 1)
	o := orders[0]
	if o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetWorkloadId() != wl.ID ||
		o.GetInstanceName() != in.Name || o.GetNode() != "" {
		t.Errorf("CREATE order %v", o)
	}
	def, err := workload.Parse([]byte(o.GetDefinition()))
	if err != nil || def.Name != "web" || def.Spec.Containers[0].Image != "nginx" {
		t.Errorf("order definition %q: %v", o.GetDefinition(), err)
	}

	three := e.createInstances(map[string]any{"workload_id": "web", "replicas": 3})
	names := map[string]bool{}
	for _, r := range three {
		names[r.Name] = true
		e.waitOrders(r.ID, 1)
	}
	if len(three) != 3 || len(names) != 3 {
		t.Errorf("replicas 3 gave %d instances, %d names", len(three), len(names))
	}

	named := e.createInstances(map[string]any{"workload_id": wl.ID, "name": "web-main"})
	if len(named) != 1 || named[0].Name != "web-main" {
		t.Errorf("named instance %+v", named)
	}
	var all []instanceRecord
	e.must(200, "GET", "/api/v0/instances.list", nil).decode(t, &all)
	if len(all) != 5 {
		t.Errorf("instances.list: %d, want 5", len(all))
	}
	for _, ref := range []string{named[0].ID, "web-main"} {
		got, code := e.getInstance(ref)
		if code != 200 || got.ID != named[0].ID {
			t.Errorf("instances.get/%s: %d %+v", ref, code, got)
		}
	}
	e.must(404, "GET", "/api/v0/instances.get/nope", nil)
	e.must(404, "GET", "/api/v0/instances.get/"+strings.Repeat("x", 40000), nil)
	e.must(404, "GET", "/api/v0/instances.get/%2e%2e%2fworkload", nil)
}

func TestInstancesCreateErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 200 })
	wl := e.createWorkload(podDef("web"))
	e.createInstances(map[string]any{"workload_id": wl.ID, "name": "taken"})
	tests := []struct {
		name string
		body string
		code int
		want string
	}{
		{"unknown workload", `{"workload_id":"nope"}`, 404, "nope"},
		{"missing workload", `{}`, 400, "workload_id: required"},
		{"name with replicas", `{"workload_id":"web","name":"x","replicas":2}`, 400, "name:"},
		{"bad name", `{"workload_id":"web","name":"Bad_Name"}`, 400, "name:"},
		{"zero replicas", `{"workload_id":"web","replicas":0}`, 400, "replicas:"},
		{"too many replicas", `{"workload_id":"web","replicas":100000}`, 400, "replicas:"},
		{"unknown field", `{"workload_id":"web","replica":2}`, 400, "replica"},
		{"wrong type", `{"workload_id":"web","replicas":"2"}`, 400, "replicas"},
		{"name taken", `{"workload_id":"web","name":"taken"}`, 409, "taken"},
		{"too large", `{"workload_id":"` + strings.Repeat("w", 300) + `"}`, 413, "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v0/instances.create", tt.body)
			if r.code != tt.code || !strings.Contains(r.errorText(t), tt.want) {
				t.Errorf("got %d %s, want %d mentioning %q", r.code, r.body, tt.code, tt.want)
			}
		})
	}
	var all []instanceRecord
	e.must(200, "GET", "/api/v0/instances.list", nil).decode(t, &all)
	if len(all) != 1 {
		t.Errorf("failed creates stored instances: %d", len(all))
	}
}

func TestInstancesDelete(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.waitInstance(in.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })

	e.must(404, "POST", "/api/v0/instances.delete", map[string]string{"id": "nope"})
	e.must(400, "POST", "/api/v0/instances.delete", `{"id":"x","extra":1}`)
	e.must(400, "POST", "/api/v0/instances.delete", `{}`)
	e.must(413, "POST", "/api/v0/instances.delete", `{"id":"`+strings.Repeat("x", 2<<20)+`"}`)
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.Name})

	got, _ := e.getInstance(in.ID)
	if got.Value.Status != workload.StatusDestroying || !got.Value.DeleteRequested {
		t.Errorf("after delete: %+v", got.Value)
	}
	orders := e.waitOrders(in.ID, 2)
	if d := orders[1]; d.GetAction() != commonpb.WorkloadRequestKind_DESTROY || d.GetNode() != "n1" || d.GetInstanceName() != in.Name {
		t.Errorf("DESTROY order %v", d)
	}
	// asking again re-sends DESTROY without rewriting the record
	before, _ := e.st.Get(t.Context(), "/instance/pods/default/"+in.Name)
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	if o := e.waitOrders(in.ID, 3)[2]; o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("second delete sent %v", o)
	}
	if after, _ := e.st.Get(t.Context(), "/instance/pods/default/"+in.Name); after.Revision != before.Revision {
		t.Errorf("second delete rewrote the record (rev %d -> %d)", before.Revision, after.Revision)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_DESTROYING, Node: "n1"})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1"})
	e.waitGone(in.ID)
	if _, err := e.st.Get(t.Context(), "/instance/pods/default/"+in.Name); err == nil {
		t.Error("record still stored")
	}
	// the workload stays
	e.must(200, "GET", "/api/v0/workloads.instances/web", nil)
}

func TestStatusIngestion(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]

	// unknown ids are ignored, and the stream keeps working
	e.sched.push(&commonpb.InstanceMetric{InstanceId: "no-such-id", Status: commonpb.ResourceStatus_RUNNING})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_CREATING, Node: "n1",
		Message: "pulling nginx", TimingsMs: map[string]int64{"pull": 120}})
	got := e.waitInstance(in.ID, "creating", func(i workload.Instance) bool { return i.Status == workload.StatusCreating })
	if got.Node != "n1" || got.Message != "pulling nginx" || got.Timings["pull"] != 120 {
		t.Errorf("creating: %+v", got)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1",
		Ip: "10.62.0.2", Ports: []*commonpb.PortMapping{{Port: 8080, TargetPort: 80, Protocol: "TCP"}},
		TimingsMs: map[string]int64{"start": 30}})
	got = e.waitInstance(in.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	if got.IP != "10.62.0.2" || len(got.Ports) != 1 || got.Ports[0].Port != 8080 || got.Ports[0].TargetPort != 80 ||
		got.Timings["pull"] != 120 || got.Timings["start"] != 30 || got.Message != "" || !got.UpdatedAt.After(got.CreatedAt) {
		t.Errorf("running: %+v", got)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_FAILED, Node: "n1",
		HasExitCode: true, ExitCode: 137, Reason: api.ReasonOOMKilled, Restarts: 2})
	got = e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.ExitCode == nil || *got.ExitCode != 137 || got.Reason != api.ReasonOOMKilled || got.Restarts != 2 {
		t.Errorf("failed: %+v", got)
	}
	// an exit code of 0 is kept as a value, not dropped
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1",
		HasExitCode: true, ExitCode: 0, Reason: api.ReasonCompleted})
	got = e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })
	if got.ExitCode == nil || *got.ExitCode != 0 {
		t.Errorf("terminated exit code %v", got.ExitCode)
	}
	// deleting a TERMINATED instance removes it at once
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	if _, code := e.getInstance(in.ID); code != 404 {
		t.Errorf("terminated instance still there after delete: %d", code)
	}
}

func TestRescheduleOnNodeLost(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("always"))
	e.createWorkload(podNever("never"))
	a := e.createInstances(map[string]any{"workload_id": "always"})[0]
	n := e.createInstances(map[string]any{"workload_id": "never"})[0]
	d := e.createInstances(map[string]any{"workload_id": "always"})[0]
	for _, in := range []instanceRecord{a, n, d} {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1", Ip: "10.0.0.1"})
		e.waitInstance(in.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": d.ID})
	e.waitOrders(d.ID, 2)

	lost := func(id string) *commonpb.InstanceMetric {
		return &commonpb.InstanceMetric{InstanceId: id, Status: commonpb.ResourceStatus_FAILED, Node: "n1", Reason: api.ReasonNodeLost}
	}
	e.sched.push(lost(a.ID))
	e.sched.push(lost(a.ID)) // duplicate delivery must not reschedule twice
	e.sched.push(lost(n.ID))
	e.sched.push(lost(d.ID))

	got := e.waitInstance(a.ID, "rescheduled", func(i workload.Instance) bool { return i.Status == workload.StatusPending })
	if got.Restarts != 1 || got.Node != "" || got.IP != "" || got.Reason != api.ReasonNodeLost {
		t.Errorf("rescheduled: %+v", got)
	}
	orders := e.waitOrders(a.ID, 2)
	if o := orders[1]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "" {
		t.Errorf("reschedule order %v", o)
	}
	gotN := e.waitInstance(n.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if gotN.Reason != api.ReasonNodeLost || gotN.Restarts != 0 {
		t.Errorf("Never policy: %+v", gotN)
	}
	// A deleted instance lost with its node is not gone until its node
	// says it stopped it (issue 8).
	gotD := e.waitInstance(d.ID, "destroying, node lost", func(i workload.Instance) bool { return i.Reason == api.ReasonNodeLost })
	if gotD.Status != workload.StatusDestroying {
		t.Errorf("deleted instance of a lost node: %+v, want DESTROYING", gotD)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: d.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1", Reason: api.ReasonDestroyed})
	e.waitGone(d.ID)

	// the new node takes it
	e.sched.push(&commonpb.InstanceMetric{InstanceId: a.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n2"})
	got = e.waitInstance(a.ID, "running on n2", func(i workload.Instance) bool { return i.Node == "n2" })
	if got.Restarts != 1 || got.Status != workload.StatusRunning {
		t.Errorf("after reschedule: %+v", got)
	}
	// a late "node lost" from n1 does not touch it
	e.sched.push(lost(a.ID))
	e.sched.push(lost(n.ID))
	e.barrier(wl.ID)
	if got, _ := e.getInstance(a.ID); got.Value.Node != "n2" || got.Value.Restarts != 1 {
		t.Errorf("late node lost changed it: %+v", got.Value)
	}
	if o := e.sched.ordersFor(a.ID); len(o) != 2 {
		t.Errorf("%d orders for a, want 2 (create, one reschedule)", len(o))
	}
	if o := e.sched.ordersFor(n.ID); len(o) != 1 {
		t.Errorf("%d orders for the Never instance, want 1", len(o))
	}
}

func TestResubscribeAfterSchedulerRestart(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	placed := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	gone := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: placed.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: gone.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.waitInstance(gone.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })

	addr := e.sched.addr
	e.sched.stop()
	eventually(t, "healthz disconnected", func() bool {
		var h map[string]any
		e.must(200, "GET", "/healthz", nil).decode(t, &h)
		return h["scheduler"] == "disconnected"
	})
	// while the scheduler is down: create still answers 201, delete 204
	late := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if late.Value.Message != MessageSchedulerDown {
		t.Errorf("create answer while the scheduler is down: %+v", late.Value)
	}
	got := e.waitInstance(late.ID, "marked unscheduled", func(i workload.Instance) bool { return i.Message == MessageSchedulerDown })
	if got.Status != workload.StatusPending {
		t.Errorf("unscheduled instance %+v", got)
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": gone.ID})

	e.sched = startFakeScheduler(t, addr)
	e.sched.waitSubscribed(t)
	if o := e.waitOrders(placed.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "n1" {
		t.Errorf("re-sent order for placed: %v", o)
	}
	if o := e.waitOrders(late.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE || o.GetNode() != "" {
		t.Errorf("re-sent order for late: %v", o)
	}
	if o := e.waitOrders(gone.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("re-sent order for deleted: %v", o)
	}
	eventually(t, "healthz connected", func() bool {
		var h map[string]any
		e.must(200, "GET", "/healthz", nil).decode(t, &h)
		return h["scheduler"] == "connected"
	})
	// statuses flow again on the new stream
	e.sched.push(&commonpb.InstanceMetric{InstanceId: late.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n2"})
	e.waitInstance(late.ID, "late running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning && i.Message == "" })
}

func TestPeriodicResyncResendsDestroy(t *testing.T) {
	e := newEnvTuned(t, func(s *Server) { s.resyncEvery = 50 * time.Millisecond })
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	// nobody answers TERMINATED: DESTROY keeps being re-sent
	orders := e.waitOrders(in.ID, 4)
	for _, o := range orders[1:] {
		if o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
			t.Errorf("resync order %v", o)
		}
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED})
	e.waitGone(in.ID)
	// an instance left behind by its deleted workload (created during the
	// delete) is destroyed by the resync, and removed once TERMINATED
	orphan := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if err := e.st.Delete(t.Context(), "/workload/pods/default/web", store.Any); err != nil {
		t.Fatal(err)
	}
	e.waitOrders(orphan.ID, 2)
	if o := e.sched.ordersFor(orphan.ID)[1]; o.GetAction() != commonpb.WorkloadRequestKind_DESTROY {
		t.Errorf("orphan order %v", o)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: orphan.ID, Status: commonpb.ResourceStatus_TERMINATED})
	e.waitGone(orphan.ID)
	wl = e.createWorkload(podDef("web"))
	// running instances are not touched by the resync
	live := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: live.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	e.waitInstance(live.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	time.Sleep(200 * time.Millisecond)
	if o := e.sched.ordersFor(live.ID); len(o) != 1 {
		t.Errorf("resync sent %d orders for a running instance, want only its CREATE", len(o))
	}
}

func TestSchedulerRejection(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.InvalidArgument, "spec.containers[0].image: unsupported")
	e.sched.mu.Unlock()
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	got := e.waitInstance(in.ID, "failed", func(i workload.Instance) bool { return i.Status == workload.StatusFailed })
	if got.Reason != api.ReasonRejected || !strings.Contains(got.Message, "unsupported") {
		t.Errorf("rejected instance %+v", got)
	}
	// a duplicate the scheduler already has is not an error
	e.sched.mu.Lock()
	e.sched.reject = status.Error(codes.AlreadyExists, "known")
	e.sched.mu.Unlock()
	dup := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.waitOrders(dup.ID, 1)
	e.barrier(wl.ID)
	if got, _ := e.getInstance(dup.ID); got.Value.Status != workload.StatusPending || got.Value.Message != "" {
		t.Errorf("AlreadyExists changed the instance: %+v", got.Value)
	}
}

// After a (re)subscribe the desired state is re-sent only once the
// scheduler has subscribed the controller (its headers say so): the
// statuses answering the orders would be lost otherwise.
func TestResendWaitsForSubscription(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.waitOrders(in.ID, 1)

	addr := e.sched.addr
	e.sched.stop()
	e.sched = startFakeSchedulerWith(t, addr, func(f *fakeScheduler) { f.subscribeDelay = 300 * time.Millisecond })
	e.sched.waitSubscribed(t)
	if o := e.waitOrders(in.ID, 1)[0]; o.GetAction() != commonpb.WorkloadRequestKind_CREATE {
		t.Errorf("re-sent order %v", o)
	}
	e.sched.mu.Lock()
	defer e.sched.mu.Unlock()
	if e.sched.unsubscribed != 0 {
		t.Errorf("%d orders re-sent before the controller was subscribed", e.sched.unsubscribed)
	}
}
