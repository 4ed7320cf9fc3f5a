package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/version"
)

// Nodes, health and the API's own documents.

func (a *API) nodesList(w http.ResponseWriter, r *http.Request) {
	nodes, err := a.svc.Nodes(r.Context())
	a.reply(w, r, http.StatusOK, nodes, err)
}

func schedulerState(connected bool) string {
	if connected {
		return "connected"
	}
	return "disconnected"
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	leader := a.svc.Leader()
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Scheduler: schedulerState(a.svc.SchedulerConnected()), Leader: &leader,
		Version: version.Version, GoVersion: version.GoVersion()})
}

// storeCheckTimeout bounds the store's answer to /readyz.
const storeCheckTimeout = 2 * time.Second

// ready says whether this controller can serve: 503 with the reason while
// its store does not answer, or its link to the scheduler is down (orders
// would only be queued).
func (a *API) ready(w http.ResponseWriter, r *http.Request) {
	connected := a.svc.SchedulerConnected()
	h := api.Health{Status: "ready", Scheduler: schedulerState(connected)}
	ctx, cancel := context.WithTimeout(r.Context(), storeCheckTimeout)
	defer cancel()
	switch err := a.svc.CheckStore(ctx); {
	case err != nil:
		h.Reason = "store unreachable: " + err.Error()
	case !connected:
		h.Reason = "scheduler link down"
	}
	if h.Reason != "" {
		h.Status = "not ready"
		writeJSON(w, http.StatusServiceUnavailable, h)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (a *API) openAPI(w http.ResponseWriter, r *http.Request) {
	serveDoc(w, "application/yaml", api.OpenAPI)
}

func (a *API) schema(w http.ResponseWriter, r *http.Request) {
	serveDoc(w, "application/schema+json", api.WorkloadSchema)
}

func serveDoc(w http.ResponseWriter, contentType string, doc []byte) {
	if len(doc) == 0 {
		writeError(w, http.StatusNotFound, "document not available")
		return
	}
	w.Header().Set("Content-Type", contentType)
	_, _ = w.Write(doc)
}
