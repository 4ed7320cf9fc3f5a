package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/testutil"
)

const waitTimeout = 5 * time.Second

// harness runs a real scheduler on 127.0.0.1 listeners with real clients.
type harness struct {
	t          testing.TB
	worker     workerpb.WorkerClient
	ctrl       controllerpb.ControllerClient
	ctrlAddr   net.Addr
	workerAddr net.Addr
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startScheduler(t testing.TB, cfg Config) *harness {
	t.Helper()
	wl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.WorkersListener, cfg.ControllersListener = wl, cl
	cfg.Insecure = cfg.CADir == ""
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	h := &harness{t: t, ctrlAddr: cl.Addr(), workerAddr: wl.Addr()}
	if cfg.Insecure {
		h.worker = workerpb.NewWorkerClient(dial(t, wl.Addr()))
		h.ctrl = controllerpb.NewControllerClient(dial(t, cl.Addr()))
	}
	return h
}

// dial dials addr in plaintext, unless opts give credentials.
func dial(t testing.TB, addr net.Addr, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// fakeNode plays a riklet: it registers, records orders and sends statuses.
type fakeNode struct {
	t        testing.TB
	name     string
	orders   chan *workerpb.InstanceScheduling
	ended    chan error // the Register stream's end
	cancel   context.CancelFunc
	statuses grpc.ClientStreamingClient[commonpb.WorkerStatus, emptypb.Empty]
	syncs    int64
}

func (h *harness) register(name string, capCPU, capMem int64, instances ...*commonpb.InstanceMetric) *fakeNode {
	h.t.Helper()
	return h.registerWith(&commonpb.WorkerRegistration{
		Hostname:  name,
		Capacity:  &commonpb.Resources{CpuMillis: capCPU, MemoryMib: capMem},
		Kinds:     []string{"pod", "function"},
		Instances: instances,
		Address:   "127.0.0.1",
	})
}

func (h *harness) registerWith(reg *commonpb.WorkerRegistration) *fakeNode {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := h.worker.Register(ctx, reg)
	if err != nil {
		t.Fatalf("Register(%s): %v", reg.GetHostname(), err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatalf("Register(%s): waiting for acceptance: %v", reg.GetHostname(), err)
	}
	n := &fakeNode{t: t, name: reg.GetHostname(), orders: make(chan *workerpb.InstanceScheduling, 10000), ended: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			o, err := stream.Recv()
			if err != nil {
				n.ended <- err
				return
			}
			n.orders <- o
		}
	}()
	n.statuses, err = h.worker.SendStatusUpdates(ctx)
	if err != nil {
		t.Fatalf("SendStatusUpdates(%s): %v", reg.GetHostname(), err)
	}
	return n
}

func (n *fakeNode) send(ws *commonpb.WorkerStatus) {
	n.t.Helper()
	ws.Identifier = n.name
	if err := n.statuses.Send(ws); err != nil {
		n.t.Fatalf("%s: sending status: %v", n.name, err)
	}
}

func (n *fakeNode) report(id string, st commonpb.ResourceStatus) {
	n.t.Helper()
	n.send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: &commonpb.InstanceMetric{InstanceId: id, Status: st}}})
}

func (n *fakeNode) heartbeat(capCPU, capMem int64) {
	n.t.Helper()
	n.send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{
		Status:   commonpb.ResourceStatus_RUNNING,
		Capacity: &commonpb.Resources{CpuMillis: capCPU, MemoryMib: capMem},
		Usage:    &commonpb.Resources{CpuMillis: 10, MemoryMib: 20},
		Load1:    0.5,
	}}})
}

// sync waits until the scheduler has processed every status n sent: it
// sends a heartbeat with a new capacity and waits for ListNodes to show it.
func (n *fakeNode) sync(h *harness) {
	n.t.Helper()
	n.syncs++
	n.heartbeat(1_000_000+n.syncs, 0)
	eventually(n.t, n.name+" statuses processed", func() bool {
		return h.node(n.name).GetCapacity().GetCpuMillis() == 1_000_000+n.syncs
	})
}

