package scheduler

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
)

// secureHarness is a scheduler serving TLS with a test CA.
type secureHarness struct {
	*harness
	ca  *pki.CA
	dir string
}

func startSecure(t testing.TB, cfg Config) *secureHarness {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.Init(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	cfg.CADir = dir
	s := &secureHarness{harness: startScheduler(t, cfg), ca: ca, dir: dir}
	s.harness = s.as(s.issue(pki.RoleController, "ctrl"), s.issue(pki.RoleController, "ctrl"))
	return s
}

// issue makes a certificate pair of the test CA.
func (s *secureHarness) issue(role pki.Role, name string) pki.Pair {
	s.t.Helper()
	c, k, err := s.ca.Issue(pki.Template{Role: role, Name: name})
	if err != nil {
		s.t.Fatal(err)
	}
	return pki.Pair{CertPEM: c, KeyPEM: k}
}

// as is a harness whose clients present these certificates (an empty
// pair: none). Both verify the scheduler against the CA.
func (s *secureHarness) as(worker, ctrl pki.Pair) *harness {
	s.t.Helper()
	h := *s.harness
	h.worker = workerpb.NewWorkerClient(dial(s.t, h.workerAddr, s.creds(worker)))
	h.ctrl = controllerpb.NewControllerClient(dial(s.t, h.ctrlAddr, s.creds(ctrl)))
	return &h
}

func (s *secureHarness) creds(p pki.Pair) grpc.DialOption {
	s.t.Helper()
	cfg, err := pki.ClientTLS(p, s.ca.CertPEM, "")
	if err != nil {
		s.t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// nodeAs is a harness for a node holding a certificate for name (its
// controller client is a controller's, to look at the scheduler).
func (s *secureHarness) nodeAs(name string) *harness {
	return s.as(s.issue(pki.RoleNode, name), s.issue(pki.RoleController, "ctrl"))
}

func wantCode(t testing.TB, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: %v, want %s", what, err, want)
	}
}

// registerErr opens a Register stream and returns how it was answered.
func registerErr(h *harness, reg *commonpb.WorkerRegistration) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := h.worker.Register(ctx, reg)
	if err != nil {
		return err
	}
	// Accepted: the server sends headers. Refused: it ends the stream
	// without, and Recv tells why.
	md, err := stream.Header()
	if err != nil {
		return err
	}
	if md == nil {
		_, err = stream.Recv()
		return err
	}
	return nil
}

func TestControllerPortOnlyForControllers(t *testing.T) {
	s := startSecure(t, Config{})
	anon := s.as(pki.Pair{}, pki.Pair{})
	node := s.as(pki.Pair{}, s.issue(pki.RoleNode, "n1"))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	order := &controllerpb.WorkloadScheduling{InstanceId: "i1", Action: commonpb.WorkloadRequestKind_DESTROY}

	// No certificate: the handshake itself fails.
	if _, err := anon.ctrl.ScheduleInstance(ctx, order); status.Code(err) != codes.Unavailable {
		t.Fatalf("order without certificate: %v, want Unavailable (handshake refused)", err)
	}
	stream, err := anon.ctrl.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil {
		t.Fatal("subscribed without a certificate")
	}
	// A node's certificate: refused by role.
	_, err = node.ctrl.ScheduleInstance(ctx, order)
	wantCode(t, "order with a node certificate", err, codes.PermissionDenied)
	stream, err = node.ctrl.GetStatusUpdates(ctx, &emptypb.Empty{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "subscription with a node certificate", err, codes.PermissionDenied)
	_, err = node.ctrl.ListNodes(ctx, &emptypb.Empty{})
	wantCode(t, "ListNodes with a node certificate", err, codes.PermissionDenied)
	// Plaintext against the TLS port: refused.
	plain := controllerpb.NewControllerClient(dial(t, s.ctrlAddr))
	if _, err := plain.ListNodes(ctx, &emptypb.Empty{}); err == nil {
		t.Fatal("plaintext client served")
	}
	// The controller's certificate works.
	c := s.subscribe()
	s.create("i1", pod(0, 0, 0))
	c.expect("i1", pending)
}

func TestWorkerPortNeedsNodeCertificate(t *testing.T) {
	s := startSecure(t, Config{})
	reg := &commonpb.WorkerRegistration{Hostname: "n1"}
	anon := s.as(pki.Pair{}, pki.Pair{})
	wantCode(t, "Register without certificate", registerErr(anon, reg), codes.Unauthenticated)
	ctrl := s.as(s.issue(pki.RoleController, "n1"), pki.Pair{})
	wantCode(t, "Register with a controller certificate", registerErr(ctrl, reg), codes.PermissionDenied)
	// Another CA's node certificate: the handshake fails.
	other, _ := pki.Init(t.TempDir(), "")
	fc, fk, _ := other.Issue(pki.Template{Role: pki.RoleNode, Name: "n1"})
	foreign := s.as(pki.Pair{CertPEM: fc, KeyPEM: fk}, pki.Pair{})
	// (The client does not even send it: the server asks for this CA's.)
	if c := status.Code(registerErr(foreign, reg)); c != codes.Unauthenticated && c != codes.Unavailable {
		t.Fatalf("Register with another CA's certificate: %s, want refused", c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	st, err := anon.worker.SendStatusUpdates(ctx)
	if err == nil {
		_, err = st.CloseAndRecv()
	}
	wantCode(t, "SendStatusUpdates without certificate", err, codes.Unauthenticated)
	_, err = anon.worker.RenewCertificate(ctx, &workerpb.RenewRequest{})
	wantCode(t, "RenewCertificate without certificate", err, codes.Unauthenticated)
}

// A node speaks only for itself: its name, and the instances placed on it.
func TestNodeSpeaksOnlyForItself(t *testing.T) {
	s := startSecure(t, Config{})
	a, b := s.nodeAs("a"), s.nodeAs("b")
	wantCode(t, "a registering as b", registerErr(a, &commonpb.WorkerRegistration{Hostname: "b"}), codes.PermissionDenied)

	c := s.subscribe()
	nb := b.register("b", 1000, 1000)
	s.create("i1", pod(100, 100, 0))
	nb.expectOrder("i1", create)
	c.expect("i1", pending)
	nb.report("i1", running)
	c.expect("i1", running)

	// a, registered, reports b's instance as its own: dropped.
	na := a.register("a", 1000, 1000)
	na.report("i1", commonpb.ResourceStatus_FAILED)
	na.sync(a)
	// a sends statuses as b: its stream is ended.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	st, err := a.worker.SendStatusUpdates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&commonpb.WorkerStatus{Identifier: "b", Status: &commonpb.WorkerStatus_Instance{Instance: &commonpb.InstanceMetric{InstanceId: "i1", Status: commonpb.ResourceStatus_FAILED}}})
	_, err = st.CloseAndRecv()
	wantCode(t, "a's status as b", err, codes.PermissionDenied)
	// a's log stream as b: refused.
	ls, err := a.worker.ServeLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ls.Send(&commonpb.LogChunk{RequestId: "b"})
	_, err = ls.Recv()
	wantCode(t, "a's log stream as b", err, codes.PermissionDenied)

	nb.sync(b)
	if got := s.node("b").GetInstances(); got != 1 {
		t.Fatalf("b holds %d instances, want 1", got)
	}
	select { // every status was processed (sync): none is on its way
	case m := <-c.ch:
		t.Fatalf("controller saw %v after a's forged statuses", m)
	default:
	}
}

// A second node under a live node's name is refused, not a replacement;
// the same key reconnecting replaces its stream; once the first is gone,
// a new certificate for the name takes over.
func TestSecondNodeUnderNameRefused(t *testing.T) {
	s := startSecure(t, Config{})
	a2pair := s.issue(pki.RoleNode, "a")
	a1, a2 := s.nodeAs("a"), s.as(a2pair, pki.Pair{})
	n1 := a1.register("a", 1000, 1000)
	wantCode(t, "second a, other key", registerErr(a2, &commonpb.WorkerRegistration{Hostname: "a"}), codes.AlreadyExists)
	select {
	case err := <-n1.ended:
		t.Fatalf("first a's stream ended: %v", err)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// The other key may not send statuses nor serve logs for a.
	st, err := a2.worker.SendStatusUpdates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&commonpb.WorkerStatus{Identifier: "a", Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{}}})
	_, err = st.CloseAndRecv()
	wantCode(t, "second a's heartbeat", err, codes.PermissionDenied)
	ls, err := a2.worker.ServeLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ls.Send(&commonpb.LogChunk{RequestId: "a"})
	_, err = ls.Recv()
	wantCode(t, "second a's log stream", err, codes.PermissionDenied)

	// Nor renew its certificate while the first a is live.
	key2, _ := pki.ParseKey(a2pair.KeyPEM)
	csr2, _ := pki.NewCSR(key2, "a")
	_, err = a2.worker.RenewCertificate(ctx, &workerpb.RenewRequest{CsrPem: string(csr2)})
	wantCode(t, "second a renewing", err, codes.AlreadyExists)

	// Reconnect with the same key: replaces.
	n1b := a1.register("a", 1000, 1000)
	if err := <-n1.ended; status.Code(err) != codes.Aborted {
		t.Fatalf("replaced stream ended with %v, want Aborted", err)
	}
	// The first a goes away: the new key takes the name over.
	n1b.cancel()
	eventually(t, "a disconnected", func() bool {
		return registerErr(a2, &commonpb.WorkerRegistration{Hostname: "a"}) == nil
	})
}

func TestJoin(t *testing.T) {
	s := startSecure(t, Config{NodeCertTTL: time.Hour})
	anon := s.as(pki.Pair{}, pki.Pair{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	now := time.Now()
	tok, _, err := pki.CreateToken(s.dir, time.Hour, "test", now)
	if err != nil {
		t.Fatal(err)
	}
	expired, _, _ := pki.CreateToken(s.dir, time.Millisecond, "", now.Add(-time.Minute))
	revoked, _, _ := pki.CreateToken(s.dir, time.Hour, "", now)
	if err := pki.RevokeToken(s.dir, revoked); err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "ignored")
	join := func(h *harness, token, name string, csr []byte) (*workerpb.NodeCertificate, error) {
		return h.worker.Join(ctx, &workerpb.JoinRequest{Token: token, Hostname: name, CsrPem: string(csr)})
	}
	for what, token := range map[string]string{"expired": expired, "revoked": revoked, "empty": "", "forged": strings.Split(tok, ".")[0] + ".aaaaaaaaaaaaaaaa"} {
		_, err := join(anon, token, "n1", csr)
		if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != pki.ErrBadToken.Error() {
			t.Errorf("Join with %s token: %v, want Unauthenticated %q", what, err, pki.ErrBadToken)
		}
	}
	if _, err := join(anon, tok, "n1/../x", csr); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Join with a bad hostname: %v", err)
	}
	if _, err := join(anon, tok, "n1", []byte("not a csr")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Join with a bad CSR: %v", err)
	}
	got, err := join(anon, tok, "n1", csr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.CheckIssued([]byte(got.GetCertificatePem()), key, s.ca.Cert, pki.RoleNode, "n1"); err != nil {
		t.Fatalf("joined certificate: %v", err)
	}
	if got.GetCaCertificatePem() != string(s.ca.CertPEM) {
		t.Fatal("Join returned another CA certificate")
	}
	// The certificate registers as n1.
	keyPEM, _ := pki.EncodeKey(key)
	n1 := s.as(pki.Pair{CertPEM: []byte(got.GetCertificatePem()), KeyPEM: keyPEM}, pki.Pair{})
	n1.register("n1", 1000, 1000)
	// While n1 is live, another key may not join as n1; its own key may.
	other, _ := pki.NewKey()
	otherCSR, _ := pki.NewCSR(other, "n1")
	_, err = join(anon, tok, "n1", otherCSR)
	wantCode(t, "Join under a live node's name", err, codes.AlreadyExists)
	if _, err := join(anon, tok, "n1", csr); err != nil {
		t.Fatalf("Join again with the live node's key: %v", err)
	}
	// Renewal: same key only, same name.
	renewed, err := n1.worker.RenewCertificate(ctx, &workerpb.RenewRequest{CsrPem: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.CheckIssued([]byte(renewed.GetCertificatePem()), key, s.ca.Cert, pki.RoleNode, "n1"); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	_, err = n1.worker.RenewCertificate(ctx, &workerpb.RenewRequest{CsrPem: string(otherCSR)})
	wantCode(t, "renewal for another key", err, codes.InvalidArgument)
}

func TestImpossibleCapacityRefused(t *testing.T) {
	s := startSecure(t, Config{})
	a := s.nodeAs("a")
	huge := &commonpb.Resources{CpuMillis: 1 << 50, MemoryMib: 1024}
	err := registerErr(a, &commonpb.WorkerRegistration{Hostname: "a", Capacity: huge})
	wantCode(t, "registration claiming 2^40 CPUs", err, codes.InvalidArgument)
	if !strings.Contains(status.Convert(err).Message(), "capacity.cpu_millis") {
		t.Errorf("error %q does not name the field", err)
	}
	n := a.register("a", 1000, 1000)
	n.send(&commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{Capacity: &commonpb.Resources{MemoryMib: -1}}}})
	_, err = n.statuses.CloseAndRecv()
	wantCode(t, "heartbeat with negative memory", err, codes.InvalidArgument)
	if got := s.node("a").GetCapacity().GetCpuMillis(); got != 1000 {
		t.Fatalf("capacity after refused claims = %d, want 1000", got)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	h := startScheduler(t, Config{})
	big := strings.Repeat("x", maxControllerMsg)
	err := h.schedule("i1", big, create, "")
	wantCode(t, "order larger than the limit", err, codes.ResourceExhausted)
}

// The serving certificate names the listening addresses (every interface
// address for an unspecified one) and the extra names.
func TestServingTemplate(t *testing.T) {
	addrs := []net.Addr{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 4995}, &net.TCPAddr{IP: net.IPv4zero, Port: 4996}}
	ifaces := func() []net.IP { return []net.IP{net.ParseIP("192.168.1.5"), net.ParseIP("10.1.2.3")} }
	tm := servingTemplate("host1", []string{"sched.example", " 172.16.0.1 ", ""}, addrs, ifaces)
	for _, want := range []string{"host1", "localhost", "sched.example"} {
		if !contains(tm.DNSNames, want) {
			t.Errorf("DNS names %v lack %s", tm.DNSNames, want)
		}
	}
	var ips []string
	for _, ip := range tm.IPs {
		ips = append(ips, ip.String())
	}
	for _, want := range []string{"127.0.0.1", "::1", "10.1.2.3", "192.168.1.5", "172.16.0.1"} {
		if !contains(ips, want) {
			t.Errorf("IPs %v lack %s", ips, want)
		}
	}
	if len(ips) != 5 {
		t.Errorf("IPs %v: duplicates", ips)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The serving certificate is issued again once two thirds through its
// lifetime; a failed renewal keeps the old one.
func TestServingCertRenewal(t *testing.T) {
	ca, err := pki.Init(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sc := &servingCert{ca: ca, tmpl: pki.Template{Role: pki.RoleScheduler, Name: "s", TTL: 3 * time.Hour},
		log: testLogger(t), now: func() time.Time { return now }}
	first, err := sc.get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Certificate) != 2 {
		t.Fatalf("served chain has %d certificates, want leaf and CA", len(first.Certificate))
	}
	now = now.Add(time.Hour)
	if again, _ := sc.get(nil); again != first {
		t.Fatal("certificate re-issued before two thirds of its lifetime")
	}
	now = now.Add(time.Hour + time.Minute)
	second, _ := sc.get(nil)
	if second == first {
		t.Fatal("certificate not re-issued after two thirds of its lifetime")
	}
	now = now.Add(3 * time.Hour)
	sc.tmpl.Role = "bogus" // issuing fails
	if kept, err := sc.get(nil); err != nil || kept != second {
		t.Fatalf("failed renewal: %v, kept the old one: %v", err, kept == second)
	}
}

// A node may not claim a pending instance its CREATE did not place there:
// neither by listing it at registration nor by reporting it.
func TestNodeCannotClaimPendingInstance(t *testing.T) {
	h := startScheduler(t, Config{RecoveryWindow: time.Minute})
	c := h.subscribe()
	h.create("i1", pod(8000, 100, 0)) // fits nowhere: pending
	c.expect("i1", pending)
	n := h.register("thief", 1000, 1000, &commonpb.InstanceMetric{InstanceId: "i1", Status: running})
	n.expectOrder("i1", commonpb.WorkloadRequestKind_DESTROY)
	n.report("i1", running)
	n.expectOrder("i1", commonpb.WorkloadRequestKind_DESTROY) // the status was processed
	if got := h.node("thief").GetInstances(); got != 0 {
		t.Fatalf("thief holds %d instances, want 0", got)
	}
	for len(c.ch) > 0 { // new PENDING reasons, as the thief's capacity counts
		if m := (<-c.ch).GetInstance(); m.GetNode() == "thief" || m.GetStatus() != pending {
			t.Fatalf("controller saw %v from the thief", m)
		}
	}
}
