package scheduler

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler/placement"
)

// The fuzz targets below feed each gRPC handler of the scheduler with
// arbitrary message bytes (decoded as the server would, with
// proto.Unmarshal), as one of several callers: in plaintext, as node n1
// (over TLS), or as another certificate naming n1. The handlers must not
// panic, unary errors are gRPC statuses, and the state stays consistent.

// fuzzToken is a join token valid in every fuzz environment.
const (
	fuzzTokenID     = "abcdef"
	fuzzTokenSecret = "0123456789abcdef"
	fuzzToken       = fuzzTokenID + "." + fuzzTokenSecret
)

// fuzzFixture is what every execution shares: a CA, the callers'
// certificates and a valid request.
type fuzzFixture struct {
	sec      *security
	n1, evil *x509.Certificate // node n1, and another key named n1
	csrPEM   []byte            // a request made with n1's key
	defs     []fuzzInstance    // the environment's instances, parsed once
}

type fuzzInstance struct {
	id, def, hint string
	req           placement.Request
}

var (
	fixtureOnce sync.Once
	fixture     fuzzFixture
	fixtureErr  error
)

func loadFixture(f *testing.F) fuzzFixture {
	fixtureOnce.Do(func() { fixture, fixtureErr = newFixture() })
	if fixtureErr != nil {
		f.Fatal(fixtureErr)
	}
	return fixture
}

func newFixture() (fuzzFixture, error) {
	dir, err := os.MkdirTemp("", "rik-fuzz-ca-")
	if err != nil {
		return fuzzFixture{}, err
	}
	// The directory is left for the OS: fuzz workers share it until exit.
	ca, err := pki.Init(dir, "fuzz CA")
	if err != nil {
		return fuzzFixture{}, err
	}
	sum := sha256.Sum256([]byte(fuzzTokenSecret))
	toks, _ := json.Marshal([]pki.JoinToken{{ID: fuzzTokenID, SecretHash: hex.EncodeToString(sum[:]), Created: time.Now()}})
	if err := os.WriteFile(filepath.Join(dir, pki.TokensFile), toks, 0o600); err != nil {
		return fuzzFixture{}, err
	}
	fx := fuzzFixture{sec: &security{ca: ca, tokensDir: dir, nodeTTL: time.Hour}}
	for _, in := range []fuzzInstance{{id: "i1", def: pod(100, 100, 8080)}, {id: "i2", def: pod(100, 100, 0)}, {id: "big", def: pod(100000, 100, 0), hint: "n1"}} {
		if in.req, err = parseRequest(in.def); err != nil {
			return fx, err
		}
		fx.defs = append(fx.defs, in)
	}
	key, err := pki.NewKey()
	if err != nil {
		return fx, err
	}
	if fx.csrPEM, err = pki.NewCSR(key, "n1"); err != nil {
		return fx, err
	}
	for _, c := range []struct {
		dst *(*x509.Certificate)
		pub any
	}{{&fx.n1, key.Public()}, {&fx.evil, nil}} {
		pub := c.pub
		if pub == nil {
			k, _ := pki.NewKey()
			pub = k.Public()
		}
		certPEM, err := ca.Sign(pub, pki.Template{Role: pki.RoleNode, Name: "n1"})
		if err != nil {
			return fx, err
		}
		if *c.dst, err = pki.ParseCert(certPEM); err != nil {
			return fx, err
		}
	}
	return fx, nil
}

// fuzzEnv is one execution's scheduler: nodes n1 and n2 with an instance
// each, one pending instance, n1's log stream attached.
type fuzzEnv struct {
	st     *state
	worker *workerAPI // serving TLS
	plain  *workerAPI // serving plaintext
	ctrl   *controllerAPI
	fx     fuzzFixture
}

