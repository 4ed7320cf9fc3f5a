package controller

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/workload"
)

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	data string
}

// readEvents parses SSE from r into a channel until r ends.
func readEvents(r io.Reader) <-chan sseEvent {
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ch <- sseEvent{name: "comment", data: line}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

// nextInstanceEvent returns the next "instance" event for id.
func nextInstanceEvent(t *testing.T, ch <-chan sseEvent, id string) instanceRecord {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event stream ended")
			}
			if ev.name != "instance" {
				continue
			}
			var rec instanceRecord
			if err := json.Unmarshal([]byte(ev.data), &rec); err != nil {
				t.Fatalf("event data %q: %v", ev.data, err)
			}
			if rec.ID == id {
				return rec
			}
		case <-timeout:
			t.Fatalf("no event for %s", id)
		}
	}
}

func TestEvents(t *testing.T) {
	e := newEnvTuned(t, func(s *Server) { s.keepaliveEvery = 50 * time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/api/v0/events", nil)
	resp, err := e.http.Client().Do(e.auth(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := readEvents(resp.Body)
	eventually(t, "subscriber registered", func() bool { return e.s.events.count() == 1 })

	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusPending || ev.Name != in.Name {
		t.Errorf("first event %+v", ev)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_RUNNING, Node: "n1"})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusRunning || ev.Value.Node != "n1" {
		t.Errorf("running event %+v", ev)
	}
	e.must(204, "POST", "/api/v0/instances.delete", map[string]string{"id": in.ID})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusDestroying {
		t.Errorf("destroying event %+v", ev)
	}
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_TERMINATED})
	if ev := nextInstanceEvent(t, ch, in.ID); ev.Value.Status != workload.StatusTerminated {
		t.Errorf("removal event %+v", ev)
	}
	// keepalive comments arrive
	deadline := time.After(5 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-ch:
			seen = ev.name == "comment" && strings.Contains(ev.data, "keepalive")
		case <-deadline:
			t.Fatal("no keepalive")
		}
	}
	cancel()
	eventually(t, "subscriber gone", func() bool { return e.s.events.count() == 0 })
}

