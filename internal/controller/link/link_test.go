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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/grpcutil"
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
	return s.serve(stream, nil, nil)
}

// serve counts a subscriber, sends it md as headers and the statuses,
// numbered by seq if not nil.
func (s *scheduler) serve(stream grpc.ServerStreamingServer[commonpb.WorkerStatus], md metadata.MD, seq func() uint64) error {
	s.mu.Lock()
	s.subscribes++
	s.mu.Unlock()
	if err := stream.SendHeader(md); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case m := <-s.statuses:
			ws := &commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: m}}
			if seq != nil {
				ws.Seq = seq()
			}
			if err := stream.Send(ws); err != nil {
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

// numbered is a rik scheduler: its statuses are numbered in its run
// "e1", and its streams resume at a cursor (recorded).
type numbered struct {
	*scheduler
	seq     uint64
	cursors []*controllerpb.StatusCursor
}

func (s *numbered) SubscribeStatuses(cur *controllerpb.StatusCursor, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	s.mu.Lock()
	s.cursors = append(s.cursors, cur)
	s.mu.Unlock()
	return s.serve(stream, metadata.Pairs(grpcutil.EpochHeader, "e1"), func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.seq++
		return s.seq
	})
}

func (s *numbered) lastCursor() *controllerpb.StatusCursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[len(s.cursors)-1]
}

func startScheduler(t *testing.T) (*scheduler, *Link) {
	t.Helper()
	f := &scheduler{statuses: make(chan *commonpb.InstanceMetric, 10)}
	return f, serve(t, f)
}

// serve serves f and returns a link to it.
func serve(t *testing.T, f controllerpb.ControllerServer) *Link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	controllerpb.RegisterControllerServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	l, err := New(Config{Target: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// handler records what the link hands it; it resumes at resume, and
// fails to store the statuses of the instances in refuse.
type handler struct {
	mu         sync.Mutex
	subscribed int
	subs       []service.Subscription
	statuses   []service.Status
	resume     service.Cursor
	refuse     map[string]bool
	stored     service.Cursor
}

func (h *handler) Resume(context.Context) service.Cursor {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resume
}

func (h *handler) Subscribed(_ context.Context, sub service.Subscription) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subscribed++
	h.subs = append(h.subs, sub)
	return nil
}

func (h *handler) Ingest(_ context.Context, st service.Status) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.statuses = append(h.statuses, st)
	return !h.refuse[st.InstanceID]
}

func (h *handler) Stored(c service.Cursor) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stored = c
}

func (h *handler) storedAt() service.Cursor {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stored
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
	got := map[string]workload.Status{}
	for _, s := range st {
		got[s.InstanceID] = s.Status
	}
	if n != 1 || got["a"] != workload.StatusRunning || got["b"] != workload.StatusPending {
		t.Errorf("subscribed %d times, statuses %+v", n, st)
	}

	l.Resubscribe()
	eventually(t, "subscribed again", func() bool { n, _ := h.seen(); return n == 2 && f.subscribeCount() == 2 })
	eventually(t, "connected again", l.Connected)
	h.mu.Lock()
	sub := h.subs[0]
	h.mu.Unlock()
	if !l.legacy.Load() || sub.Epoch != "" || h.storedAt() != (service.Cursor{}) {
		t.Errorf("RIK's stream: legacy %v, subscription %+v, stored %+v; want GetStatusUpdates, unnumbered", l.legacy.Load(), sub, h.storedAt())
	}
}

// Against a rik scheduler the link resumes where the handler says, tells
// whether the stream resumed, and reports the position of the statuses
// stored, in order, stopping at the first one not stored.
func TestRunResumes(t *testing.T) {
	f := &numbered{scheduler: &scheduler{statuses: make(chan *commonpb.InstanceMetric, 10)}, seq: 7}
	l := serve(t, f)
	h := &handler{resume: service.Cursor{Epoch: "e1", Seq: 7}, refuse: map[string]bool{"c": true}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, h) }()
	defer func() { cancel(); <-done }()

	eventually(t, "connected", l.Connected)
	if c := f.lastCursor(); c.GetEpoch() != "e1" || c.GetSeq() != 7 {
		t.Errorf("asked to resume at %v, want e1/7", c)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		f.statuses <- &commonpb.InstanceMetric{InstanceId: id, Status: commonpb.ResourceStatus_RUNNING}
	}
	eventually(t, "statuses", func() bool { _, st := h.seen(); return len(st) == 4 })
	_, st := h.seen()
	for _, s := range st {
		if s.InstanceID == "d" && s.At != (service.Cursor{Epoch: "e1", Seq: 11}) {
			t.Errorf("d's status at %+v, want e1/11", s.At)
		}
	}
	eventually(t, "position", func() bool { return h.storedAt().Seq == 9 })
	if got := h.storedAt(); got != (service.Cursor{Epoch: "e1", Seq: 9}) {
		t.Errorf("stored up to %+v, want e1/9 (c, 10, was not stored)", got)
	}
	h.mu.Lock()
	sub := h.subs[0]
	h.mu.Unlock()
	if !sub.Resumed || sub.Epoch != "e1" || l.legacy.Load() {
		t.Errorf("subscription %+v (legacy %v), want resumed in e1", sub, l.legacy.Load())
	}
}

// The position moves over the statuses stored, whatever order the
// workers finish them in, and stops before the first one not stored.
func TestDispatcherPosition(t *testing.T) {
	for _, tc := range []struct {
		name   string
		finish []uint64 // in this order; negative: not stored
		failed uint64
		want   uint64
	}{
		{"in order", []uint64{8, 9, 10}, 0, 10},
		{"out of order", []uint64{10, 8, 9}, 0, 10},
		{"a gap", []uint64{8, 10}, 0, 8},
		{"one not stored", []uint64{8, 10, 9, 11}, 10, 9},
		{"not stored first", []uint64{10, 11, 8, 9}, 10, 9},
	} {
		h := &handler{}
		d := &dispatcher{h: h, at: service.Cursor{Epoch: "e", Seq: 7}, done: map[uint64]bool{}, pending: []uint64{8, 9, 10, 11}}
		for _, seq := range tc.finish {
			d.finish(seq, seq != tc.failed)
		}
		if got := h.storedAt(); got.Seq != tc.want || (tc.want > 7 && got.Epoch != "e") {
			t.Errorf("%s: stored up to %+v, want e/%d", tc.name, got, tc.want)
		}
	}
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
