package httpapi

import (
	"net/http"

	"github.com/rik-org/rik/api"
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
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Scheduler: schedulerState(a.svc.SchedulerConnected()), Leader: &leader})
}

// ready says whether this controller can serve: 503 while its link to the
// scheduler is down (orders would only be queued).
func (a *API) ready(w http.ResponseWriter, r *http.Request) {
	if !a.svc.SchedulerConnected() {
		writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: "not ready", Scheduler: schedulerState(false)})
		return
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ready", Scheduler: schedulerState(true)})
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
