// Package schedlinktest has a fake scheduler for the tests of the riklet's
// session: a real gRPC Worker server on loopback that records what a
// riklet sends (registrations, statuses, heartbeats, log chunks) and lets
// the test send orders and log requests.
package schedlinktest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/testutil"
)

// WaitFor bounds the waits of the helpers.
const WaitFor = 10 * time.Second

// Scheduler is the fake scheduler.
type Scheduler struct {
	workerpb.UnimplementedWorkerServer
	Addr string
	srv  *grpc.Server

	orders  chan *workerpb.InstanceScheduling
	logReqs chan *commonpb.LogRequest

	mu              sync.Mutex
	noHeader        bool   // like a scheduler that sends no headers on Register
	heartbeatHeader string // sent as the registration's heartbeat header when set
	regs            []*commonpb.WorkerRegistration
	statuses        []*commonpb.InstanceMetric
	heartbeats      []*commonpb.WorkerMetric
	logHellos       []string
	chunks          []*commonpb.LogChunk
}

// Start serves on addr ("127.0.0.1:0" for a new port) until the test
// ends or Stop.
func Start(t testing.TB, addr string) *Scheduler {
	t.Helper()
	var lis net.Listener
	var err error
	// The port of a scheduler stopped just before may take a moment to free.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &Scheduler{
		Addr:    lis.Addr().String(),
		srv:     grpc.NewServer(),
		orders:  make(chan *workerpb.InstanceScheduling, 100),
		logReqs: make(chan *commonpb.LogRequest, 100),
	}
	workerpb.RegisterWorkerServer(s.srv, s)
	go s.srv.Serve(lis)
	t.Cleanup(s.srv.Stop)
	return s
}

// Stop stops serving, as a scheduler that goes down.
func (s *Scheduler) Stop() { s.srv.Stop() }

// SendNoHeader makes Register send no headers (not rik's scheduler).
func (s *Scheduler) SendNoHeader() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noHeader = true
}

// SetHeartbeatHeader makes Register allow heartbeats at most every d.
func (s *Scheduler) SetHeartbeatHeader(d string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heartbeatHeader = d
}

// Register implements workerpb.WorkerServer.
func (s *Scheduler) Register(reg *commonpb.WorkerRegistration, stream grpc.ServerStreamingServer[workerpb.InstanceScheduling]) error {
	s.mu.Lock()
	s.regs = append(s.regs, reg)
	noHeader, md := s.noHeader, metadata.MD{}
	if s.heartbeatHeader != "" {
		md = metadata.Pairs(grpcutil.HeartbeatHeader, s.heartbeatHeader)
	}
	s.mu.Unlock()
	if !noHeader {
		if err := stream.SendHeader(md); err != nil { // as rik's scheduler: "registered"
			return err
		}
	}
	for {
		select {
		case o := <-s.orders:
			if err := stream.Send(o); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// SendStatusUpdates implements workerpb.WorkerServer.
func (s *Scheduler) SendStatusUpdates(stream grpc.ClientStreamingServer[commonpb.WorkerStatus, emptypb.Empty]) error {
	for {
		ws, err := stream.Recv()
		if err != nil {
			return err
		}
		s.mu.Lock()
		if m := ws.GetInstance(); m != nil {
			s.statuses = append(s.statuses, m)
		}
		if m := ws.GetWorker(); m != nil {
			s.heartbeats = append(s.heartbeats, m)
		}
		s.mu.Unlock()
	}
}

// ServeLogs implements workerpb.WorkerServer.
func (s *Scheduler) ServeLogs(stream grpc.BidiStreamingServer[commonpb.LogChunk, commonpb.LogRequest]) error {
	hello, err := stream.Recv()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.logHellos = append(s.logHellos, hello.GetRequestId())
	s.mu.Unlock()
	go func() {
		for {
			select {
			case r := <-s.logReqs:
				if stream.Send(r) != nil {
					return
				}
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		c, err := stream.Recv()
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.chunks = append(s.chunks, c)
		s.mu.Unlock()
	}
}

// --- orders and requests

// Order sends an order to the registered node.
func (s *Scheduler) Order(o *workerpb.InstanceScheduling) { s.orders <- o }

// Create orders instance id (workload "wl-<id>", name "name-<id>") with
// the definition def.
func (s *Scheduler) Create(id, def string) {
	s.Order(&workerpb.InstanceScheduling{InstanceId: id, Definition: def, Action: commonpb.WorkloadRequestKind_CREATE,
		WorkloadId: "wl-" + id, InstanceName: "name-" + id})
}

// Destroy orders instance id destroyed.
func (s *Scheduler) Destroy(id string) {
	s.Order(&workerpb.InstanceScheduling{InstanceId: id, Action: commonpb.WorkloadRequestKind_DESTROY, WorkloadId: "wl-" + id})
}

// RequestLogs sends a log request to the node.
func (s *Scheduler) RequestLogs(r *commonpb.LogRequest) { s.logReqs <- r }

// --- what the node sent

// Registrations lists the registrations received.
func (s *Scheduler) Registrations() []*commonpb.WorkerRegistration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*commonpb.WorkerRegistration(nil), s.regs...)
}

// Heartbeats lists the heartbeats received.
func (s *Scheduler) Heartbeats() []*commonpb.WorkerMetric {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*commonpb.WorkerMetric(nil), s.heartbeats...)
}

// LogHellos lists the request ids of the log streams' first chunks.
func (s *Scheduler) LogHellos() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logHellos...)
}

