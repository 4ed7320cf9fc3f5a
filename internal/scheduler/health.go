package scheduler

import (
	"encoding/json"
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
