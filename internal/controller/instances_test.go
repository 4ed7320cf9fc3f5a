package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
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

// A client that goes away while instances.create sends its orders must not
// leave stored instances that the scheduler never got and that nothing will
// ever send again (no "scheduler unreachable" mark for the resync).
func TestCreateOrdersSurviveClientGoingAway(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("gone"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	e.sched.mu.Lock()
	e.sched.onSchedule = func(o *controllerpb.WorkloadScheduling) {
		if o.GetAction() == commonpb.WorkloadRequestKind_CREATE {
			once.Do(cancel) // the client hangs up after the first order
		}
	}
	e.sched.mu.Unlock()

	body := `{"workload_id":"` + wl.ID + `","replicas":3}`
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/instances.create", strings.NewReader(body))
	e.s.api.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))

	insts, err := e.s.svc.WorkloadInstances(context.Background(), wl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 3 {
		t.Fatalf("stored %d instances, want 3", len(insts))
	}
	for _, in := range insts {
		sent := len(e.sched.ordersFor(in.ID)) > 0
		if !sent && in.Value.Message != service.MessageSchedulerDown {
			t.Errorf("instance %s: CREATE never sent and not marked for resend (%+v)", in.Name, in.Value)
		}
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

// Deleting an instance that ended on its own (a completed pod) removes it at
// once and still sends DESTROY to its node, which keeps it until told.
func TestDeleteTerminatedInstanceDestroysItOnItsNode(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podNever("job"))
	ins := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	for _, in := range ins {
		e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1",
			HasExitCode: true, Reason: api.ReasonCompleted})
		e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })
	}

	e.must(http.StatusNoContent, "POST", "/api/v0/instances.delete", map[string]string{"id": ins[0].ID})
	if _, code := e.getInstance(ins[0].ID); code != http.StatusNotFound {
		t.Errorf("terminated instance still there after delete: %d", code)
	}
	e.must(http.StatusNoContent, "POST", "/api/v0/workloads.delete", map[string]string{"id": wl.ID})
	if _, code := e.getInstance(ins[1].ID); code != http.StatusNotFound {
		t.Errorf("terminated instance still there after its workload was deleted: %d", code)
	}
	for _, in := range ins {
		var destroys []*controllerpb.WorkloadScheduling
		for _, o := range e.sched.ordersFor(in.ID) {
			if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY {
				destroys = append(destroys, o)
			}
		}
		if len(destroys) != 1 || destroys[0].GetNode() != "n1" {
			t.Errorf("%s: DESTROY orders %v, want one for node n1", in.Name, destroys)
		}
	}
}

// A client that goes away once instances.delete removed a terminated
// instance must not keep its DESTROY from being sent: nothing re-sends it.
func TestDeleteTerminatedSendsDestroyWhenClientGoesAway(t *testing.T) {
	hs := &hookStore{}
	e := newEnv(t, func(c *Config) {
		hs.Store = c.Store
		c.Store = hs
	})
	wl := e.createWorkload(podNever("job"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "n1"})
	e.waitInstance(in.ID, "terminated", func(i workload.Instance) bool { return i.Status == workload.StatusTerminated })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.mu.Lock()
	hs.onDelete = func(key string) {
		if strings.HasPrefix(key, "/instance/") {
			cancel() // the client hangs up once the record is removed
		}
	}
	hs.mu.Unlock()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/instances.delete", strings.NewReader(`{"id":"`+in.ID+`"}`))
	e.s.api.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))
	hs.mu.Lock()
	hs.onDelete = nil
	hs.mu.Unlock()

	if _, code := e.getInstance(in.ID); code != http.StatusNotFound {
		t.Fatalf("instance not removed: %d", code)
	}
	var destroys int
	for _, o := range e.sched.ordersFor(in.ID) {
		if o.GetAction() == commonpb.WorkloadRequestKind_DESTROY && o.GetNode() == "n1" {
			destroys++
		}
	}
	if destroys != 1 {
		t.Errorf("%d DESTROY orders for n1, want 1", destroys)
	}
}

// hookStore calls onPut (when set) before every Put, and onDelete after
// every Delete.
type hookStore struct {
	store.Store
	mu       sync.Mutex
	onPut    func(key string)
	onDelete func(key string)
}

func (h *hookStore) Delete(ctx context.Context, key string, rev int64) error {
	err := h.Store.Delete(ctx, key, rev)
	h.mu.Lock()
	fn := h.onDelete
	h.mu.Unlock()
	if fn != nil {
		fn(key)
	}
	return err
}

func (h *hookStore) Put(ctx context.Context, key string, value []byte, rev int64) (int64, error) {
	h.mu.Lock()
	fn := h.onPut
	h.mu.Unlock()
	if fn != nil {
		fn(key)
	}
	return h.Store.Put(ctx, key, value, rev)
}

func TestPeriodicResyncResendsDestroy(t *testing.T) {
	e := newEnvTuned(t, tuning{resyncEvery: 50 * time.Millisecond})
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
