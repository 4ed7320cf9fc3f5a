package controller

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/controller/lease"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/store"
	"github.com/rik-org/rik/internal/store/bolt"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// fakeScheduler is a real gRPC server implementing the scheduler's
// controller service: it records orders and pushes statuses on demand.
type fakeScheduler struct {
	controllerpb.UnimplementedControllerServer

	mu         sync.Mutex
	orders     []*controllerpb.WorkloadScheduling
	subs       map[chan *commonpb.WorkerStatus]struct{}
	nodes      []*controllerpb.Node
	listCalls  int // ListNodes calls
	logs       func(*commonpb.LogRequest, grpc.ServerStreamingServer[commonpb.LogChunk]) error
	subscribed chan struct{}
	reject     error // returned by ScheduleInstance when set
	// onSchedule, when set, is called (without the lock) with every order
	// after it was recorded.
	onSchedule func(*controllerpb.WorkloadScheduling)
	// answerPad, when > 0, makes every order answered with a status (of
	// status UNKNOWN, its message answerPad bytes long) to every subscriber,
	// dropping a subscriber whose buffer is full, like the scheduler.
	answerPad int
	dropped   int // subscribers dropped for being slow
	// subscribeDelay holds a GetStatusUpdates call back before it
	// subscribes (and sends its headers), like a busy scheduler.
	subscribeDelay time.Duration
	// replay is sent to every subscriber first, as the scheduler sends the
	// last status of every instance it knows.
	replay []*commonpb.InstanceMetric
	// unsubscribed counts the orders received while nobody was subscribed:
	// the statuses answering them would be lost.
	unsubscribed int

	addr string
	srv  *grpc.Server
}

// startFakeScheduler listens on addr ("127.0.0.1:0" for a fresh port).
func startFakeScheduler(t testing.TB, addr string) *fakeScheduler {
	t.Helper()
	return startFakeSchedulerWith(t, addr, nil)
}

// startFakeSchedulerWith lets tune set the fake up before it serves.
func startFakeSchedulerWith(t testing.TB, addr string, tune func(*fakeScheduler)) *fakeScheduler {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port of a just-stopped server may take a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	f := &fakeScheduler{
		subs:       map[chan *commonpb.WorkerStatus]struct{}{},
		subscribed: make(chan struct{}, 100),
		addr:       ln.Addr().String(),
		srv:        grpc.NewServer(),
	}
	if tune != nil {
		tune(f)
	}
	controllerpb.RegisterControllerServer(f.srv, f)
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeScheduler) stop() { f.srv.Stop() }

func (f *fakeScheduler) ScheduleInstance(_ context.Context, o *controllerpb.WorkloadScheduling) (*emptypb.Empty, error) {
	f.mu.Lock()
	f.orders = append(f.orders, proto.Clone(o).(*controllerpb.WorkloadScheduling))
	if len(f.subs) == 0 {
		f.unsubscribed++
	}
	reject, hook := f.reject, f.onSchedule
	if f.answerPad > 0 {
		m := &commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: &commonpb.InstanceMetric{
			InstanceId: o.GetInstanceId(), Message: strings.Repeat("x", f.answerPad)}}}
		for ch := range f.subs {
			select {
			case ch <- m:
			default:
				delete(f.subs, ch)
				close(ch)
				f.dropped++
			}
		}
	}
	f.mu.Unlock()
	if hook != nil {
		hook(o)
	}
	if reject != nil {
		return nil, reject
	}
	return &emptypb.Empty{}, nil
}

// schedSubscriberBuffer is how many statuses a subscriber may lag behind before
// it is dropped, as in the real scheduler.
const schedSubscriberBuffer = 1024

func (f *fakeScheduler) GetStatusUpdates(_ *emptypb.Empty, stream grpc.ServerStreamingServer[commonpb.WorkerStatus]) error {
	ch := make(chan *commonpb.WorkerStatus, schedSubscriberBuffer)
	f.mu.Lock()
	delay := f.subscribeDelay
	f.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-stream.Context().Done():
		return nil
	}
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	f.mu.Lock()
	replay := f.replay
	f.mu.Unlock()
	for _, m := range replay {
		if err := stream.Send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: m}}); err != nil {
			return err
		}
	}
	f.subscribed <- struct{}{}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return status.Error(codes.ResourceExhausted, "status subscriber too slow: dropped")
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
}

