package scheduler

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/grpcutil"
)

const (
	create  = commonpb.WorkloadRequestKind_CREATE
	destroy = commonpb.WorkloadRequestKind_DESTROY

	pending    = commonpb.ResourceStatus_PENDING
	creating   = commonpb.ResourceStatus_CREATING
	running    = commonpb.ResourceStatus_RUNNING
	failed     = commonpb.ResourceStatus_FAILED
	terminated = commonpb.ResourceStatus_TERMINATED
	destroying = commonpb.ResourceStatus_DESTROYING
)

func TestScheduleAndForwardToControllers(t *testing.T) {
	h := startScheduler(t, Config{})
	c1, c2 := h.subscribe(), h.subscribe()
	n1 := h.register("n1", 4000, 4096)
	def := pod(500, 256, 8080)
	h.create("i1", def)

	o := n1.expectOrder("i1", create)
	if o.GetDefinition() != def || o.GetWorkloadId() != "w-i1" || o.GetInstanceName() != "web-i1" {
		t.Errorf("order = %v, want the definition, workload id and name", o)
	}
	for _, c := range []*subscription{c1, c2} {
		if m := c.expect("i1", pending); m.GetNode() != "n1" {
			t.Errorf("placement status node = %q, want n1", m.GetNode())
		}
	}
	n1.report("i1", creating)
	n1.report("i1", running)
	for _, c := range []*subscription{c1, c2} {
		c.expect("i1", creating)
		m := c.expect("i1", running)
		if m.GetNode() != "n1" || m.GetWorkloadId() != "w-i1" {
			t.Errorf("forwarded status = %v, want node n1 and workload w-i1", m)
		}
	}
	n := h.node("n1")
	if n.GetStatus() != "Ready" || n.GetInstances() != 1 || n.GetAllocated().GetCpuMillis() != 500 ||
		n.GetAllocated().GetMemoryMib() != 256 || n.GetAddress() != "127.0.0.1" {
		t.Errorf("ListNodes n1 = %v", n)
	}

	// A duplicate CREATE is idempotent: no new order, last status repeated.
	h.create("i1", def)
	c1.expect("i1", running)
	n1.expectNoOrder(100 * time.Millisecond)
	if got := h.node("n1").GetAllocated().GetCpuMillis(); got != 500 {
		t.Errorf("allocated cpu after duplicate = %d, want 500", got)
	}
}

func TestStatusFromAnotherNodeDropped(t *testing.T) {
	h := startScheduler(t, Config{})
	c := h.subscribe()
	n1 := h.register("n1", 0, 0)
	n2 := h.register("n2", 0, 0)
	h.create("i1", pod(0, 0, 0))
	m := c.expect("i1", pending)
	owner, other := n1, n2
	if m.GetNode() == "n2" {
		owner, other = n2, n1
	}
	owner.expectOrder("i1", create)
	other.report("i1", failed) // not assigned there: dropped
	other.sync(h)
	owner.report("i1", running)
	if got := c.next(); got.GetStatus() != running || got.GetNode() != owner.name {
		t.Errorf("next status = %v, want RUNNING from %s (the other node's status dropped)", got, owner.name)
	}
}

func TestPendingUntilNodeFits(t *testing.T) {
	h := startScheduler(t, Config{})
	c := h.subscribe()
	small := h.register("small", 1000, 4096)
	h.create("big", pod(2000, 256, 0))
	m := c.expect("big", pending)
	if want := "no node fits: 1 node; 1 lack cpu (needs 2000m)"; m.GetReason() != want || m.GetNode() != "" {
		t.Errorf("pending status = %v, want reason %q and no node", m, want)
	}
	small.expectNoOrder(100 * time.Millisecond)

	large := h.register("large", 8000, 8192)
	large.expectOrder("big", create)
	if m := c.expect("big", pending); m.GetNode() != "large" {
		t.Errorf("status after placement = %v, want node large", m)
	}

	// A heartbeat announcing more capacity retries pending placements.
	h.create("big2", pod(7000, 256, 0))
	c.expect("big2", pending)
	small.heartbeat(8000, 8192)
	small.expectOrder("big2", create)

	// Freed resources retry pending placements too.
	h.create("big3", pod(7000, 256, 0))
	if m := c.expect("big3", pending); m.GetNode() != "" {
		t.Fatalf("big3 placed on %s, want pending", m.GetNode())
	}
	large.report("big", terminated)
	large.expectOrder("big3", create)
}

