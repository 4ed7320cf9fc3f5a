package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// deliverLog never blocks: a route whose buffer is full is ended, its node
// gets one cancel, and its further chunks are dropped; other routes of the
// same node are untouched.
func TestDeliverLogOverflow(t *testing.T) {
	s := newState(testLogger(t), placement.Spread, time.Minute, 0, time.Now)
	c := &logConn{node: "n1", out: newQueue[*commonpb.LogRequest](), closed: newCloser()}
	if err := s.attachLogs(c); err != nil {
		t.Fatal(err)
	}
	slow := &logRoute{id: "slow", conn: c, ch: make(chan *commonpb.LogChunk, logRouteBuffer), tooSlow: newCloser()}
	fast := &logRoute{id: "fast", conn: c, ch: make(chan *commonpb.LogChunk, logRouteBuffer), tooSlow: newCloser()}
	s.logRoutes[slow.id], s.logRoutes[fast.id] = slow, fast
	other := &logConn{node: "n1", out: newQueue[*commonpb.LogRequest](), closed: newCloser()}

	for range logRouteBuffer {
		s.deliverLog(c, &commonpb.LogChunk{RequestId: "slow"})
	}
	if isClosed(slow.tooSlow) || len(c.out.drain()) != 0 {
		t.Fatal("route ended (or cancelled) before its buffer was full")
	}
	s.deliverLog(other, &commonpb.LogChunk{RequestId: "slow"}) // another stream: ignored
	if isClosed(slow.tooSlow) {
		t.Fatal("a chunk from another stream counted against the route")
	}

	s.deliverLog(c, &commonpb.LogChunk{RequestId: "slow"}) // one too many
	if !isClosed(slow.tooSlow) {
		t.Fatal("route not ended when its buffer overflowed")
	}
	if s.logRoutes["slow"] != nil {
		t.Error("overflowed route still routed")
	}
	out := c.out.drain()
	if len(out) != 1 || !out[0].GetCancel() || out[0].GetRequestId() != "slow" || out[0].GetInstanceId() != "" {
		t.Fatalf("node got %v, want one cancel of slow", out)
	}

	// Further chunks of slow are dropped; fast still gets its own.
	s.deliverLog(c, &commonpb.LogChunk{RequestId: "slow", Data: []byte("late")})
	s.deliverLog(c, &commonpb.LogChunk{RequestId: "fast", Data: []byte("x")})
	if len(fast.ch) != 1 {
		t.Errorf("fast route has %d chunks, want 1", len(fast.ch))
	}
	if len(slow.ch) != logRouteBuffer {
		t.Errorf("slow route has %d chunks, want %d (no late chunk)", len(slow.ch), logRouteBuffer)
	}

	// The GetLogs call ending afterwards sends no second cancel.
	s.closeLogs(slow, false)
	if out := c.out.drain(); len(out) != 0 {
		t.Errorf("closeLogs after overflow sent %v, want nothing", out)
	}
	s.closeLogs(fast, false)
	if out := c.out.drain(); len(out) != 1 || out[0].GetRequestId() != "fast" || !out[0].GetCancel() {
		t.Errorf("closeLogs of fast sent %v, want its cancel", out)
	}
}

func isClosed(c *closer) bool {
	select {
	case <-c.done():
		return true
	default:
		return false
	}
}

