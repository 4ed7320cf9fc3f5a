package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	ten := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p0 is min", ten, 0, 1 * time.Millisecond},
		{"p50 of 10", ten, 50, 5 * time.Millisecond},
		{"p90 of 10", ten, 90, 9 * time.Millisecond},
		{"p99 of 10", ten, 99, 10 * time.Millisecond},
		{"p100 is max", ten, 100, 10 * time.Millisecond},
		{"p25 of 4", ms(1, 2, 3, 4), 25, 1 * time.Millisecond},
		{"p26 of 4", ms(1, 2, 3, 4), 26, 2 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ok := Config{Server: "http://h:1/", Workload: "w", Requests: 1, Concurrency: 1, Replicas: 1}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"server", func(c *Config) { c.Server = "h:1" }, "--server"},
		{"workload", func(c *Config) { c.Workload = "" }, "--workload"},
		{"requests", func(c *Config) { c.Requests = 0 }, "-n"},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }, "-c"},
		{"replicas", func(c *Config) { c.Replicas = 1001 }, "--replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.check()
			if tc.want == "" {
				if err != nil || c.Server != "http://h:1" {
					t.Fatalf("check: %v, server %q", err, c.Server)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// fakeController is a stateful stand-in for the controller's routes that
// rikload uses; every failEvery-th create fails with 503.
type fakeController struct {
	mu        sync.Mutex
	workloads map[string]bool
	instances map[string]bool
	creates   int
	failEvery int
	token     string // required as a bearer token when set
}

func (f *fakeController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch r.URL.Path {
	case "/api/v0/workloads.create":
		f.workloads[fmt.Sprint(body["name"])] = true
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{}`)
	case "/api/v0/instances.create":
		f.creates++
		if f.failEvery > 0 && f.creates%f.failEvery == 0 {
			http.Error(w, `{"error":"scheduler unreachable"}`, http.StatusServiceUnavailable)
			return
		}
		if !f.workloads[fmt.Sprint(body["workload_id"])] {
			http.Error(w, `{"error":"workload not found"}`, http.StatusNotFound)
			return
		}
		n := int(body["replicas"].(float64))
		var items []map[string]string
		for i := range n {
			id := fmt.Sprintf("id-%d-%d", f.creates, i)
			f.instances[id] = true
			items = append(items, map[string]string{"id": id})
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(items)
	case "/api/v0/instances.delete":
		id := fmt.Sprint(body["id"])
		if !f.instances[id] {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		delete(f.instances, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func TestRun(t *testing.T) {
	fake := &fakeController{workloads: map[string]bool{}, instances: map[string]bool{}, failEvery: 10}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	def := filepath.Join(t.TempDir(), "w.json")
	if err := os.WriteFile(def, []byte(`{"name":"web"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := Run(context.Background(), Config{
		Server: srv.URL, Workload: "web", DefinitionFile: def,
		Requests: 50, Concurrency: 4, Replicas: 2, Out: &out,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if fake.creates != 50 {
		t.Errorf("%d creates, want 50", fake.creates)
	}
	if len(fake.instances) != 90 {
		t.Errorf("%d instances, want 90 (45 successful requests x 2)", len(fake.instances))
	}
	for _, want := range []string{"requests: 50", "errors: 5", "instances created: 90", "p50", "p99", "first error:", "503"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	// --cleanup deletes what the run created.
	fake.failEvery = 0
	if err := Run(context.Background(), Config{Server: srv.URL, Workload: "web", Requests: 5, Concurrency: 2, Replicas: 1, Cleanup: true}); err != nil {
		t.Fatalf("Run with cleanup: %v", err)
	}
	if len(fake.instances) != 90 {
		t.Errorf("after a cleaned-up run: %d instances, want the 90 of the first run", len(fake.instances))
	}

	// A run where everything fails is an error.
	err = Run(context.Background(), Config{Server: srv.URL, Workload: "nope", Requests: 3, Concurrency: 1, Replicas: 1})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Run on a missing workload: %v, want a 404 error", err)
	}
}

// Against an HTTPS controller with tokens: the CA file and the token are
// used; without the token every request fails.
func TestRunHTTPSWithToken(t *testing.T) {
	fake := &fakeController{workloads: map[string]bool{"web": true}, instances: map[string]bool{}, token: "rik_tok"}
	srv := httptest.NewTLSServer(fake)
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Server: srv.URL, Workload: "web", Requests: 10, Concurrency: 2, Replicas: 1, CAFile: ca, Token: "rik_tok", Timeout: 10 * time.Second}
	if err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("Run over HTTPS with the token: %v", err)
	}
	if len(fake.instances) != 10 {
		t.Errorf("%d instances", len(fake.instances))
	}
	cfg.Token = ""
	if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("without the token: %v", err)
	}
	cfg.Token, cfg.CAFile = "rik_tok", ""
	if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v", err)
	}
}
