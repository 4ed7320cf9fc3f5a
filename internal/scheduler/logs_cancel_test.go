package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/rik-org/rik/api/proto/commonpb"
)

// A follow request whose caller goes away before the end is cancelled on
// the node; one that the node ended is not.
func TestLogsCancelSentToNode(t *testing.T) {
	h := startScheduler(t, Config{})
	n1 := h.register("n1", 0, 0)
	h.create("i1", pod(0, 0, 0))
	n1.expectOrder("i1", create)

	ls, err := h.worker.ServeLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ls.CloseSend() })
	if err := ls.Send(&commonpb.LogChunk{RequestId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Header(); err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *commonpb.LogRequest, 16)
	go func() {
		for {
			req, err := ls.Recv()
			if err != nil {
				close(reqs)
				return
			}
			reqs <- req
		}
	}()
	next := func() *commonpb.LogRequest {
		t.Helper()
		select {
		case r, ok := <-reqs:
			if !ok {
				t.Fatal("log stream closed")
			}
			return r
		case <-time.After(waitTimeout):
			t.Fatal("no log request reached the node")
		}
		return nil
	}

	// A request the node ends: no cancel follows.
	done := make(chan error, 1)
	go func() { done <- readLogs(h, "i1", nil) }()
	r := next()
	if r.GetCancel() {
		t.Fatalf("first request is a cancel: %v", r)
	}
	if err := ls.Send(&commonpb.LogChunk{RequestId: r.GetRequestId(), Eof: true}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("GetLogs: %v", err)
	}

	// A follow request whose caller leaves after one chunk.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := h.ctrl.GetLogs(ctx, &commonpb.LogRequest{RequestId: "mine", InstanceId: "i1", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	f := next()
	if f.GetCancel() {
		t.Fatalf("got a cancel, want the follow request of the first call ended by eof: %v", f)
	}
	if !f.GetFollow() {
		t.Fatalf("request %v: want follow", f)
	}
	if err := ls.Send(&commonpb.LogChunk{RequestId: f.GetRequestId(), Data: []byte("line\n")}); err != nil {
		t.Fatal(err)
	}
	if c, err := stream.Recv(); err != nil || string(c.GetData()) != "line\n" {
		t.Fatalf("first chunk = %v, %v", c, err)
	}
	cancel()
	c := next()
	if !c.GetCancel() || c.GetRequestId() != f.GetRequestId() || c.GetInstanceId() != "" {
		t.Fatalf("after the caller left, node got %v; want cancel of %s", c, f.GetRequestId())
	}
}