// StatusesOf lists the statuses received for one instance, in order.
func (s *Scheduler) StatusesOf(id string) []*commonpb.InstanceMetric {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*commonpb.InstanceMetric
	for _, m := range s.statuses {
		if m.GetInstanceId() == id {
			out = append(out, m)
		}
	}
	return out
}

// ChunksOf lists the log chunks received for request rid, in order.
func (s *Scheduler) ChunksOf(rid string) []*commonpb.LogChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*commonpb.LogChunk
	for _, c := range s.chunks {
		if c.GetRequestId() == rid {
			out = append(out, c)
		}
	}
	return out
}

// WaitStatus waits for a status of id matching ok and returns it.
func (s *Scheduler) WaitStatus(t testing.TB, id string, ok func(*commonpb.InstanceMetric) bool) *commonpb.InstanceMetric {
	t.Helper()
	var got *commonpb.InstanceMetric
	testutil.Eventually(t, WaitFor, func() bool {
		for _, m := range s.StatusesOf(id) {
			if ok(m) {
				got = m
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("statuses of %s: %v", id, Names(s.StatusesOf(id))) })
	return got
}

// WaitReady waits until the node registered (the n-th time) and its
// status stream sends heartbeats, and returns the n-th registration.
func (s *Scheduler) WaitReady(t testing.TB, n int) *commonpb.WorkerRegistration {
	t.Helper()
	testutil.Eventually(t, WaitFor, func() bool { return len(s.Registrations()) >= n && len(s.Heartbeats()) > 0 },
		func() string {
			return fmt.Sprintf("%d registrations, %d heartbeats", len(s.Registrations()), len(s.Heartbeats()))
		})
	return s.Registrations()[n-1]
}

// Is matches the statuses st.
func Is(st commonpb.ResourceStatus) func(*commonpb.InstanceMetric) bool {
	return func(m *commonpb.InstanceMetric) bool { return m.GetStatus() == st }
}

// Names lists statuses as "STATUS(Reason)".
func Names(ms []*commonpb.InstanceMetric) []string {
	var out []string
	for _, m := range ms {
		s := m.GetStatus().String()
		if m.GetReason() != "" {
			s += "(" + m.GetReason() + ")"
		}
		out = append(out, s)
	}
	return out
}