func newFuzzEnv(t *testing.T, fx fuzzFixture) *fuzzEnv {
	st := newState(testLogger(t), placement.Spread, 10*time.Second, time.Second, time.Now)
	stop := make(chan struct{})
	e := &fuzzEnv{st: st, fx: fx,
		worker: &workerAPI{st: st, sec: fx.sec, stop: stop},
		plain:  &workerAPI{st: st, stop: stop},
		ctrl:   &controllerAPI{st: st, stop: stop}}
	reg := func(name, key string) {
		if _, err := st.register(&commonpb.WorkerRegistration{Hostname: name, Kinds: []string{"pod", "function"},
			Capacity: &commonpb.Resources{CpuMillis: 4000, MemoryMib: 4096}}, key); err != nil {
			t.Fatal(err)
		}
	}
	create := func(in fuzzInstance) {
		st.create(&controllerpb.WorkloadScheduling{InstanceId: in.id, WorkloadId: "w", Definition: in.def, Node: in.hint}, in.req)
	}
	reg("n1", pki.Hash(fx.n1))
	create(fx.defs[0]) // on n1
	reg("n2", "")
	create(fx.defs[1]) // on n2
	create(fx.defs[2]) // pending, last seen on n1
	if err := st.attachLogs(&logConn{node: "n1", key: pki.Hash(fx.n1), out: newQueue[*commonpb.LogRequest](), closed: newCloser()}); err != nil {
		t.Fatal(err)
	}
	return e
}

// as picks the caller from b: plaintext, n1, or another key named n1.
func (e *fuzzEnv) as(b byte) (*workerAPI, context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // streaming handlers return once their input is consumed
	switch b % 3 {
	case 0:
		return e.plain, ctx
	case 1:
		return e.worker, tlsPeer(ctx, e.fx.n1)
	default:
		return e.worker, tlsPeer(ctx, e.fx.evil)
	}
}

func tlsPeer(ctx context.Context, c *x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}}})
}

// fakeStream is a grpc.ServerStream receiving the given message bytes.
type fakeStream struct {
	ctx context.Context
	mu  sync.Mutex
	in  [][]byte
}

func (s *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (s *fakeStream) SendHeader(metadata.MD) error { return nil }
func (s *fakeStream) SetTrailer(metadata.MD)       {}
func (s *fakeStream) Context() context.Context     { return s.ctx }
func (s *fakeStream) SendMsg(any) error            { return nil }

func (s *fakeStream) RecvMsg(m any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.in) == 0 {
		return io.EOF
	}
	b := s.in[0]
	s.in = s.in[1:]
	return proto.Unmarshal(b, m.(proto.Message))
}

// split cuts data into messages, each prefixed by its length (one byte).
func split(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(int(data[0]), len(data)-1)
		out = append(out, data[1:1+n])
		data = data[1+n:]
	}
	return out
}

// frame is split's inverse, for seeds.
func frame(msgs ...proto.Message) []byte {
	var out []byte
	for _, m := range msgs {
		b, _ := proto.Marshal(m)
		out = append(append(out, byte(len(b))), b...)
	}
	return out
}

func mustMarshal(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return b
}

// checkUnary checks a unary handler's error is a gRPC status.
func checkUnary(t *testing.T, err error) {
	if _, ok := status.FromError(err); !ok {
		t.Fatalf("handler error is not a gRPC status: %v", err)
	}
}

func FuzzRegister(f *testing.F) {
	fx := loadFixture(f)
	f.Add(byte(1), mustMarshal(&commonpb.WorkerRegistration{Hostname: "n1", Capacity: &commonpb.Resources{CpuMillis: 1000},
		Instances: []*commonpb.InstanceMetric{{InstanceId: "i1", Status: running}, {InstanceId: "i2", Status: running}, {InstanceId: "big", Status: running}}}))
	f.Add(byte(2), mustMarshal(&commonpb.WorkerRegistration{Hostname: "n1"}))
	f.Add(byte(0), mustMarshal(&commonpb.WorkerRegistration{Hostname: "n3", Capacity: &commonpb.Resources{CpuMillis: 1 << 50}}))
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		e := newFuzzEnv(t, fx)
		w, ctx := e.as(who)
		reg := &commonpb.WorkerRegistration{}
		if proto.Unmarshal(data, reg) != nil {
			return
		}
		_ = w.Register(reg, &grpc.GenericServerStream[commonpb.WorkerRegistration, workerpb.InstanceScheduling]{ServerStream: &fakeStream{ctx: ctx}})
		checkInvariants(t, e.st)
	})
}

