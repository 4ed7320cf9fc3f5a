package controller

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// Fuzz targets, one per POST route: arbitrary bodies go through the whole
// handler (authorization with an admin token included); nothing panics
// and the answer is one of the route's documented statuses. Run one longer
// with, e.g.:
//
//	go test -run '^$' -fuzz '^FuzzInstancesCreate$' -fuzztime 1000000x ./internal/controller

// fuzzSeeds are bodies shaped like every route's, and broken ones.
var fuzzSeeds = []string{
	``, `null`, `[]`, `{}`, `"x"`, `{"id":null}`, `{"id":1}`, `{"id":"web"}`, `{"id":"web"} {}`,
	`{"workload_id":{}}`, `{"workload_id":"web"}`, `{"workload_id":"web","replicas":-1}`,
	`{"workload_id":"web","replicas":1e99}`, `{"workload_id":"web","replicas":3}`,
	`{"workload_id":"web","name":""}`, `{"workload_id":"web","name":"x-1"}`,
	`{"kind":"Pod"}`, `{"kind":"Pod","name":"a","spec":null}`,
	`{"kind":"Pod","name":"a","spec":{"containers":[null]}}`,
	`{"kind":"Pod","name":"a","spec":{"containers":[{"name":"c","image":"i","env":[{"name":"K","value":"v"}]}]}}`,
	`{"kind":"Function","name":"f","spec":{"function":{"execution":null}}}`,
	`{"kind":"Pod","name":"a","spec":{"containers":[{"name":"c","image":"i","ports":{"port":-5}}]}}`,
	`{"role":"viewer"}`, `{"role":"admin","description":"d","ttl":"24h"}`, `{"role":"viewer","ttl":"-1s"}`,
	`{"role":"operator","ttl":"9999999h"}`, `{"id":"web","replicas":2}`, `{"id":"web","replicas":-3}`, `{"id":"web","revision":1}`,
	`{"kind":"Pod","name":"web","update":{"maxSurge":0,"maxUnavailable":0},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
	`{"kind":"Pod","name":"web","spec":{"containers":[{"name":"c","image":"i","healthcheck":{"readiness":{"tcp":{"port":80},"exec":{}}}}]}}`, `{"id":"rik_aaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaa"}`, `{"id":"aaaaaaaaaa"}`,
	"\x00\xff", strings.Repeat("[", 10000),
}

// fuzzRoute fuzzes POST /api/v0/route; want lists the statuses allowed.
func fuzzRoute(f *testing.F, route string, want ...int) {
	for _, seed := range fuzzSeeds {
		f.Add(seed)
	}
	e := newEnv(f)
	e.createWorkload(podDef("web"))
	h := e.s.api.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, e.auth(httptest.NewRequest("POST", "/api/v0/"+route, strings.NewReader(body))))
		if !slices.Contains(want, rec.Code) {
			t.Errorf("%s with %q: %d %s, want one of %v", route, body, rec.Code, rec.Body, want)
		}
	})
}

func FuzzWorkloadsCreate(f *testing.F) { fuzzRoute(f, "workloads.create", 201, 400, 409, 413) }
func FuzzWorkloadsDelete(f *testing.F) { fuzzRoute(f, "workloads.delete", 204, 400, 404, 413) }

// 429: admission's instance quotas.
func FuzzInstancesCreate(f *testing.F) {
	fuzzRoute(f, "instances.create", 201, 400, 404, 409, 413, 429)
}
func FuzzInstancesDelete(f *testing.F) { fuzzRoute(f, "instances.delete", 204, 400, 404, 413) }
func FuzzTokensCreate(f *testing.F)    { fuzzRoute(f, "tokens.create", 201, 400, 413) }

// 409: the last admin token.
func FuzzTokensDelete(f *testing.F) { fuzzRoute(f, "tokens.delete", 204, 400, 404, 409, 413) }

// Managed workloads: 409 for an unmanaged one (or no earlier revision).
func FuzzWorkloadsApply(f *testing.F) { fuzzRoute(f, "workloads.apply", 200, 201, 400, 413) }
func FuzzWorkloadsScale(f *testing.F) { fuzzRoute(f, "workloads.scale", 200, 400, 404, 409, 413) }
func FuzzWorkloadsUndo(f *testing.F)  { fuzzRoute(f, "workloads.undo", 200, 400, 404, 409, 413) }

// Every POST route has a fuzz target above.
func TestEveryPostRouteFuzzed(t *testing.T) {
	fuzzed := []string{"workloads.create", "workloads.delete", "instances.create", "instances.delete", "tokens.create", "tokens.delete",
		"workloads.apply", "workloads.scale", "workloads.undo"}
	for p := range documentedRoutes(t) {
		if route, ok := strings.CutPrefix(p, "POST /api/v0/"); ok && !slices.Contains(fuzzed, route) {
			t.Errorf("POST route %s has no fuzz target", route)
		}
	}
}
