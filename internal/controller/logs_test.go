package controller

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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

// A client that follows a log but stops reading is cut off after
// WriteTimeout: the node's log stream ends instead of being held forever.
func TestNonReadingClientIsCutOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.WriteTimeout = time.Second })
	wl := e.createWorkload(podDef("web"))
	in := e.createInstances(map[string]any{"workload_id": wl.ID})[0]
	ended := make(chan struct{})
	var sent atomic.Int64
	e.sched.mu.Lock()
	e.sched.logs = func(req *commonpb.LogRequest, stream grpc.ServerStreamingServer[commonpb.LogChunk]) error {
		defer close(ended)
		chunk := &commonpb.LogChunk{Data: []byte(strings.Repeat("x", 64<<10))}
		for stream.Context().Err() == nil {
			if err := stream.Send(chunk); err != nil {
				return err
			}
			sent.Add(1)
		}
		return nil
	}
	e.sched.mu.Unlock()
	req, _ := http.NewRequest("GET", e.http.URL+"/api/v0/instances.logs/"+in.ID+"?follow=true", nil)
	resp, err := e.http.Client().Do(e.auth(req)) // and never read the body
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("follow: %v %v", resp, err)
	}
	defer resp.Body.Close()
	select {
	case <-ended:
		t.Logf("cut off after %d MiB sent", sent.Load()/16)
	case <-time.After(time.Minute):
		t.Fatalf("the log stream to a client that stopped reading is still open (%d MiB sent)", sent.Load()/16)
	}
}
