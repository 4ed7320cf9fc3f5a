package controller

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

func TestWorkloadsCreate(t *testing.T) {
	e := newEnv(t)
	rec := e.createWorkload(podDef("web"))
	if _, err := uuid.Parse(rec.ID); err != nil {
		t.Errorf("id %q is not a UUID: %v", rec.ID, err)
	}
	if rec.Name != "web" || rec.Value.Name != "web" {
		t.Errorf("name = %q / %q, want web", rec.Name, rec.Value.Name)
	}
	if rec.Value.Kind != workload.KindPod || rec.Value.RestartPolicy != workload.RestartAlways || rec.Value.APIVersion != "v1" {
		t.Errorf("defaults not applied: %+v", rec.Value)
	}

	// stored under RIK's key layout with the {id,name,value} envelope
	kv, err := e.st.Get(t.Context(), "/workload/pods/default/web")
	if err != nil {
		t.Fatalf("stored key: %v", err)
	}
	if !strings.Contains(string(kv.Value), `"id":"`+rec.ID+`"`) {
		t.Errorf("stored value %s lacks the id", kv.Value)
	}

	fn := e.createWorkload(`{"kind":"Function","name":"fn","spec":{"function":{"execution":{"rootfs":"http://127.0.0.1/rootfs.ext4"}}}}`)
	if _, err := e.st.Get(t.Context(), "/workload/function/default/fn"); err != nil {
		t.Errorf("function key: %v", err)
	}
	if fn.Value.Kind != workload.KindFunction {
		t.Errorf("kind = %q", fn.Value.Kind)
	}
}

func TestWorkloadsCreateErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	e.createWorkload(podDef("web"))
	tests := []struct {
		name string
		body string
		code int
		want string
	}{
		{"missing image", `{"kind":"Pod","name":"a","spec":{"containers":[{"name":"c"}]}}`, 400, "spec.containers[0].image"},
		{"bad kind", `{"kind":"Vm","name":"a","spec":{}}`, 400, "kind"},
		{"bad name", podDef("Not_A_Label"), 400, "name"},
		{"not json", `{`, 400, "JSON"},
		{"wrong type", `{"kind":"Pod","name":"a","replicas":"x","spec":{"containers":[{"name":"c","image":"i"}]}}`, 400, "replicas"},
		{"duplicate name", podDef("web"), 409, "web"},
		{"duplicate name across kinds", `{"kind":"Function","name":"web","spec":{"function":{"execution":{"rootfs":"http://127.0.0.1/r"}}}}`, 409, "web"},
		{"too large", `{"kind":"Pod","name":"big","x":"` + strings.Repeat("a", 5000) + `"}`, 413, "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v0/workloads.create", tt.body)
			if r.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", r.code, r.body, tt.code)
			}
			if msg := r.errorText(t); !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
		})
	}
	var list []workloadRecord
	e.must(200, "GET", "/api/v0/workloads.list", nil).decode(t, &list)
	if len(list) != 1 {
		t.Errorf("failed creates stored something: %d workloads", len(list))
	}
}

func TestWorkloadsList(t *testing.T) {
	e := newEnv(t)
	var list []workloadRecord
	r := e.must(200, "GET", "/api/v0/workloads.list", nil)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("empty list = %s, want []", r.body)
	}
	a := e.createWorkload(podDef("a"))
	b := e.createWorkload(podDef("b"))
	e.must(200, "GET", "/api/v0/workloads.list", nil).decode(t, &list)
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID || list[1].Value.Name != "b" {
		t.Errorf("list = %+v", list)
	}
}

func TestWorkloadInstances(t *testing.T) {
	e := newEnv(t)
	a := e.createWorkload(podDef("a"))
	b := e.createWorkload(podDef("b"))
	e.createInstances(map[string]any{"workload_id": a.ID, "replicas": 2})
	e.createInstances(map[string]any{"workload_id": "b"})
	for _, ref := range []string{a.ID, "a"} {
		var insts []instanceRecord
		e.must(200, "GET", "/api/v0/workloads.instances/"+ref, nil).decode(t, &insts)
		if len(insts) != 2 {
			t.Fatalf("instances of a by %s: %d, want 2", ref, len(insts))
		}
		for _, i := range insts {
			if i.Value.WorkloadID != a.ID {
				t.Errorf("instance %s belongs to %s", i.Name, i.Value.WorkloadID)
			}
		}
	}
	var insts []instanceRecord
	e.must(200, "GET", "/api/v0/workloads.instances/"+b.ID, nil).decode(t, &insts)
	if len(insts) != 1 {
		t.Errorf("instances of b: %d", len(insts))
	}
	e.createWorkload(podDef("empty"))
	if r := e.must(200, "GET", "/api/v0/workloads.instances/empty", nil); strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("no instances: %s, want []", r.body)
	}
	r := e.must(404, "GET", "/api/v0/workloads.instances/nope", nil)
	if !strings.Contains(r.errorText(t), "nope") {
		t.Errorf("404 text %s", r.body)
	}
}