func FuzzSendStatusUpdates(f *testing.F) {
	fx := loadFixture(f)
	inst := func(name, id string, st commonpb.ResourceStatus) *commonpb.WorkerStatus {
		return &commonpb.WorkerStatus{Identifier: name, Status: &commonpb.WorkerStatus_Instance{Instance: &commonpb.InstanceMetric{InstanceId: id, Status: st}}}
	}
	f.Add(byte(1), frame(inst("n1", "i1", running), inst("n1", "i2", commonpb.ResourceStatus_FAILED), inst("n1", "big", running)))
	f.Add(byte(0), frame(inst("n2", "i2", commonpb.ResourceStatus_TERMINATED), &commonpb.WorkerStatus{Identifier: "n2",
		Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{Capacity: &commonpb.Resources{CpuMillis: 1 << 40}}}}))
	f.Add(byte(2), frame(inst("n1", "i1", commonpb.ResourceStatus_FAILED)))
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		e := newFuzzEnv(t, fx)
		w, ctx := e.as(who)
		_ = w.SendStatusUpdates(&grpc.GenericServerStream[commonpb.WorkerStatus, emptypb.Empty]{ServerStream: &fakeStream{ctx: ctx, in: split(data)}})
		checkInvariants(t, e.st)
	})
}

func FuzzServeLogs(f *testing.F) {
	fx := loadFixture(f)
	f.Add(byte(1), frame(&commonpb.LogChunk{RequestId: "n1"}, &commonpb.LogChunk{RequestId: "r", Data: []byte("x"), Eof: true}))
	f.Add(byte(2), frame(&commonpb.LogChunk{RequestId: "n1"}))
	f.Add(byte(0), frame(&commonpb.LogChunk{RequestId: "n9"}, &commonpb.LogChunk{RequestId: "n9", Error: "e"}))
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		e := newFuzzEnv(t, fx)
		w, ctx := e.as(who)
		_ = w.ServeLogs(&grpc.GenericServerStream[commonpb.LogChunk, commonpb.LogRequest]{ServerStream: &fakeStream{ctx: ctx, in: split(data)}})
		checkInvariants(t, e.st)
	})
}

func FuzzJoin(f *testing.F) {
	fx := loadFixture(f)
	f.Add(byte(0), mustMarshal(&workerpb.JoinRequest{Token: fuzzToken, Hostname: "n3", CsrPem: string(fx.csrPEM)}))
	f.Add(byte(0), mustMarshal(&workerpb.JoinRequest{Token: fuzzToken, Hostname: "n1", CsrPem: string(fx.csrPEM)}))
	f.Add(byte(0), mustMarshal(&workerpb.JoinRequest{Token: fuzzTokenID + ".x", Hostname: "n1"}))
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		e := newFuzzEnv(t, fx)
		w, ctx := e.as(who)
		req := &workerpb.JoinRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		out, err := w.Join(ctx, req)
		checkUnary(t, err)
		if err == nil && w.sec != nil {
			checkJoined(t, fx, out, req.GetHostname())
		}
	})
}

// checkJoined checks a certificate Join or RenewCertificate gave: a node
// certificate of the CA, for name.
func checkJoined(t *testing.T, fx fuzzFixture, out *workerpb.NodeCertificate, name string) {
	c, err := pki.ParseCert([]byte(out.GetCertificatePem()))
	if err != nil {
		t.Fatal(err)
	}
	role, got, err := pki.Identity(c)
	if err != nil || role != pki.RoleNode || got != name {
		t.Fatalf("issued %s %q (%v), want a node certificate for %q", role, got, err, name)
	}
}

