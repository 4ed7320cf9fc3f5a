package link

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// scheduler answers ScheduleInstance with err and sends statuses to every
// subscriber.
type scheduler struct {
	controllerpb.UnimplementedControllerServer
	mu         sync.Mutex
	err        error
	statuses   chan *commonpb.InstanceMetric
	subscribes int
}

func (s *scheduler) ScheduleInstance(context.Context, *controllerpb.WorkloadScheduling) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &emptypb.Empty{}, s.err
}

func (s *scheduler) GetStatusUpdates(_ *emptypb.Empty, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	s.mu.Lock()
	s.subscribes++
	s.mu.Unlock()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case m := <-s.statuses:
			if err := stream.Send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: m}}); err != nil {
				return err
			}
		}
	}
}

func (s *scheduler) subscribeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribes
}

func startScheduler(t *testing.T) (*scheduler, *Link) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &scheduler{statuses: make(chan *commonpb.InstanceMetric, 10)}
	srv := grpc.NewServer()
	controllerpb.RegisterControllerServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	l, err := New(Config{Target: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return f, l
}

// handler records what the link hands it.
type handler struct {
	mu         sync.Mutex
	subscribed int
	statuses   []service.Status
}

func (h *handler) Subscribed(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subscribed++
	return nil
}

func (h *handler) Ingest(_ context.Context, st service.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.statuses = append(h.statuses, st)
}

func (h *handler) seen() (int, []service.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subscribed, append([]service.Status(nil), h.statuses...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, cond, func() string { return "waiting for " + what })
}

// Run subscribes, tells the handler, hands it the statuses in order, and
// subscribes again at once on Resubscribe.
func TestRun(t *testing.T) {
	f, l := startScheduler(t)
	h := &handler{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, h) }()
	defer func() { cancel(); <-done }()

	eventually(t, "connected", l.Connected)
	f.statuses <- &commonpb.InstanceMetric{InstanceId: "a", Status: commonpb.ResourceStatus_RUNNING}
	f.statuses <- &commonpb.InstanceMetric{InstanceId: "b", Status: commonpb.ResourceStatus_PENDING}
	eventually(t, "statuses", func() bool { _, st := h.seen(); return len(st) == 2 })
	n, st := h.seen()
	if n != 1 || st[0].InstanceID != "a" || st[0].Status != workload.StatusRunning || st[1].InstanceID != "b" {
		t.Errorf("subscribed %d times, statuses %+v", n, st)
	}

	l.Resubscribe()
	eventually(t, "subscribed again", func() bool { n, _ := h.seen(); return n == 2 && f.subscribeCount() == 2 })
	eventually(t, "connected again", l.Connected)
}

// Schedule's errors wrap the domain error of the scheduler's code, with
// what was asked.
func TestScheduleErrors(t *testing.T) {
	f, l := startScheduler(t)
	o := service.Order{Action: service.Create, InstanceID: "i", InstanceName: "web-1"}
	if err := l.Schedule(t.Context(), o); err != nil {
		t.Fatalf("accepted order: %v", err)
	}
	for code, kind := range map[codes.Code]error{
		codes.AlreadyExists:      errdefs.ErrAlreadyExists,
		codes.InvalidArgument:    errdefs.ErrInvalidArgument,
		codes.FailedPrecondition: errdefs.ErrFailedPrecondition,
		codes.ResourceExhausted:  errdefs.ErrResourceExhausted,
		codes.Unavailable:        errdefs.ErrUnavailable,
	} {
		f.mu.Lock()
		f.err = status.Error(code, "because")
		f.mu.Unlock()
		err := l.Schedule(t.Context(), o)
		if !errors.Is(err, kind) || err.Error() != "scheduling CREATE web-1: because" {
			t.Errorf("%v: %v, want %v", code, err, kind)
		}
	}
	f.mu.Lock()
	f.err = status.Error(codes.Internal, "boom")
	f.mu.Unlock()
	if err := l.Schedule(t.Context(), o); err == nil || errdefs.HTTPStatus(err) != 500 {
		t.Errorf("internal error: %v", err)
	}
}