// expectOrder waits for the next order and checks it.
func (n *fakeNode) expectOrder(id string, action commonpb.WorkloadRequestKind) *workerpb.InstanceScheduling {
	n.t.Helper()
	select {
	case o := <-n.orders:
		if o.GetInstanceId() != id || o.GetAction() != action {
			n.t.Fatalf("%s: got order %s %s, want %s %s", n.name, o.GetAction(), o.GetInstanceId(), action, id)
		}
		return o
	case <-time.After(waitTimeout):
		n.t.Fatalf("%s: no order %s %s", n.name, action, id)
	}
	return nil
}

// expectNoOrder checks that no order arrives for a while.
func (n *fakeNode) expectNoOrder(d time.Duration) {
	n.t.Helper()
	select {
	case o := <-n.orders:
		n.t.Fatalf("%s: unexpected order %s %s", n.name, o.GetAction(), o.GetInstanceId())
	case <-time.After(d):
	}
}

// subscription is one controller's GetStatusUpdates stream.
type subscription struct {
	t  testing.TB
	ch chan *commonpb.WorkerStatus // instance statuses only
}

func (h *harness) subscribe() *subscription {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := h.ctrl.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatalf("GetStatusUpdates: %v", err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatalf("GetStatusUpdates: waiting for subscription: %v", err)
	}
	s := &subscription{t: t, ch: make(chan *commonpb.WorkerStatus, 10000)}
	go func() {
		for {
			ws, err := stream.Recv()
			if err != nil {
				close(s.ch)
				return
			}
			if ws.GetInstance() != nil {
				s.ch <- ws
			}
		}
	}()
	return s
}

// expect waits for a status of instance id with status st, skipping others.
func (s *subscription) expect(id string, st commonpb.ResourceStatus) *commonpb.InstanceMetric {
	s.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case ws, ok := <-s.ch:
			if !ok {
				s.t.Fatalf("subscription ended waiting for %s %s", id, st)
			}
			if m := ws.GetInstance(); m.GetInstanceId() == id && m.GetStatus() == st {
				return m
			}
		case <-timeout:
			s.t.Fatalf("no status %s for %s", st, id)
		}
	}
}

// next returns the next status.
func (s *subscription) next() *commonpb.InstanceMetric {
	s.t.Helper()
	return s.nextStatus().GetInstance()
}

// nextStatus returns the next status with its envelope.
func (s *subscription) nextStatus() *commonpb.WorkerStatus {
	s.t.Helper()
	select {
	case ws, ok := <-s.ch:
		if !ok {
			s.t.Fatal("subscription ended")
		}
		return ws
	case <-time.After(waitTimeout):
		s.t.Fatal("no status")
	}
	return nil
}

func (h *harness) schedule(id, definition string, action commonpb.WorkloadRequestKind, hint string) error {
	_, err := h.ctrl.ScheduleInstance(context.Background(), &controllerpb.WorkloadScheduling{
		WorkloadId:   "w-" + id,
		Definition:   definition,
		Action:       action,
		InstanceId:   id,
		InstanceName: "web-" + id,
		Node:         hint,
	})
	return err
}

func (h *harness) create(id, definition string) {
	h.t.Helper()
	if err := h.schedule(id, definition, commonpb.WorkloadRequestKind_CREATE, ""); err != nil {
		h.t.Fatalf("CREATE %s: %v", id, err)
	}
}

func (h *harness) destroy(id string) {
	h.t.Helper()
	if err := h.schedule(id, "", commonpb.WorkloadRequestKind_DESTROY, ""); err != nil {
		h.t.Fatalf("DESTROY %s: %v", id, err)
	}
}

// node returns ListNodes' entry for name, or nil.
func (h *harness) node(name string) *controllerpb.Node {
	h.t.Helper()
	list, err := h.ctrl.ListNodes(context.Background(), &emptypb.Empty{})
	if err != nil {
		h.t.Fatalf("ListNodes: %v", err)
	}
	for _, n := range list.GetNodes() {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

// eventually polls cond until it holds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, waitTimeout, cond, func() string { return "waiting for " + what })
}

// pod returns a pod definition asking for cpu millicores and mem MiB,
// exposing hostPort (0: none).
func pod(cpu, mem, hostPort int) string {
	ports := ""
	if hostPort > 0 {
		ports = fmt.Sprintf(`,"ports":[{"port":%d,"targetPort":80}]`, hostPort)
	}
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":"web","spec":{"containers":[`+
		`{"name":"c","image":"busybox","resources":{"cpu":%d,"memory":%d}%s}]}}`, cpu, mem, ports)
}