// Two follow requests on one node, over real gRPC: one caller never reads.
// The other keeps receiving; the stuck one is cancelled on the node and ends
// with ResourceExhausted.
func TestLogsSlowReaderDoesNotBlockOthers(t *testing.T) {
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := startScheduler(t, Config{MetricsListener: ml})
	n1 := h.register("n1", 0, 0)
	h.create("i1", pod(0, 0, 0))
	n1.expectOrder("i1", create)
	ls, next, tryNext := serveLogs(t, h, "n1")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The stuck caller has its own connection with a fixed 64 KiB window,
	// so that what gRPC buffers for it is small and known.
	slowClient := controllerpb.NewControllerClient(dial(t, h.ctrlAddr,
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	stuck, err := slowClient.GetLogs(ctx, &commonpb.LogRequest{InstanceId: "i1", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	rs := next()
	good, err := h.ctrl.GetLogs(ctx, &commonpb.LogRequest{RequestId: "good", InstanceId: "i1", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	rg := next()
	if rs.GetCancel() || rg.GetCancel() || rs.GetRequestId() == rg.GetRequestId() {
		t.Fatalf("node got %v and %v, want two distinct requests", rs, rg)
	}
	goodChunks := make(chan *commonpb.LogChunk)
	goodEnd := make(chan error, 1)
	go func() {
		for {
			c, err := good.Recv()
			if err != nil {
				goodEnd <- err
				return
			}
			goodChunks <- c
		}
	}()
	sendGood := func(i int) {
		t.Helper()
		line := fmt.Sprintf("line %d\n", i)
		if err := ls.Send(&commonpb.LogChunk{RequestId: rg.GetRequestId(), Data: []byte(line)}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-goodChunks:
			if string(c.GetData()) != line || c.GetRequestId() != "good" {
				t.Fatalf("good caller got %q (request %q), want %q", c.GetData(), c.GetRequestId(), line)
			}
		case err := <-goodEnd:
			t.Fatalf("good caller ended after %d chunks: %v", i, err)
		case <-time.After(waitTimeout):
			t.Fatalf("good caller got nothing for chunk %d: its node's stream is blocked", i)
		}
	}

	// The node produces for both; the stuck caller's buffers fill up.
	big := bytes.Repeat([]byte("x"), 32<<10)
	var cancelReq *commonpb.LogRequest
	chunks := 0
	for i := 0; cancelReq == nil; i++ {
		if i == 2000 {
			t.Fatalf("no cancel after %d chunks of 32 KiB to a caller that never reads", i)
		}
		if err := ls.Send(&commonpb.LogChunk{RequestId: rs.GetRequestId(), Data: big}); err != nil {
			t.Fatal(err)
		}
		chunks++
		sendGood(i)
		cancelReq = tryNext()
	}
	if cancelReq.GetRequestId() != rs.GetRequestId() || cancelReq.GetInstanceId() != "" {
		t.Fatalf("node got %v, want cancel of %s", cancelReq, rs.GetRequestId())
	}

	// Late chunks of the cancelled request are dropped; good goes on.
	for i := range 10 {
		if err := ls.Send(&commonpb.LogChunk{RequestId: rs.GetRequestId(), Data: big}); err != nil {
			t.Fatal(err)
		}
		sendGood(10000 + i)
	}
	if r := tryNext(); r != nil {
		t.Errorf("node got %v after the cancel, want nothing", r)
	}

	// The stuck caller finally reads: what gRPC had buffered, then the error.
	var n int
	for {
		c, err := stuck.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "log reader too slow") {
				t.Fatalf("stuck caller ended with %v, want ResourceExhausted: log reader too slow", err)
			}
			break
		}
		n += len(c.GetData())
	}
	t.Logf("cancel after %d chunks to the stuck caller, which then got %d bytes", chunks, n)
	if n >= logRouteBuffer*len(big) {
		t.Errorf("stuck caller got %d bytes: its whole buffer was sent after it was too slow", n)
	}
	if got := scrape(t, ml.Addr())["rik_scheduler_log_readers_too_slow_total"]; got != 1 {
		t.Errorf("rik_scheduler_log_readers_too_slow_total = %v, want 1", got)
	}

	// The good request still ends normally.
	if err := ls.Send(&commonpb.LogChunk{RequestId: rg.GetRequestId(), Eof: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-goodChunks:
		if !c.GetEof() {
			t.Fatalf("good caller got %v, want the eof chunk", c)
		}
	case err := <-goodEnd:
		t.Fatalf("good caller ended with %v before the eof chunk", err)
	case <-time.After(waitTimeout):
		t.Fatal("good caller got no eof chunk")
	}
	select {
	case err := <-goodEnd:
		if !errors.Is(err, io.EOF) {
			t.Errorf("good caller ended with %v, want EOF", err)
		}
	case <-time.After(waitTimeout):
		t.Error("good call did not end after eof")
	}
}

// serveLogs opens node's log stream. next waits for the next log request
// the node gets; tryNext returns it if one came within a short while, or nil.
func serveLogs(t *testing.T, h *harness, node string) (grpc.BidiStreamingClient[commonpb.LogChunk, commonpb.LogRequest], func() *commonpb.LogRequest, func() *commonpb.LogRequest) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ls, err := h.worker.ServeLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Send(&commonpb.LogChunk{RequestId: node}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Header(); err != nil {
		t.Fatal(err)
	}
	reqs := make(chan *commonpb.LogRequest, 100)
	go func() {
		defer close(reqs)
		for {
			req, err := ls.Recv()
			if err != nil {
				return
			}
			reqs <- req
		}
	}()
	wait := func(d time.Duration) *commonpb.LogRequest {
		select {
		case r, ok := <-reqs:
			if !ok {
				t.Fatal("log stream closed")
			}
			return r
		case <-time.After(d):
			return nil
		}
	}
	next := func() *commonpb.LogRequest {
		t.Helper()
		r := wait(waitTimeout)
		if r == nil {
			t.Fatal("no log request reached the node")
		}
		return r
	}
	tryNext := func() *commonpb.LogRequest { return wait(10 * time.Millisecond) }
	return ls, next, tryNext
}
