package controller

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkInstancesCreate measures POST /api/v0/instances.create through
// the HTTP handler: validation, name generation, compare-and-set write to
// the bolt store and the CREATE order to a (fake, gRPC on 127.0.0.1)
// scheduler.
func BenchmarkInstancesCreate(b *testing.B) {
	e := newEnv(b)
	e.createWorkload(podDef("web"))
	h := e.s.Handler()
	body := `{"workload_id":"web"}`
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, e.auth(httptest.NewRequest("POST", "/api/v0/instances.create", strings.NewReader(body))))
		if rec.Code != http.StatusCreated {
			b.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkInstancesCreateParallel is the same with concurrent clients.
func BenchmarkInstancesCreateParallel(b *testing.B) {
	e := newEnv(b)
	e.createWorkload(podDef("web"))
	h := e.s.Handler()
	body := `{"workload_id":"web"}`
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, e.auth(httptest.NewRequest("POST", "/api/v0/instances.create", strings.NewReader(body))))
			if rec.Code != http.StatusCreated {
				b.Errorf("create: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}
