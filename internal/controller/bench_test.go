package controller

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkInstancesCreate measures POST /api/v0/instances.create through
// the HTTP handler: validation, name generation, compare-and-set write to
// the bolt store and the CREATE order to a (fake, gRPC on 127.0.0.1)
// scheduler. The caps on instances are on, high enough never to refuse:
// their counting (a store listing every second) is part of the cost.
func BenchmarkInstancesCreate(b *testing.B) {
	e := newEnv(b, withHugeQuotas)
	e.createWorkload(podDef("web"))
	h := e.s.api.Handler()
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
	e := newEnv(b, withHugeQuotas)
	e.createWorkload(podDef("web"))
	h := e.s.api.Handler()
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

// BenchmarkInstancesCreateServed measures POST /api/v0/instances.create
// through the real server (Run) over loopback TCP, 8 clients with
// keep-alive connections, in the same run: plain HTTP without tokens
// (insecure), and HTTPS (TLS 1.3, HTTP/2) with a bearer token checked on
// every request.
//
//	go test -run '^$' -bench InstancesCreateServed -benchtime 3s -count 3 ./internal/controller/
func BenchmarkInstancesCreateServed(b *testing.B) {
	for _, mode := range []struct {
		name string
		tls  bool
	}{{"plain-insecure", false}, {"https-token", true}} {
		b.Run(mode.name, func(b *testing.B) {
			r := runController(b, mode.tls, func(c *Config) { c.Insecure = !mode.tls })
			tr := r.client.Transport
			if tr == nil {
				tr = &http.Transport{}
			}
			tr.(*http.Transport).MaxIdleConnsPerHost = 8
			post := func(path, body string) *http.Response {
				req, _ := http.NewRequest("POST", r.url+path, strings.NewReader(body))
				if r.token != "" {
					req.Header.Set("Authorization", "Bearer "+r.token)
				}
				resp, err := r.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp
			}
			if resp := post("/api/v0/workloads.create", podDef("web")); resp.StatusCode != http.StatusCreated {
				b.Fatalf("workloads.create: %s", resp.Status)
			}
			b.SetParallelism(4) // 2 cores: 8 clients
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if resp := post("/api/v0/instances.create", `{"workload_id":"web"}`); resp.StatusCode != http.StatusCreated {
						b.Errorf("create: %s", resp.Status)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
		})
	}
}
