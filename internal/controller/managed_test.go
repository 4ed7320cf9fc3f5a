package controller

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/internal/controller/httpapi"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/workload"
)

const managedYAML = `apiVersion: v1
kind: Pod
name: web
replicas: 2
spec:
  containers:
  - name: web
    image: IMAGE
    env:
    - {name: TOKEN, value: s3cret-value}
`

func (e *env) apply(yaml string, code int) api.Applied[workload.Workload] {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.http.URL+"/api/v0/workloads.apply", strings.NewReader(yaml))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := e.http.Client().Do(e.auth(req))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res api.Applied[workload.Workload]
	r := response{code: resp.StatusCode, hdr: resp.Header}
	if r.body, err = io.ReadAll(resp.Body); err != nil {
		e.t.Fatal(err)
	}
	if r.code != code {
		e.t.Fatalf("apply: %d %s, want %d", r.code, r.body, code)
	}
	r.decode(e.t, &res)
	return res
}

// runInstances answers every order the fake scheduler got for web with
// RUNNING (CREATE) or TERMINATED (DESTROY).
func (e *env) runInstances(workloadID string) {
	e.t.Helper()
	var insts []instanceRecord
	e.must(200, "GET", "/api/v0/workloads.instances/"+workloadID, nil).decode(e.t, &insts)
	for _, in := range insts {
		st := commonpb.ResourceStatus_RUNNING
		if in.Value.DeleteRequested {
			st = commonpb.ResourceStatus_TERMINATED
		}
		e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, WorkloadId: workloadID, Status: st, Node: "n1", Ready: st == commonpb.ResourceStatus_RUNNING})
	}
}

func (e *env) rollout(ref string) api.Rollout {
	e.t.Helper()
	var r api.Rollout
	e.must(200, "GET", "/api/v0/workloads.rollout/"+ref, nil).decode(e.t, &r)
	return r
}

// Through the REST API, the gRPC link and the reconciler the controller
// runs: apply (YAML) keeps replicas, a new image rolls out, history and
// undo, scale; readiness comes from InstanceMetric.ready.
func TestApplyRolloutOverREST(t *testing.T) {
	e := newEnv(t)
	res := e.apply(strings.Replace(managedYAML, "IMAGE", "nginx:1", 1), http.StatusCreated)
	if res.Revision != 1 || !res.Changed {
		t.Fatalf("apply: %+v", res)
	}
	id := res.Workload.ID
	eventually(t, "2 instances created by the reconciler", func() bool {
		var insts []instanceRecord
		e.must(200, "GET", "/api/v0/workloads.instances/"+id, nil).decode(t, &insts)
		return len(insts) == 2 && len(e.sched.ordersFor(insts[1].ID)) == 1
	})
	e.runInstances(id)
	eventually(t, "rollout complete", func() bool { return e.rollout("web").Phase == api.RolloutComplete })
	if again := e.apply(strings.Replace(managedYAML, "IMAGE", "nginx:1", 1), http.StatusOK); again.Changed {
		t.Fatalf("identical apply: %+v", again)
	}

	e.apply(strings.Replace(managedYAML, "IMAGE", "nginx:2", 1), http.StatusOK)
	eventually(t, "rollout of revision 2 complete", func() bool {
		e.runInstances(id)
		r := e.rollout("web")
		if r.Ready < 2 {
			t.Fatalf("%d ready during the rollout, want >= 2", r.Ready)
		}
		return r.Revision == 2 && r.Phase == api.RolloutComplete
	})

	var hist []api.Revision[workload.Workload]
	e.must(200, "GET", "/api/v0/workloads.history/web", nil).decode(t, &hist)
	if len(hist) != 2 || hist[0].Definition.Spec.Containers[0].Image != "nginx:1" || !hist[1].Current {
		t.Fatalf("history %+v", hist)
	}
	viewer := e.newTokenFor(service.RoleViewer)
	r := e.as(viewer, "GET", "/api/v0/workloads.history/web", nil)
	r.decode(t, &hist)
	if r.code != 200 || strings.Contains(string(r.body), "s3cret") || hist[0].Definition.Spec.Containers[0].Env[0].Value != httpapi.RedactedValue {
		t.Fatalf("viewer's history: %d %s", r.code, r.body)
	}
	if r := e.as(viewer, "POST", "/api/v0/workloads.scale", `{"id":"web","replicas":1}`); r.code != http.StatusForbidden {
		t.Fatalf("viewer scales: %d", r.code)
	}

	var undone api.Applied[workload.Workload]
	e.must(200, "POST", "/api/v0/workloads.undo", `{"id":"web"}`).decode(t, &undone)
	if undone.Revision != 3 || undone.Workload.Value.Spec.Containers[0].Image != "nginx:1" {
		t.Fatalf("undo: %+v", undone)
	}
	var scaled api.Rollout
	e.must(200, "POST", "/api/v0/workloads.scale", `{"id":"web","replicas":3}`).decode(t, &scaled)
	if scaled.Replicas != 3 {
		t.Fatalf("scale: %+v", scaled)
	}
	eventually(t, "3 of revision 3 available", func() bool {
		e.runInstances(id)
		r := e.rollout("web")
		return r.Revision == 3 && r.Available == 3 && r.Phase == api.RolloutComplete
	})
	var all []api.Rollout
	e.must(200, "GET", "/api/v0/workloads.rollouts", nil).decode(t, &all)
	if len(all) != 1 || all[0].Workload != "web" {
		t.Fatalf("rollouts %+v", all)
	}
}

