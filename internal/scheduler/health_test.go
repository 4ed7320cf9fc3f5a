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