func (f *fakeScheduler) ListNodes(context.Context, *emptypb.Empty) (*controllerpb.NodeList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	list := &controllerpb.NodeList{}
	for _, n := range f.nodes { // copies: tests change f.nodes while gRPC encodes
		list.Nodes = append(list.Nodes, proto.Clone(n).(*controllerpb.Node))
	}
	return list, nil
}

// setNodes replaces the nodes ListNodes answers.
func (f *fakeScheduler) setNodes(nodes ...*controllerpb.Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = nodes
}

// listCount is the number of ListNodes calls so far.
func (f *fakeScheduler) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listCalls
}

func (f *fakeScheduler) GetLogs(req *commonpb.LogRequest, stream grpc.ServerStreamingServer[commonpb.LogChunk]) error {
	f.mu.Lock()
	fn := f.logs
	f.mu.Unlock()
	return fn(req, stream)
}

// push sends an instance status to every subscriber.
func (f *fakeScheduler) push(m *commonpb.InstanceMetric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		ch <- &commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{Instance: m}}
	}
}

func (f *fakeScheduler) ordersFor(id string) []*controllerpb.WorkloadScheduling {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*controllerpb.WorkloadScheduling
	for _, o := range f.orders {
		if o.GetInstanceId() == id {
			out = append(out, o)
		}
	}
	return out
}

func (f *fakeScheduler) waitSubscribed(t testing.TB) {
	t.Helper()
	select {
	case <-f.subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not subscribe to the fake scheduler")
	}
}

// The records the API answers with.
type (
	workloadRecord = service.WorkloadRecord
	instanceRecord = service.InstanceRecord
)

// env is a controller on a bolt store, linked to a fake scheduler, served
// by httptest.
type env struct {
	t     testing.TB
	s     *Server
	st    store.Store
	sched *fakeScheduler
	http  *httptest.Server
	// token is sent by do and auth: the first admin token, unless a test
	// changes it ("" sends none).
	token string
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RIK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t testing.TB, opts ...func(*Config)) *env {
	t.Helper()
	return newEnvTuned(t, tuning{}, opts...)
}

// newEnvTuned lets a test change the server's periods and clock.
func newEnvTuned(t testing.TB, tune tuning, opts ...func(*Config)) *env {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatalf("opening bolt: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	sched := startFakeScheduler(t, "127.0.0.1:0")
	cfg := Config{Store: st, SchedulerAddr: "http://" + sched.addr + "/", Logger: testLogger(t),
		AdminTokenFile: filepath.Join(t.TempDir(), "admin.token")}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := newServer(cfg, tune)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if err := s.bootstrapAdmin(context.Background()); err != nil {
		t.Fatalf("bootstrapAdmin: %v", err)
	}
	token := ""
	if !cfg.Insecure {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		switch {
		case err == nil:
			token = strings.TrimSpace(string(b))
		case errors.Is(err, fs.ErrNotExist): // a shared store already had one
			created, err := s.svc.CreateToken(context.Background(), api.CreateTokenRequest{Role: "admin", Description: "test"})
			if err != nil {
				t.Fatal(err)
			}
			token = created.Token
		default:
			t.Fatalf("reading the admin token: %v", err)
		}
	}
	hs := serveTest(t, s)
	sched.waitSubscribed(t)
	eventually(t, "scheduler link up", s.link.Connected) // set just after the fake says subscribed
	// The lease is taken by this controller, or another on a shared store.
	eventually(t, "controller lease taken", func() bool {
		if s.lease.Held() {
			return true
		}
		kv, err := s.cfg.Store.Get(context.Background(), lease.Key)
		var v lease.Value
		return err == nil && json.Unmarshal(kv.Value, &v) == nil && v.Holder != s.lease.ID()
	})
	return &env{t: t, s: s, st: st, sched: sched, http: hs, token: token}
}

// serveTest starts s's background work and serves its API with httptest,
// until the test ends.
func serveTest(t testing.TB, s *Server) *httptest.Server {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	s.start(ctx, &wg)
	hs := httptest.NewServer(s.api.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		cancel()
		wg.Wait()
		s.link.Close()
	})
	return hs
}

