package controller

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPostRoutes sends arbitrary bodies to every POST route: the answer is
// never a 5xx (and nothing panics). Run longer with
// go test -fuzz FuzzPostRoutes ./internal/controller.
func FuzzPostRoutes(f *testing.F) {
	for _, seed := range []string{
		``, `null`, `[]`, `{}`, `"x"`, `{"id":null}`, `{"id":1}`, `{"workload_id":{}}`,
		`{"workload_id":"web","replicas":-1}`, `{"workload_id":"web","replicas":1e99}`,
		`{"workload_id":"web","name":""}`, `{"kind":"Pod"}`, `{"kind":"Pod","name":"a","spec":null}`,
		`{"kind":"Pod","name":"a","spec":{"containers":[null]}}`,
		`{"kind":"Function","name":"f","spec":{"function":{"execution":null}}}`,
		`{"kind":"Pod","name":"a","spec":{"containers":[{"name":"c","image":"i","ports":{"port":-5}}]}}`,
		"\x00\xff", strings.Repeat("[", 10000),
	} {
		f.Add(seed)
	}
	e := newEnv(f)
	e.createWorkload(podDef("web"))
	h := e.s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		for _, route := range []string{"workloads.create", "workloads.delete", "instances.create", "instances.delete"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v0/"+route, strings.NewReader(body)))
			if rec.Code >= 500 {
				t.Errorf("%s with %q: %d %s", route, body, rec.Code, rec.Body)
			}
		}
	})
}