func TestWorkloadsDeleteCascade(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	other := e.createWorkload(podDef("other"))
	insts := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	keep := e.createInstances(map[string]any{"workload_id": other.ID})[0]
	placed, unplaced := insts[0], insts[1]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: placed.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "node-a"})
	e.waitInstance(placed.ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })

	e.must(204, "POST", "/api/v0/workloads.delete", map[string]string{"id": "web"})

	// the workload is gone at once
	e.must(404, "GET", "/api/v0/workloads.instances/"+wl.ID, nil)
	var list []workloadRecord
	e.must(200, "GET", "/api/v0/workloads.list", nil).decode(t, &list)
	if len(list) != 1 || list[0].ID != other.ID {
		t.Errorf("workloads after delete: %+v", list)
	}
	// instances go DESTROYING, with DESTROY sent (node hint for the placed one)
	for _, in := range insts {
		got, code := e.getInstance(in.ID)
		if code != 200 || got.Value.Status != workload.StatusDestroying || !got.Value.DeleteRequested {
			t.Errorf("instance %s after delete: %d %+v", in.Name, code, got.Value)
		}
		orders := e.waitOrders(in.ID, 2)
		last := orders[len(orders)-1]
		if last.GetAction() != commonpb.WorkloadRequestKind_DESTROY || last.GetWorkloadId() != wl.ID {
			t.Errorf("last order for %s: %v", in.Name, last)
		}
	}
	if n := e.sched.ordersFor(placed.ID); n[len(n)-1].GetNode() != "node-a" {
		t.Errorf("destroy node hint = %q", n[len(n)-1].GetNode())
	}
	// a late RUNNING does not resurrect it
	e.sched.push(&commonpb.InstanceMetric{InstanceId: placed.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "node-a"})
	// scheduler answers TERMINATED for the unplaced one, the node for the other
	e.sched.push(&commonpb.InstanceMetric{InstanceId: unplaced.ID, Status: commonpb.ResourceStatus_TERMINATED})
	e.waitGone(unplaced.ID)
	if got, _ := e.getInstance(placed.ID); got.Value.Status != workload.StatusDestroying {
		t.Errorf("placed instance status %s, want DESTROYING", got.Value.Status)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: placed.ID, Status: commonpb.ResourceStatus_TERMINATED, Node: "node-a"})
	e.waitGone(placed.ID)
	if _, code := e.getInstance(keep.ID); code != 200 {
		t.Errorf("instance of another workload removed: %d", code)
	}
}

// A client that goes away during workloads.delete must not leave the
// workload half deleted: still listed, some of its instances being
// destroyed and the others left running.
func TestDeleteWorkloadCompletesWhenClientGoesAway(t *testing.T) {
	hs := &hookStore{}
	e := newEnv(t, func(c *Config) {
		hs.Store = c.Store
		c.Store = hs
	})
	wl := e.createWorkload(podDef("half"))
	e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 3})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs.mu.Lock()
	puts := 0
	hs.onPut = func(key string) {
		if strings.HasPrefix(key, "/instance/") {
			if puts++; puts == 2 {
				cancel() // the client hangs up once the first instance is marked
			}
		}
	}
	hs.mu.Unlock()
	req := httptest.NewRequestWithContext(ctx, "POST", "/api/v0/workloads.delete", strings.NewReader(`{"id":"`+wl.ID+`"}`))
	e.s.api.Handler().ServeHTTP(httptest.NewRecorder(), e.auth(req))
	hs.mu.Lock()
	hs.onPut = nil
	hs.mu.Unlock()

	_, werr := e.s.svc.WorkloadInstances(context.Background(), wl.ID)
	all, err := e.s.svc.ListInstances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var insts []instanceRecord
	marked := 0
	for _, in := range all {
		if in.Value.WorkloadID != wl.ID {
			continue
		}
		insts = append(insts, in)
		if in.Value.DeleteRequested {
			marked++
		}
	}
	if len(insts) != 3 {
		t.Fatalf("%d instances of the workload, want 3", len(insts))
	}
	gone := errors.Is(werr, errdefs.ErrNotFound)
	if !(gone && marked == len(insts)) && !(!gone && marked == 0) {
		t.Errorf("half-deleted workload: workload gone=%v, %d of %d instances marked for deletion", gone, marked, len(insts))
	}
}

func TestWorkloadsDeleteErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 100 })
	tests := []struct {
		name string
		body string
		code int
		want string
	}{
		{"unknown", `{"id":"nope"}`, 404, "nope"},
		{"missing id", `{}`, 400, "id: required"},
		{"unknown field", `{"id":"x","force":true}`, 400, "force"},
		{"not json", `nope`, 400, "JSON"},
		{"trailing", `{"id":"x"} {}`, 400, "trailing"},
		{"too large", `{"id":"` + strings.Repeat("x", 200) + `"}`, 413, "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v0/workloads.delete", tt.body)
			if r.code != tt.code || !strings.Contains(r.errorText(t), tt.want) {
				t.Errorf("got %d %s, want %d mentioning %q", r.code, r.body, tt.code, tt.want)
			}
		})
	}
}

func TestMethodAndRouteErrors(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/api/v0/workloads.create", nil)
	if r.code != http.StatusMethodNotAllowed || r.hdr.Get("Allow") == "" || r.errorText(t) != "method not allowed" {
		t.Errorf("GET on a POST route: %d %v %s", r.code, r.hdr, r.body)
	}
	r = e.do("GET", "/api/v0/nothing", nil)
	if r.code != 404 || !strings.Contains(r.errorText(t), "no such route") {
		t.Errorf("unknown route: %d %s", r.code, r.body)
	}
}