func FuzzRenewCertificate(f *testing.F) {
	fx := loadFixture(f)
	f.Add(byte(1), mustMarshal(&workerpb.RenewRequest{CsrPem: string(fx.csrPEM)}))
	f.Add(byte(2), mustMarshal(&workerpb.RenewRequest{CsrPem: string(fx.csrPEM)}))
	f.Add(byte(1), mustMarshal(&workerpb.RenewRequest{CsrPem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"}))
	f.Fuzz(func(t *testing.T, who byte, data []byte) {
		e := newFuzzEnv(t, fx)
		w, ctx := e.as(who)
		req := &workerpb.RenewRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		out, err := w.RenewCertificate(ctx, req)
		checkUnary(t, err)
		if err == nil {
			if who%3 != 1 {
				t.Fatalf("caller %d renewed n1's certificate", who%3)
			}
			checkJoined(t, fx, out, "n1")
		}
	})
}

func FuzzScheduleInstance(f *testing.F) {
	fx := loadFixture(f)
	f.Add(mustMarshal(&controllerpb.WorkloadScheduling{InstanceId: "i3", Definition: pod(100, 100, 8080), Action: create, Node: "n1"}))
	f.Add(mustMarshal(&controllerpb.WorkloadScheduling{InstanceId: "i1", Action: commonpb.WorkloadRequestKind_DESTROY}))
	f.Add(mustMarshal(&controllerpb.WorkloadScheduling{InstanceId: "big", Definition: functionDef(), Action: create}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newFuzzEnv(t, fx)
		req := &controllerpb.WorkloadScheduling{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		_, err := e.ctrl.ScheduleInstance(context.Background(), req)
		checkUnary(t, err)
		checkInvariants(t, e.st)
	})
}

func functionDef() string {
	return `{"apiVersion":"v1","kind":"Function","name":"f","spec":{"function":{"execution":{"rootfs":"http://h/r.ext4","vcpus":1,"memory":128},"exposure":[{"port":9000,"targetPort":80}]}}}`
}

func FuzzGetStatusUpdates(f *testing.F) {
	fx := loadFixture(f)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newFuzzEnv(t, fx)
		req := &emptypb.Empty{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = e.ctrl.GetStatusUpdates(req, &grpc.GenericServerStream[emptypb.Empty, commonpb.WorkerStatus]{ServerStream: &fakeStream{ctx: ctx}})
		e.st.mu.Lock()
		subs := len(e.st.subs)
		e.st.mu.Unlock()
		if subs != 0 {
			t.Fatalf("%d subscribers left after the stream ended", subs)
		}
	})
}

func FuzzListNodes(f *testing.F) {
	fx := loadFixture(f)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newFuzzEnv(t, fx)
		req := &emptypb.Empty{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		out, err := e.ctrl.ListNodes(context.Background(), req)
		checkUnary(t, err)
		if len(out.GetNodes()) != 2 {
			t.Fatalf("listed %d nodes, want 2", len(out.GetNodes()))
		}
	})
}

func FuzzGetLogs(f *testing.F) {
	fx := loadFixture(f)
	f.Add(mustMarshal(&commonpb.LogRequest{InstanceId: "i1", Follow: true, Tail: 10}))
	f.Add(mustMarshal(&commonpb.LogRequest{InstanceId: "i2", Container: "c"}))
	f.Add(mustMarshal(&commonpb.LogRequest{InstanceId: "big", Tail: -1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := newFuzzEnv(t, fx)
		req := &commonpb.LogRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := e.ctrl.GetLogs(req, &grpc.GenericServerStream[commonpb.LogRequest, commonpb.LogChunk]{ServerStream: &fakeStream{ctx: ctx}})
		if _, ok := status.FromError(err); !ok {
			t.Fatalf("GetLogs error is not a gRPC status: %v", err)
		}
		e.st.mu.Lock()
		routes := len(e.st.logRoutes)
		e.st.mu.Unlock()
		if routes != 0 {
			t.Fatalf("%d log routes left after GetLogs returned", routes)
		}
	})
}
