package scheduler

import (
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rik-org/rik/internal/pki"
)

// Readiness reasons of /readyz.
const (
	notReadyStarting = "starting: the gRPC servers are not serving yet"
	notReadyStopping = "stopping"
)

// healthState is the scheduler's health, served over HTTP (/healthz,
// /readyz) and by the gRPC health service on both ports: ready while both
// gRPC servers serve.
type healthState struct {
	grpc     *health.Server
	st       *state
	notReady atomic.Pointer[string] // nil: ready
}

func newHealth(st *state) *healthState {
	h := &healthState{grpc: health.NewServer(), st: st}
	h.setNotReady(notReadyStarting)
	return h
}

// register adds the gRPC health service to srv.
func (h *healthState) register(srv *grpc.Server) { healthpb.RegisterHealthServer(srv, h.grpc) }

// setReady marks the scheduler ready, on HTTP and gRPC.
func (h *healthState) setReady() {
	h.notReady.Store(nil)
	h.grpc.Resume()
}

// setNotReady marks the scheduler not ready for reason.
func (h *healthState) setNotReady(reason string) {
	h.notReady.Store(&reason)
	h.grpc.Shutdown() // every service NOT_SERVING
}

// healthReply is the JSON of /healthz and /readyz.
type healthReply struct {
	Status        string `json:"status"` // ok; ready or not ready
	Reason        string `json:"reason,omitempty"`
	NodesReady    int    `json:"nodesReady"`
	NodesNotReady int    `json:"nodesNotReady"`
}

func (h *healthState) reply(status string) healthReply {
	g := h.st.gauges()
	return healthReply{Status: status, NodesReady: g.ready, NodesNotReady: g.notReady}
}

// healthz answers 200 while the process serves HTTP.
func (h *healthState) healthz(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, http.StatusOK, h.reply("ok"))
}

// readyz answers 200 when ready, else 503 with the reason.
func (h *healthState) readyz(w http.ResponseWriter, _ *http.Request) {
	if reason := h.notReady.Load(); reason != nil {
		r := h.reply("not ready")
		r.Reason = *reason
		writeHealth(w, http.StatusServiceUnavailable, r)
		return
	}
	writeHealth(w, http.StatusOK, h.reply("ready"))
}

func writeHealth(w http.ResponseWriter, code int, v healthReply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// httpSecurity is how the metrics and health endpoint is served: over
// loopback, or by a scheduler serving plaintext, in plain HTTP and open;
// otherwise over TLS with the scheduler's certificate, /metrics only to a
// client presenting a controller certificate of the cluster CA (as the
// controllers' port asks), /healthz and /readyz to anyone.
func httpSecurity(sec *security, l net.Listener) *security {
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return nil
	}
	return sec
}

// requireController lets only holders of a controller certificate reach
// h (nil sec: everyone).
func requireController(sec *security, h http.Handler) http.Handler {
	if sec == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			w.Header().Set("WWW-Authenticate", "TLS client certificate")
			http.Error(w, "a client certificate of the cluster CA is required", http.StatusUnauthorized)
			return
		}
		role, _, err := pki.Identity(r.TLS.VerifiedChains[0][0])
		if err != nil || role != pki.RoleController {
			http.Error(w, "a controller certificate is required", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