func TestHostPortConflict(t *testing.T) {
	h := startScheduler(t, Config{})
	c := h.subscribe()
	n1 := h.register("n1", 0, 0)
	h.create("a", pod(0, 0, 8080))
	n1.expectOrder("a", create)
	h.create("b", pod(0, 0, 8080))
	if m := c.expect("b", pending); !strings.Contains(m.GetReason(), "port 8080/TCP in use") {
		t.Errorf("reason = %q, want a port conflict", m.GetReason())
	}
	n1.report("a", terminated)
	n1.expectOrder("b", create)
}

func TestNodeTimeoutAndReregistration(t *testing.T) {
	h := startScheduler(t, Config{NodeTimeout: 300 * time.Millisecond})
	c := h.subscribe()
	n1 := h.register("n1", 4000, 4096)
	h.create("i1", pod(100, 100, 0))
	n1.expectOrder("i1", create)
	n1.report("i1", running)
	c.expect("i1", running)

	// No heartbeats: lost.
	m := c.expect("i1", failed)
	if m.GetReason() != api.ReasonNodeLost || m.GetNode() != "n1" {
		t.Errorf("lost status = %v, want reason %q on n1", m, api.ReasonNodeLost)
	}
	if n := h.node("n1"); n.GetStatus() != "NotReady" || n.GetInstances() != 0 || n.GetAllocated().GetCpuMillis() != 0 {
		t.Errorf("lost node = %v, want NotReady without instances", n)
	}
	select {
	case err := <-n1.ended:
		if status.Code(err) != codes.Aborted {
			t.Errorf("register stream of lost node ended with %v, want Aborted", err)
		}
	case <-time.After(waitTimeout):
		t.Error("register stream of the lost node not ended")
	}
	// Nothing is placed on a NotReady node.
	h.create("i2", pod(100, 100, 0))
	if m := c.expect("i2", pending); m.GetReason() != "no node fits: 1 node; 1 NotReady" {
		t.Errorf("reason = %q", m.GetReason())
	}

	// It comes back still running i1: lost with its node, i1 is not
	// destroyed but adopted back (issue 8: only the controller decides an
	// instance is unwanted), and the pending i2 goes there.
	n1b := h.register("n1", 4000, 4096, &commonpb.InstanceMetric{InstanceId: "i1", Status: running})
	n1b.expectOrder("i2", create)
	n1b.expectNoOrder(100 * time.Millisecond)
	if h.node("n1").GetStatus() != "Ready" {
		t.Error("re-registered node not Ready")
	}
	if m := c.expect("i1", running); m.GetNode() != "n1" {
		t.Errorf("adopted i1 reported on %q, want n1", m.GetNode())
	}

	// The controller does not want it any more (restartPolicy Never): it
	// is destroyed on its node, and TERMINATED once the node says so.
	h.destroy("i1")
	n1b.expectOrder("i1", destroy)
	n1b.report("i1", terminated)
	c.expect("i1", terminated)
}

func TestRescheduleAfterNodeLost(t *testing.T) {
	h := startScheduler(t, Config{NodeTimeout: 300 * time.Millisecond})
	c := h.subscribe()
	n1 := h.register("n1", 4000, 4096)
	h.create("i1", pod(100, 100, 0))
	n1.expectOrder("i1", create)
	n2 := h.register("n2", 4000, 4096)
	stop := keepAlive(n2, 50*time.Millisecond)
	defer stop()
	c.expect("i1", failed)
	h.create("i1", pod(100, 100, 0))
	n2.expectOrder("i1", create)
	n2.report("i1", running)
	c.expect("i1", running)

	// n1 comes back claiming i1, which now runs on n2: it must destroy it.
	n1b := h.register("n1", 4000, 4096, &commonpb.InstanceMetric{InstanceId: "i1", Status: running})
	n1b.expectOrder("i1", destroy)
	n1b.report("i1", terminated) // dropped: i1 is n2's
	n1b.sync(h)
	if n := h.node("n2"); n.GetInstances() != 1 {
		t.Errorf("n2 instances = %d, want 1 (TERMINATED from n1 must not forget it)", n.GetInstances())
	}
}

