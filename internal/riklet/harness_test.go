package riklet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/grpcutil"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

const waitFor = 10 * time.Second

// fakeScheduler is a real gRPC Worker server that records what a riklet
// sends and lets the test send orders and log requests.
type fakeScheduler struct {
	workerpb.UnimplementedWorkerServer
	addr string
	srv  *grpc.Server

	orders  chan *workerpb.InstanceScheduling
	logReqs chan *commonpb.LogRequest

	mu       sync.Mutex
	noHeader bool // like a scheduler that sends no headers on Register
	regs     []*commonpb.WorkerRegistration
	// heartbeatHeader, when set, is sent as the registration's heartbeat
	// header (the longest interval allowed).
	heartbeatHeader string
	statuses        []*commonpb.InstanceMetric
	heartbeats      []*commonpb.WorkerMetric
	logHellos       []string
	chunks          []*commonpb.LogChunk
}

// startScheduler serves on addr ("127.0.0.1:0" for a new port).
func startScheduler(t testing.TB, addr string) *fakeScheduler {
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
	s := &fakeScheduler{
		addr:    lis.Addr().String(),
		srv:     grpc.NewServer(),
		orders:  make(chan *workerpb.InstanceScheduling, 100),
		logReqs: make(chan *commonpb.LogRequest, 100),
	}
	workerpb.RegisterWorkerServer(s.srv, s)
	go s.srv.Serve(lis)
	t.Cleanup(s.srv.Stop)
	return s
}

func (s *fakeScheduler) Register(reg *commonpb.WorkerRegistration, stream grpc.ServerStreamingServer[workerpb.InstanceScheduling]) error {
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

func (s *fakeScheduler) SendStatusUpdates(stream grpc.ClientStreamingServer[commonpb.WorkerStatus, emptypb.Empty]) error {
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

func (s *fakeScheduler) ServeLogs(stream grpc.BidiStreamingServer[commonpb.LogChunk, commonpb.LogRequest]) error {
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

func (s *fakeScheduler) registrations() []*commonpb.WorkerRegistration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*commonpb.WorkerRegistration(nil), s.regs...)
}

func (s *fakeScheduler) heartbeatCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heartbeats)
}

// statusesOf lists the statuses received for one instance, in order.
func (s *fakeScheduler) statusesOf(id string) []*commonpb.InstanceMetric {
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

func (s *fakeScheduler) order(action commonpb.WorkloadRequestKind, id, def string) {
	s.orders <- &workerpb.InstanceScheduling{
		InstanceId: id, Definition: def, Action: action, WorkloadId: "wl-" + id, InstanceName: "name-" + id,
	}
}

func (s *fakeScheduler) create(id, def string) { s.order(commonpb.WorkloadRequestKind_CREATE, id, def) }
func (s *fakeScheduler) destroy(id string)     { s.order(commonpb.WorkloadRequestKind_DESTROY, id, "") }

// waitStatus waits for a status of id matching ok and returns it.
func (s *fakeScheduler) waitStatus(t testing.TB, id string, ok func(*commonpb.InstanceMetric) bool) *commonpb.InstanceMetric {
	t.Helper()
	var got *commonpb.InstanceMetric
	eventually(t, func() bool {
		for _, m := range s.statusesOf(id) {
			if ok(m) {
				got = m
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("statuses of %s: %v", id, statusNames(s.statusesOf(id))) })
	return got
}

// countStatus is the number of statuses st received, all instances.
func (s *fakeScheduler) countStatus(st commonpb.ResourceStatus) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.statuses {
		if m.GetStatus() == st {
			n++
		}
	}
	return n
}

func is(st commonpb.ResourceStatus) func(*commonpb.InstanceMetric) bool {
	return func(m *commonpb.InstanceMetric) bool { return m.GetStatus() == st }
}

func statusNames(ms []*commonpb.InstanceMetric) []string {
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

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, cond func() bool, msg func() string) {
	t.Helper()
	testutil.Eventually(t, waitFor, cond, msg)
}

// node is a riklet under test.
type node struct {
	cfg     Config
	pods    *runtimetest.Factory
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// testConfig is a riklet config with fast knobs and a fake pod runtime.
func testConfig(t testing.TB, sched *fakeScheduler, stateDir string) (Config, *runtimetest.Factory) {
	pods := &runtimetest.Factory{Kind: workload.KindPod, Dir: filepath.Join(stateDir, "fake")}
	return Config{
		MasterAddr:        sched.addr,
		Hostname:          "node-1",
		StateDir:          stateDir,
		Runtimes:          []RuntimeFactory{pods.New},
		Labels:            map[string]string{"zone": "a"},
		HeartbeatInterval: 50 * time.Millisecond,
		Insecure:          true,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		knobs: &knobs{
			restartBase: 10 * time.Millisecond, restartMax: 40 * time.Millisecond,
			connMin: 10 * time.Millisecond, connMax: 50 * time.Millisecond,
		},
	}, pods
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// startNode runs a riklet until the test ends (or stop).
func startNode(t testing.TB, cfg Config, pods *runtimetest.Factory) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cfg: cfg, pods: pods, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- Run(ctx, cfg) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *node) stop(t testing.TB) {
	t.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Errorf("Run did not return after cancel")
	}
}

// ready waits until the node registered (the n-th time) and its status
// stream sends heartbeats.
func waitReady(t testing.TB, s *fakeScheduler, regs int) *commonpb.WorkerRegistration {
	t.Helper()
	eventually(t, func() bool { return len(s.registrations()) >= regs && s.heartbeatCount() > 0 },
		func() string {
			return fmt.Sprintf("%d registrations, %d heartbeats", len(s.registrations()), s.heartbeatCount())
		})
	r := s.registrations()
	return r[regs-1]
}

// setup starts a scheduler and a riklet and waits until it is registered.
func setup(t *testing.T) (*fakeScheduler, *node) {
	t.Helper()
	sched := startScheduler(t, "127.0.0.1:0")
	cfg, pods := testConfig(t, sched, t.TempDir())
	n := startNode(t, cfg, pods)
	waitReady(t, sched, 1)
	return sched, n
}

func (n *node) fake(t *testing.T) *runtimetest.Fake {
	t.Helper()
	f := n.pods.Last()
	if f == nil {
		t.Fatal("no fake runtime built")
	}
	return f
}

// waitLedger waits until the ledger file on disk satisfies ok (the agent
// reports a status before its ledger write is done).
func waitLedger(t *testing.T, dir string, ok func(ledgerFile) bool) ledgerFile {
	t.Helper()
	var l ledgerFile
	eventually(t, func() bool { l = readLedger(t, dir); return ok(l) }, func() string { return fmt.Sprintf("ledger = %+v", l) })
	return l
}

// readLedger reads the ledger file from disk.
func readLedger(t *testing.T, dir string) ledgerFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ledger.json"))
	if os.IsNotExist(err) {
		return ledgerFile{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var f ledgerFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("ledger: %v", err)
	}
	return f
}

func podDef(name, policy string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","name":%q,"restartPolicy":%q,
		"spec":{"containers":[{"name":"c","image":"alpine:3","ports":[{"port":8080,"targetPort":80}]}]}}`, name, policy)
}

const functionDef = `{"apiVersion":"v1","kind":"Function","name":"fn",
	"spec":{"function":{"execution":{"rootfs":"http://127.0.0.1:1/rootfs.ext4"}}}}`
