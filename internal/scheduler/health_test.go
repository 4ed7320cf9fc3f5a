package scheduler

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler/placement"
	"github.com/rik-org/rik/internal/testutil/promcheck"
)

func getHealth(t *testing.T, url string) (int, healthReply) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r healthReply
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %q: %v", url, b, err)
	}
	return resp.StatusCode, r
}

// The HTTP endpoint answers /healthz and /readyz, and the gRPC health
// service answers on the workers' port without a certificate (a node
// joining has none), over TLS.
func TestHealthEndpoints(t *testing.T) {
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := startSecure(t, Config{MetricsListener: ml})
	s.nodeAs("n1").register("n1", 1000, 1000)
	base := "http://" + ml.Addr().String()
	if code, r := getHealth(t, base+"/healthz"); code != 200 || r.Status != "ok" {
		t.Errorf("healthz: %d %+v", code, r)
	}
	if code, r := getHealth(t, base+"/readyz"); code != 200 || r.Status != "ready" || r.NodesReady != 1 {
		t.Errorf("readyz: %d %+v", code, r)
	}
	promcheck.CheckURL(t, base+"/metrics")
	anonymous := healthpb.NewHealthClient(dial(t, s.workerAddr, s.creds(pki.Pair{})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := anonymous.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health on the workers' port: %v, %v", resp, err)
	}
}

// /readyz says why the scheduler is not ready, and the gRPC health
// service follows.
func TestReadyzReason(t *testing.T) {
	st := newState(slog.New(slog.DiscardHandler), placement.Spread, time.Second, time.Second, time.Now)
	h := newHealth(st)
	for _, tc := range []struct {
		set    func()
		code   int
		reason string
		grpc   healthpb.HealthCheckResponse_ServingStatus
	}{
		{func() {}, 503, notReadyStarting, healthpb.HealthCheckResponse_NOT_SERVING},
		{h.setReady, 200, "", healthpb.HealthCheckResponse_SERVING},
		{func() { h.setNotReady(notReadyStopping) }, 503, notReadyStopping, healthpb.HealthCheckResponse_NOT_SERVING},
	} {
		tc.set()
		rec := httptest.NewRecorder()
		h.readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
		var r healthReply
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || rec.Code != tc.code || r.Reason != tc.reason {
			t.Errorf("readyz = %d %q (%v), want %d %q", rec.Code, rec.Body, err, tc.code, tc.reason)
		}
		resp, err := h.grpc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != tc.grpc {
			t.Errorf("gRPC health = %v, %v; want %v", resp, err, tc.grpc)
		}
	}
}

// fakeListener is a listener at a given address (nothing is accepted).
type fakeListener struct {
	net.Listener
	addr net.Addr
}

func (l fakeListener) Addr() net.Addr { return l.addr }

func TestHTTPSecurity(t *testing.T) {
	sec := &security{}
	for _, tc := range []struct {
		ip   string
		sec  *security
		want *security
	}{
		{"127.0.0.1", sec, nil},
		{"::1", sec, nil},
		{"10.0.0.1", sec, sec},
		{"0.0.0.0", sec, sec},
		{"10.0.0.1", nil, nil}, // an insecure scheduler
	} {
		l := fakeListener{addr: &net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 4997}}
		if got := httpSecurity(tc.sec, l); got != tc.want {
			t.Errorf("httpSecurity(%v, %s) = %v, want %v", tc.sec != nil, tc.ip, got, tc.want)
		}
	}
}

// Served over TLS (an address off loopback), /healthz and /readyz are
// open and /metrics is for controller certificates only.
func TestMetricsOverTLSNeedAControllerCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := loadSecurity(Config{CADir: dir}, []net.Addr{l.Addr()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := newState(slog.New(slog.DiscardHandler), placement.Spread, time.Second, time.Second, time.Now)
	h := newHealth(st)
	h.setReady()
	hs := httpServer(newMetrics(st), h, sec)
	go func() { _ = serveHTTP(hs, l) }()
	t.Cleanup(func() { hs.Close() })

	client := func(role pki.Role) *http.Client {
		var pair pki.Pair
		if role != "" {
			c, k, err := ca.Issue(pki.Template{Role: role, Name: "x"})
			if err != nil {
				t.Fatal(err)
			}
			pair = pki.Pair{CertPEM: c, KeyPEM: k}
		}
		cfg, err := pki.ClientTLS(pair, ca.CertPEM, "")
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}
	base := "https://" + l.Addr().String()
	for _, tc := range []struct {
		role pki.Role
		path string
		want int
	}{
		{"", "/healthz", 200},
		{"", "/readyz", 200},
		{"", "/metrics", 401},
		{pki.RoleNode, "/metrics", 403},
		{pki.RoleController, "/metrics", 200},
	} {
		resp, err := client(tc.role).Get(base + tc.path)
		if err != nil {
			t.Fatalf("%s as %q: %v", tc.path, tc.role, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s as %q: %d, want %d", tc.path, tc.role, resp.StatusCode, tc.want)
		}
	}
	// Plain HTTP gets nothing (Go's TLS server answers 400).
	if resp, err := http.Get("http://" + l.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS endpoint: %s", resp.Status)
		}
	}
}