func TestBrokerDropsSlowSubscriber(t *testing.T) {
	b := newBroker()
	slow, _ := b.subscribe()
	fast, unsub := b.subscribe()
	defer unsub()
	for i := range subscriberBuffer + 1 {
		b.publish([]byte{byte(i)})
		<-fast
	}
	if b.count() != 1 {
		t.Fatalf("subscribers = %d, want 1 (slow one dropped)", b.count())
	}
	n := 0
	for range slow {
		n++
	}
	if n != subscriberBuffer {
		t.Errorf("slow subscriber got %d buffered events before close, want %d", n, subscriberBuffer)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	e.do("POST", "/api/v0/workloads.create", podDef("web")) // 409
	in := e.createInstances(map[string]any{"workload_id": wl.ID, "replicas": 2})
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in[0].ID, Status: commonpb.ResourceStatus_RUNNING})
	e.waitInstance(in[0].ID, "running", func(i workload.Instance) bool { return i.Status == workload.StatusRunning })
	var body string
	eventually(t, "metrics", func() bool {
		body = string(e.must(200, "GET", "/metrics", nil).body)
		return strings.Contains(body, `rik_controller_instances{status="RUNNING"} 1`) &&
			strings.Contains(body, `rik_controller_instances{status="PENDING"} 1`)
	})
	for _, want := range []string{
		`rik_controller_http_requests_total{code="201",route="POST /api/v0/workloads.create"} 1`,
		`rik_controller_http_requests_total{code="409",route="POST /api/v0/workloads.create"} 1`,
		`rik_controller_http_request_duration_seconds_count{route="POST /api/v0/instances.create"} 1`,
		`rik_controller_scheduler_connected 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestNodesList(t *testing.T) {
	e := newEnvTuned(t, func(s *Server) { s.nodesEvery, s.nodesKick = time.Hour, nil }) // nothing stored
	e.sched.mu.Lock()
	e.sched.nodes = []*controllerpb.Node{{
		Name: "n1", Status: "Ready", Address: "10.0.0.1", Instances: 3, Load1: 0.5,
		Capacity:            &commonpb.Resources{CpuMillis: 4000, MemoryMib: 8192, DiskMib: 100000},
		Usage:               &commonpb.Resources{CpuMillis: 1000, MemoryMib: 2048},
		Allocated:           &commonpb.Resources{CpuMillis: 500, MemoryMib: 256},
		Kinds:               []string{"pod", "function"},
		Labels:              map[string]string{"zone": "a"},
		LastHeartbeatUnixMs: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli(),
	}, {Name: "n2", Status: "NotReady"}}
	e.sched.mu.Unlock()

	var items []struct {
		ID    string   `json:"id"`
		Name  string   `json:"name"`
		Value NodeView `json:"value"`
	}
	e.must(200, "GET", "/api/v0/nodes.list", nil).decode(t, &items)
	if len(items) != 2 || items[0].ID != "n1" || items[0].Name != "n1" {
		t.Fatalf("items %+v", items)
	}
	v := items[0].Value
	if v.Status != "Ready" || v.Capacity.CPU != 4000 || v.Capacity.Memory != 8192 || v.Capacity.Disk != 100000 ||
		v.Usage.Memory != 2048 || v.Allocated.CPU != 500 || v.Kinds[1] != "function" || v.Labels["zone"] != "a" ||
		v.Address != "10.0.0.1" || v.Instances != 3 || v.Load1 != 0.5 || v.LastHeartbeat != "2026-01-02T03:04:05Z" {
		t.Errorf("node view %+v", v)
	}
	if items[1].Value.Kinds == nil || items[1].Value.Labels == nil {
		t.Errorf("empty kinds/labels must be [] / {}: %+v", items[1].Value)
	}

	e.sched.stop()
	r := e.do("GET", "/api/v0/nodes.list", nil)
	if r.code != 503 || r.errorText(t) != "scheduler unreachable" {
		t.Errorf("scheduler down, no stored nodes: %d %s", r.code, r.body)
	}
}

func TestInstanceLogs(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	var seen *commonpb.LogRequest
	var mu sync.Mutex
	e.sched.mu.Lock()
	e.sched.logs = func(req *commonpb.LogRequest, stream grpc.ServerStreamingServer[commonpb.LogChunk]) error {
		mu.Lock()
		seen = req
		mu.Unlock()
		switch req.GetContainer() {
		case "missing":
			return status.Error(codes.NotFound, "no container missing")
		case "down":
			return status.Error(codes.Unavailable, "node unreachable")
		case "slow":
			if err := stream.Send(&commonpb.LogChunk{Data: []byte("line 1\n")}); err != nil {
				return err
			}
			return status.Error(codes.ResourceExhausted, "log reader too slow, request cancelled")
		}
		for _, s := range []string{"line 1\n", "line 2\n"} {
			if err := stream.Send(&commonpb.LogChunk{Data: []byte(s)}); err != nil {
				return err
			}
		}
		return stream.Send(&commonpb.LogChunk{Eof: true})
	}
	e.sched.mu.Unlock()

	r := e.must(200, "GET", "/api/v0/instances.logs/"+in.Name+"?container=web&follow=false&tail=10", nil)
	if string(r.body) != "line 1\nline 2\n" || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
		t.Errorf("logs %q %s", r.body, r.hdr.Get("Content-Type"))
	}
	mu.Lock()
	if seen.GetInstanceId() != in.ID || seen.GetContainer() != "web" || seen.GetTail() != 10 || seen.GetFollow() {
		t.Errorf("log request %v", seen)
	}
	mu.Unlock()
	// An error after the body started is told at its end, not only logged.
	r = e.must(200, "GET", "/api/v0/instances.logs/"+in.Name+"?container=slow", nil)
	if want := "line 1\n\n[log stream error: log reader too slow, request cancelled]\n"; string(r.body) != want {
		t.Errorf("logs cut mid-stream: %q, want %q", r.body, want)
	}
	e.must(404, "GET", "/api/v0/instances.logs/nope", nil)
	e.must(404, "GET", "/api/v0/instances.logs/"+in.ID+"?container=missing", nil)
	e.must(503, "GET", "/api/v0/instances.logs/"+in.ID+"?container=down", nil)
	e.must(400, "GET", "/api/v0/instances.logs/"+in.ID+"?tail=-1", nil)
	e.must(400, "GET", "/api/v0/instances.logs/"+in.ID+"?follow=maybe", nil)
	e.sched.stop()
	e.must(503, "GET", "/api/v0/instances.logs/"+in.ID, nil)
}

func TestHealthAndDocs(t *testing.T) {
	e := newEnv(t)
	var h map[string]any
	e.must(200, "GET", "/healthz", nil).decode(t, &h)
	if h["status"] != "ok" || h["scheduler"] != "connected" || h["leader"] != true {
		t.Errorf("healthz %v", h)
	}
	r := e.must(200, "GET", "/api/v0/openapi.yaml", nil)
	if !strings.Contains(string(r.body), "openapi: 3") || !strings.Contains(string(r.body), "/instances.create") {
		t.Errorf("openapi.yaml does not describe the API: %.200s", r.body)
	}
	r = e.must(200, "GET", "/api/v0/workload.schema.json", nil)
	if !json.Valid(r.body) {
		t.Errorf("schema is not JSON")
	}
}

func TestRecoverMiddleware(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := NewServer(Config{Store: st, SchedulerAddr: "127.0.0.1:1", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.link.close()
	h := s.instrument(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }), func(*http.Request) string { return "" })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"error":"internal error"`) {
		t.Errorf("panic answered %d %s", rec.Code, rec.Body)
	}
}

func TestNewServerNeedsStore(t *testing.T) {
	if _, err := NewServer(Config{}); err == nil {
		t.Error("NewServer without a store succeeded")
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sched := startFakeScheduler(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Listener: ln, Store: st, SchedulerAddr: sched.addr, Insecure: true}) }()
	sched.waitSubscribed(t)
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	// an open event stream must not hold the shutdown
	events, err := http.Get("http://" + ln.Addr().String() + "/api/v0/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, events.Body); ended <- err }()
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("event stream ended with %v, want a clean end", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("event stream still open after shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestRunListenError(t *testing.T) {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = Run(t.Context(), Config{Addr: "256.0.0.1:99999", Store: st, Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "listening") {
		t.Errorf("Run on a bad address: %v", err)
	}
}

// A followed log sends its headers before the first line, streams lines as
// they come, and stops the node's stream when the client goes away.
func TestInstanceLogsFollow(t *testing.T) {
	e := newEnv(t)
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	release := make(chan struct{})
	ended := make(chan struct{})
	e.sched.mu.Lock()
	e.sched.logs = func(req *commonpb.LogRequest, stream grpc.ServerStreamingServer[commonpb.LogChunk]) error {
		defer close(ended)
		if !req.GetFollow() {
			return status.Error(codes.InvalidArgument, "want follow")
		}
		<-release
		if err := stream.Send(&commonpb.LogChunk{Data: []byte("late line\n")}); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}
	e.sched.mu.Unlock()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+"/api/v0/instances.logs/"+in.ID+"?follow=true", nil)
	resp, err := e.http.Client().Do(e.auth(req)) // returns once headers are in
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	close(release)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "late line\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("node log stream still open after the client left")
	}
}