// keepAlive heartbeats from n every d until stopped.
func keepAlive(n *fakeNode, d time.Duration) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ws := &commonpb.WorkerStatus{Identifier: n.name, Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{}}}
				if n.statuses.Send(ws) != nil {
					return
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func TestAdoptionAfterSchedulerRestart(t *testing.T) {
	h := startScheduler(t, Config{RecoveryWindow: time.Minute})
	c := h.subscribe()
	// The riklet re-registers with what it still runs.
	n1 := h.register("n1", 4000, 4096, &commonpb.InstanceMetric{InstanceId: "i1", Status: running, WorkloadId: "w-i1", Ip: "10.0.0.2"})
	m := c.expect("i1", running)
	if m.GetNode() != "n1" || m.GetIp() != "10.0.0.2" {
		t.Errorf("adopted status = %v, want node n1 and its ip", m)
	}
	// The controller re-sends CREATE with the hint: no new order, the status
	// is repeated and the definition's resources are now counted.
	if err := h.schedule("i1", pod(300, 200, 0), create, "n1"); err != nil {
		t.Fatal(err)
	}
	c.expect("i1", running)
	n1.expectNoOrder(100 * time.Millisecond)
	if n := h.node("n1"); n.GetInstances() != 1 || n.GetAllocated().GetCpuMillis() != 300 {
		t.Errorf("n1 = %v, want 1 instance and 300m allocated", n)
	}

	// A CREATE hinting at a node not registered yet waits for it...
	if err := h.schedule("i2", pod(100, 100, 0), create, "n2"); err != nil {
		t.Fatal(err)
	}
	n1.expectNoOrder(200 * time.Millisecond)
	// ...and is sent to it when it registers without it.
	n2 := h.register("n2", 4000, 4096)
	n2.expectOrder("i2", create)
	// A CREATE hinting at a node that registers with it running is adopted.
	if err := h.schedule("i3", pod(100, 100, 0), create, "n3"); err != nil {
		t.Fatal(err)
	}
	n3 := h.register("n3", 4000, 4096, &commonpb.InstanceMetric{InstanceId: "i3", Status: running})
	c.expect("i3", running)
	n3.expectNoOrder(100 * time.Millisecond)
	if n := h.node("n3"); n.GetAllocated().GetCpuMillis() != 100 {
		t.Errorf("n3 allocated = %v, want 100m", n.GetAllocated())
	}
}

func TestRecoveryWindowEnds(t *testing.T) {
	h := startScheduler(t, Config{NodeTimeout: 10 * time.Second, RecoveryWindow: 300 * time.Millisecond})
	n1 := h.register("n1", 4000, 4096)
	if err := h.schedule("i1", pod(100, 100, 0), create, "gone"); err != nil {
		t.Fatal(err)
	}
	// Parked until the window ends, then placed normally.
	n1.expectNoOrder(150 * time.Millisecond)
	n1.expectOrder("i1", create)
	// After the window, a hint at an unknown node is ignored.
	if err := h.schedule("i2", pod(100, 100, 0), create, "gone"); err != nil {
		t.Fatal(err)
	}
	n1.expectOrder("i2", create)
}

func TestRegisterReplacesStream(t *testing.T) {
	h := startScheduler(t, Config{})
	a := h.register("n1", 4000, 4096)
	b := h.register("n1", 4000, 4096)
	select {
	case err := <-a.ended:
		if status.Code(err) != codes.Aborted {
			t.Errorf("first stream ended with %v, want Aborted", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("first Register stream still open")
	}
	h.create("i1", pod(0, 0, 0))
	b.expectOrder("i1", create)
	// A disconnected node gets nothing new but keeps its instances.
	c := h.subscribe()
	b.cancel()
	placedBefore := 0
	for k := 0; ; k++ {
		id := fmt.Sprintf("probe%d", k)
		h.create(id, pod(0, 0, 0))
		m := c.expect(id, pending)
		if m.GetNode() == "" {
			if m.GetReason() != "no node fits: 1 node; 1 disconnected" {
				t.Errorf("reason = %q, want disconnected", m.GetReason())
			}
			break
		}
		placedBefore++ // the server had not seen the disconnection yet
		if k > 100 {
			t.Fatal("disconnection never noticed")
		}
	}
	if n := h.node("n1"); n.GetStatus() != "Ready" || int(n.GetInstances()) != 1+placedBefore {
		t.Errorf("disconnected node = %v, want Ready with its %d instances", n, 1+placedBefore)
	}
}

func TestDestroy(t *testing.T) {
	// Past its recovery window (within it, an instance it does not know
	// placed may run on a node yet to re-register: it waits for them).
	h := startScheduler(t, Config{RecoveryWindow: time.Millisecond})
	c := h.subscribe()
	n1 := h.register("n1", 1000, 4096)
	h.create("i1", pod(1000, 100, 0))
	n1.expectOrder("i1", create)
	n1.report("i1", running)
	c.expect("i1", running)

	// Placed: routed to its node, which reports the end.
	h.destroy("i1")
	n1.expectOrder("i1", destroy)
	n1.report("i1", destroying)
	n1.report("i1", terminated)
	c.expect("i1", destroying)
	c.expect("i1", terminated)
	eventually(t, "i1 forgotten", func() bool { return h.node("n1").GetInstances() == 0 })

	// Pending: forgotten, TERMINATED reported by the scheduler.
	h.create("i2", pod(5000, 100, 0))
	c.expect("i2", pending)
	h.destroy("i2")
	c.expect("i2", terminated)
	n1.expectNoOrder(100 * time.Millisecond)

	// Unknown: TERMINATED too.
	h.destroy("nope")
	c.expect("nope", terminated)
}

func TestLogs(t *testing.T) {
	h := startScheduler(t, Config{})
	n1 := h.register("n1", 0, 0)
	h.create("i1", pod(0, 0, 0))
	n1.expectOrder("i1", create)

	// No log stream yet: Unavailable.
	if err := readLogs(h, "i1", nil); status.Code(err) != codes.Unavailable {
		t.Errorf("GetLogs without log stream: %v, want Unavailable", err)
	}
	if err := readLogs(h, "unknown", nil); status.Code(err) != codes.NotFound {
		t.Errorf("GetLogs of an unknown instance: %v, want NotFound", err)
	}

	ls, err := h.worker.ServeLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Send(&commonpb.LogChunk{RequestId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Header(); err != nil {
		t.Fatal(err)
	}
	go func() { // the node answers every request with two chunks
		for {
			req, err := ls.Recv()
			if err != nil {
				return
			}
			ls.Send(&commonpb.LogChunk{RequestId: req.GetRequestId(), Data: []byte("hello " + req.GetInstanceId() + "\n")})
			ls.Send(&commonpb.LogChunk{RequestId: req.GetRequestId(), Data: []byte(fmt.Sprintf("tail=%d\n", req.GetTail())), Eof: true})
		}
	}()
	var got strings.Builder
	if err := readLogs(h, "i1", &got); err != nil {
		t.Fatalf("GetLogs: %v", err)
	}
	if want := "hello i1\ntail=7\n"; got.String() != want {
		t.Errorf("logs = %q, want %q", got.String(), want)
	}

	// Concurrent requests each get their own chunks.
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			var b strings.Builder
			if err := readLogs(h, "i1", &b); err != nil || b.String() != "hello i1\ntail=7\n" {
				t.Errorf("concurrent GetLogs = %q, %v", b.String(), err)
			}
		})
	}
	wg.Wait()

	// The node's log stream closes: Unavailable again.
	ls.CloseSend()
	eventually(t, "log stream closed", func() bool { return status.Code(readLogs(h, "i1", nil)) == codes.Unavailable })
}

// readLogs reads the logs of id into w (if not nil), checking request ids.
func readLogs(h *harness, id string, w io.Writer) error {
	stream, err := h.ctrl.GetLogs(context.Background(), &commonpb.LogRequest{RequestId: "mine", InstanceId: id, Tail: 7})
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if chunk.GetRequestId() != "mine" {
			return fmt.Errorf("chunk request id %q, want mine", chunk.GetRequestId())
		}
		if w != nil {
			w.Write(chunk.GetData())
		}
	}
}

func TestInvalidRequests(t *testing.T) {
	h := startScheduler(t, Config{})
	for name, err := range map[string]error{
		"bad json":       h.schedule("i1", "{", create, ""),
		"invalid pod":    h.schedule("i1", `{"apiVersion":"v1","kind":"Pod","name":"web","spec":{"containers":[{"name":"c"}]}}`, create, ""),
		"no instance id": h.schedule("", pod(0, 0, 0), create, ""),
		"path id":        h.schedule("../x", pod(0, 0, 0), create, ""),
		"long id":        h.schedule(strings.Repeat("a", 65), pod(0, 0, 0), create, ""),
		"bad action":     h.schedule("i1", pod(0, 0, 0), commonpb.WorkloadRequestKind(7), ""),
	} {
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	err := h.schedule("i1", `{"apiVersion":"v1","kind":"Pod","name":"web","spec":{"containers":[{"name":"c"}]}}`, create, "")
	if !strings.Contains(status.Convert(err).Message(), "spec.containers[0].image") {
		t.Errorf("message %q does not name the field", status.Convert(err).Message())
	}
	// Registration without a hostname.
	stream, err := h.worker.Register(context.Background(), &commonpb.WorkerRegistration{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Register without hostname: %v, want InvalidArgument", err)
	}
	// Log stream without a hostname.
	ls, err := h.worker.ServeLogs(context.Background())
	if err == nil {
		ls.Send(&commonpb.LogChunk{})
		_, err = ls.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("ServeLogs without hostname: %v, want InvalidArgument", err)
	}
}

func TestConcurrentScheduling(t *testing.T) {
	h := startScheduler(t, Config{Strategy: "binpack"})
	c := h.subscribe()
	const nodes, perNode, instances = 10, 10, 150 // 100 fit, 50 stay pending
	fakes := make([]*fakeNode, nodes)
	for i := range fakes {
		fakes[i] = h.register(fmt.Sprintf("n%02d", i), 1000, 100000)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < instances; i += 8 {
				if err := h.schedule(fmt.Sprintf("i%03d", i), pod(1000/perNode, 10, 0), create, ""); err != nil {
					t.Errorf("CREATE: %v", err)
				}
			}
		})
	}
	wg.Go(func() { // statuses flowing back at the same time
		for range 50 {
			h.node("n00")
		}
	})
	wg.Wait()
	placed := map[string]string{}
	for _, n := range fakes {
		for range perNode {
			select {
			case o := <-n.orders:
				if prev, dup := placed[o.GetInstanceId()]; dup {
					t.Errorf("%s placed twice: %s and %s", o.GetInstanceId(), prev, n.name)
				}
				placed[o.GetInstanceId()] = n.name
				n.report(o.GetInstanceId(), running)
			case <-time.After(waitTimeout):
				t.Fatalf("%s got fewer than %d orders", n.name, perNode)
			}
		}
		n.expectNoOrder(10 * time.Millisecond)
	}
	counts := map[commonpb.ResourceStatus]int{}
	pendingWithReason := 0
	for range instances + len(placed) { // a PENDING each (with a node or a reason), a RUNNING for the placed
		m := c.next()
		counts[m.GetStatus()]++
		if m.GetStatus() == pending && m.GetReason() != "" {
			pendingWithReason++
		}
	}
	if len(placed) != nodes*perNode || counts[running] != len(placed) || pendingWithReason != instances-len(placed) {
		t.Errorf("placed %d, statuses %v, %d pending with reason; want %d placed and %d pending",
			len(placed), counts, pendingWithReason, nodes*perNode, instances-nodes*perNode)
	}
	for _, n := range fakes {
		if got := h.node(n.name).GetAllocated().GetCpuMillis(); got != 1000 {
			t.Errorf("%s allocated %dm, want 1000m", n.name, got)
		}
	}
}

// The riklet opens its log stream concurrently with its registration.
func TestLogStreamBeforeRegistration(t *testing.T) {
	h := startScheduler(t, Config{})
	ls, err := h.worker.ServeLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Send(&commonpb.LogChunk{RequestId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Header(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			req, err := ls.Recv()
			if err != nil {
				return
			}
			ls.Send(&commonpb.LogChunk{RequestId: req.GetRequestId(), Error: "no such container", Eof: true})
		}
	}()
	n1 := h.register("n1", 0, 0)
	h.create("i1", pod(0, 0, 0))
	n1.expectOrder("i1", create)
	stream, err := h.ctrl.GetLogs(context.Background(), &commonpb.LogRequest{InstanceId: "i1", Container: "x"})
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := stream.Recv()
	if err != nil || !chunk.GetEof() || chunk.GetError() != "no such container" {
		t.Fatalf("GetLogs = %v, %v; want the node's error chunk", chunk, err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the eof chunk: %v, want io.EOF", err)
	}
}

// A controller that reads slowly is never dropped: statuses of an
// instance it has not read yet are replaced by the newer one, and it ends
// up with the latest status of every instance, in sequence order.
func TestStuckSubscriberKept(t *testing.T) {
	h := startScheduler(t, Config{})
	fast := h.subscribe()
	// The stuck controller does not read; small fixed flow-control windows
	// make the scheduler's sends to it block quickly.
	stuckClient := controllerpb.NewControllerClient(dial(t, h.ctrlAddr,
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := stuckClient.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if md, err := stuck.Header(); err != nil || len(md.Get(grpcutil.EpochHeader)) != 1 {
		t.Fatalf("headers %v, %v: want the %s header", md, err, grpcutil.EpochHeader)
	}
	const n = 3000 // ~200 KB of statuses, far more than the windows
	latest := map[string]uint64{}
	for round := range 2 { // the second round repeats every status, newer
		for i := range n {
			id := fmt.Sprintf("i%04d", i)
			h.create(id, pod(0, 0, 0)) // no nodes: PENDING each
			// The fast subscriber is never blocked by the stuck one.
			ws := fast.nextStatus()
			if ws.GetInstance().GetInstanceId() != id {
				t.Fatalf("round %d: fast subscriber got %s, want %s", round, ws.GetInstance().GetInstanceId(), id)
			}
			latest[id] = ws.GetSeq()
		}
	}
	got, last := map[string]uint64{}, uint64(0)
	received := 0
	for len(got) < n || !maps.Equal(got, latest) {
		ws, err := stuck.Recv()
		if err != nil {
			t.Fatalf("stuck subscriber ended after %d statuses: %v", received, err)
		}
		received++
		if ws.GetSeq() <= last {
			t.Fatalf("seq %d after %d: not in order", ws.GetSeq(), last)
		}
		last = ws.GetSeq()
		got[ws.GetInstance().GetInstanceId()] = ws.GetSeq()
	}
	if received >= 2*n {
		t.Errorf("stuck subscriber got all %d statuses, want the unread ones coalesced", received)
	}
	t.Logf("stuck subscriber read %d statuses for %d changes", received, 2*n)
}

// A server the scheduler stopped before it started serving (stopped at
// once, as rik dev does when another component fails at start) is not a
// failure; a listener that fails is.
func TestServeGRPCStopped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.Stop()
	if err := serveGRPC(srv, l, "workers"); err != nil {
		t.Errorf("serving a stopped server: %v", err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	if err := serveGRPC(grpc.NewServer(), l2, "workers"); err == nil {
		t.Error("serving on a closed listener succeeded")
	}
}

// A controller resuming at a cursor of the same run is replayed only what
// changed after it; UnknownInstances names the instances the scheduler
// does not have.
func TestSubscribeStatusesResumes(t *testing.T) {
	h := startScheduler(t, Config{})
	h.create("i1", pod(0, 0, 0))
	h.create("i2", pod(0, 0, 0))
	open := func(cur *controllerpb.StatusCursor) (string, func() *commonpb.WorkerStatus) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		stream, err := h.ctrl.SubscribeStatuses(ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		md, err := stream.Header()
		if err != nil || len(md.Get(grpcutil.EpochHeader)) != 1 || len(md.Get(grpcutil.HeadHeader)) != 1 {
			t.Fatalf("headers %v, %v: want the %s and %s headers", md, err, grpcutil.EpochHeader, grpcutil.HeadHeader)
		}
		return md.Get(grpcutil.EpochHeader)[0], func() *commonpb.WorkerStatus {
			ws, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return ws
		}
	}
	epoch, recv := open(&controllerpb.StatusCursor{})
	first, second := recv(), recv()
	if first.GetInstance().GetInstanceId() != "i1" || second.GetInstance().GetInstanceId() != "i2" || second.GetSeq() <= first.GetSeq() {
		t.Fatalf("full replay: %v then %v, want i1 then i2, numbered in order", first, second)
	}
	h.create("i3", pod(0, 0, 0))
	_, again := open(&controllerpb.StatusCursor{Epoch: epoch, Seq: second.GetSeq()})
	if ws := again(); ws.GetInstance().GetInstanceId() != "i3" {
		t.Errorf("resumed after i2: got %v first, want i3", ws)
	}
	unknown, err := h.ctrl.UnknownInstances(context.Background(), &controllerpb.InstanceIds{Ids: []string{"i1", "nope", "i3"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := unknown.GetIds(); !slices.Equal(got, []string{"nope"}) {
		t.Errorf("unknown = %v, want [nope]", got)
	}
}
