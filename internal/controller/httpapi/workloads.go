package httpapi

import (
	"net/http"

	"github.com/rik-org/rik/api"
)

// Workloads and instances: RIK's routes.

func (a *API) workloadsList(w http.ResponseWriter, r *http.Request) {
	recs, err := a.svc.ListWorkloads(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	for i := range recs {
		recs[i] = showWorkload(r, recs[i])
	}
	writeJSON(w, http.StatusOK, recs)
}

func (a *API) workloadInstances(w http.ResponseWriter, r *http.Request) {
	insts, err := a.svc.WorkloadInstances(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, insts)
}

func (a *API) workloadsCreate(w http.ResponseWriter, r *http.Request) {
	data, err := a.readBody(w, r, nil)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.svc.CreateWorkload(r.Context(), data)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("workload created", "workload", rec.Name, "id", rec.ID, "by", callerToken(r))
	writeJSON(w, http.StatusCreated, showWorkload(r, rec))
}

func (a *API) workloadsDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	if err == nil {
		err = a.svc.DeleteWorkload(r.Context(), ref)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) instancesList(w http.ResponseWriter, r *http.Request) {
	recs, err := a.svc.ListInstances(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, recs)
}

func (a *API) instanceGet(w http.ResponseWriter, r *http.Request) {
	rec, err := a.svc.GetInstance(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (a *API) instancesCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateInstancesRequest
	if _, err := a.readBody(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	created, err := a.svc.CreateInstances(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, created)
}

func (a *API) instancesDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	if err == nil {
		err = a.svc.DeleteInstance(r.Context(), ref)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