func TestApplyErrorsOverREST(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		a := DefaultAdmission()
		a.MaxInstances = 10
		c.Admission = &a
	})
	e.createWorkload(podDef("plain"))
	tests := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"replicas above the cap", "POST", "/api/v0/workloads.apply", `{"kind":"Pod","name":"a","replicas":11,"spec":{"containers":[{"name":"c","image":"i"}]}}`, 400, "replicas: must be at most 10"},
		{"negative replicas", "POST", "/api/v0/workloads.apply", `{"kind":"Pod","name":"a","replicas":-1,"spec":{"containers":[{"name":"c","image":"i"}]}}`, 400, "replicas:"},
		{"no progress", "POST", "/api/v0/workloads.apply", `{"kind":"Pod","name":"a","update":{"maxSurge":0,"maxUnavailable":0},"spec":{"containers":[{"name":"c","image":"i"}]}}`, 400, "update: maxSurge and maxUnavailable cannot both be 0"},
		{"probe port not exposed", "POST", "/api/v0/workloads.apply", `{"kind":"Pod","name":"a","spec":{"containers":[{"name":"c","image":"i","ports":[{"port":8080,"targetPort":80}],"healthcheck":{"readiness":{"http":{"port":8080}}}}]}}`, 400, "spec.containers[0].healthcheck.readiness.http.port: port 8080 is not exposed"},
		{"not JSON", "POST", "/api/v0/workloads.apply", `{`, 400, "JSON"},
		{"scale unmanaged", "POST", "/api/v0/workloads.scale", `{"id":"plain","replicas":2}`, 409, "unmanaged"},
		{"scale missing", "POST", "/api/v0/workloads.scale", `{"id":"nope","replicas":2}`, 404, "nope"},
		{"scale without replicas", "POST", "/api/v0/workloads.scale", `{"id":"plain"}`, 400, "replicas: required"},
		{"rollout unmanaged", "GET", "/api/v0/workloads.rollout/plain", "", 409, "unmanaged"},
		{"history missing", "GET", "/api/v0/workloads.history/nope", "", 404, "nope"},
		{"undo unmanaged", "POST", "/api/v0/workloads.undo", `{"id":"plain"}`, 409, "unmanaged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.body != "" {
				body = tt.body
			}
			r := e.do(tt.method, tt.path, body)
			if r.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", r.code, r.body, tt.code)
			}
			if msg := r.errorText(t); !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
		})
	}
}