// subscribeEvents opens the event stream as token and returns its events
// once subscribed (its ": connected" comment read).
func subscribeEvents(t testing.TB, ctx context.Context, hs *httptest.Server, token string) <-chan sseEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/v0/events", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := readEvents(resp.Body)
	select {
	case ev := <-ch:
		if ev.name != "comment" || ev.data != ": connected" {
			t.Fatalf("first event %+v, want the connected comment", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event stream: not connected")
	}
	return ch
}

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

// auth adds the env's token to req and returns it.
func (e *env) auth(req *http.Request) *http.Request {
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	return req
}

type response struct {
	code int
	body []byte
	hdr  http.Header
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

func (r response) errorText(t testing.TB) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("no error text in %s", r.body)
	}
	return e.Error
}

func (e *env) do(method, path string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.http.Client().Do(e.auth(req))
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("reading %s %s: %v", method, path, err)
	}
	return response{code: resp.StatusCode, body: data, hdr: resp.Header}
}

func (e *env) must(code int, method, path string, body any) response {
	e.t.Helper()
	r := e.do(method, path, body)
	if r.code != code {
		e.t.Fatalf("%s %s: got %d %s, want %d", method, path, r.code, r.body, code)
	}
	return r
}

const podJSON = `{"apiVersion":"v1","kind":"Pod","name":%q,"spec":{"containers":[{"name":"web","image":"nginx"}]}%s}`

func podDef(name string) string   { return fmt.Sprintf(podJSON, name, "") }
func podNever(name string) string { return fmt.Sprintf(podJSON, name, `,"restartPolicy":"Never"`) }

func (e *env) createWorkload(def string) workloadRecord {
	e.t.Helper()
	var rec workloadRecord
	e.must(http.StatusCreated, "POST", "/api/v0/workloads.create", def).decode(e.t, &rec)
	return rec
}

func (e *env) createInstances(body any) []instanceRecord {
	e.t.Helper()
	var recs []instanceRecord
	e.must(http.StatusCreated, "POST", "/api/v0/instances.create", body).decode(e.t, &recs)
	return recs
}

func (e *env) getInstance(ref string) (instanceRecord, int) {
	e.t.Helper()
	r := e.do("GET", "/api/v0/instances.get/"+ref, nil)
	var rec instanceRecord
	if r.code == http.StatusOK {
		r.decode(e.t, &rec)
	}
	return rec, r.code
}

// metric is the value of an unlabelled metric in /metrics ("" if absent).
func (e *env) metric(name string) string {
	e.t.Helper()
	for _, line := range strings.Split(string(e.must(http.StatusOK, "GET", "/metrics", nil).body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// eventually polls cond for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, cond, func() string { return "waiting for " + what })
}

// waitInstance waits until the instance satisfies cond.
func (e *env) waitInstance(id string, what string, cond func(workload.Instance) bool) workload.Instance {
	e.t.Helper()
	var last instanceRecord
	eventually(e.t, what, func() bool {
		rec, code := e.getInstance(id)
		last = rec
		return code == http.StatusOK && cond(rec.Value)
	})
	return last.Value
}

func (e *env) waitGone(id string) {
	e.t.Helper()
	eventually(e.t, "instance "+id+" removed", func() bool {
		_, code := e.getInstance(id)
		return code == http.StatusNotFound
	})
}

func (e *env) waitOrders(id string, n int) []*controllerpb.WorkloadScheduling {
	e.t.Helper()
	var got []*controllerpb.WorkloadScheduling
	eventually(e.t, "orders for "+id, func() bool {
		got = e.sched.ordersFor(id)
		return len(got) >= n
	})
	return got
}

// barrier creates an instance of workloadID and pushes a status for it: once
// stored, every status pushed before has been handled (one ordered stream).
func (e *env) barrier(workloadID string) {
	e.t.Helper()
	in := e.createInstances(map[string]any{"workload_id": workloadID})[0]
	e.sched.push(&commonpb.InstanceMetric{InstanceId: in.ID, Status: commonpb.ResourceStatus_CREATING, Message: "barrier"})
	e.waitInstance(in.ID, "barrier", func(i workload.Instance) bool { return i.Message == "barrier" })
}
