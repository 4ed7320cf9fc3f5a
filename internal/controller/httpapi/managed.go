package httpapi

import (
	"net/http"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

// Managed workloads: apply, scale, rollout state, history, undo.

// workloadsApply creates or updates a managed workload. The body is a
// definition in JSON, or in YAML with a Content-Type naming yaml.
func (a *API) workloadsApply(w http.ResponseWriter, r *http.Request) {
	data, err := a.readBody(w, r, nil)
	if err == nil && strings.Contains(r.Header.Get("Content-Type"), "yaml") {
		if data, err = yaml.YAMLToJSON(data); err != nil {
			err = errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid YAML body: %v", err)
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.svc.Apply(r.Context(), data)
	a.replyApplied(w, r, res, err)
}

// replyApplied answers an apply or undo: 201 when it created the workload.
func (a *API) replyApplied(w http.ResponseWriter, r *http.Request, res api.Applied[workload.Workload], err error) {
	code := http.StatusOK
	if err == nil {
		if res.Created {
			code = http.StatusCreated
		}
		a.log.Info("workload applied", "workload", res.Workload.Name, "revision", res.Revision, "changed", res.Changed, "by", callerToken(r))
		res.Workload = showWorkload(r, res.Workload)
	}
	a.reply(w, r, code, res, err)
}

func (a *API) workloadsScale(w http.ResponseWriter, r *http.Request) {
	call(a, w, r, http.StatusOK, a.svc.Scale)
}

func (a *API) workloadsUndo(w http.ResponseWriter, r *http.Request) {
	var req api.UndoRequest
	_, err := a.readBody(w, r, &req)
	var res api.Applied[workload.Workload]
	if err == nil {
		res, err = a.svc.Undo(r.Context(), req)
	}
	a.replyApplied(w, r, res, err)
}

func (a *API) workloadRollout(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Rollout(r.Context(), r.PathValue("id"))
	a.reply(w, r, http.StatusOK, st, err)
}

func (a *API) workloadsRollouts(w http.ResponseWriter, r *http.Request) {
	sts, err := a.svc.Rollouts(r.Context())
	if sts == nil {
		sts = []api.Rollout{}
	}
	a.reply(w, r, http.StatusOK, sts, err)
}

func (a *API) workloadHistory(w http.ResponseWriter, r *http.Request) {
	revs, err := a.svc.History(r.Context(), r.PathValue("id"))
	for i := range revs {
		revs[i].Definition = showWorkload(r, service.WorkloadRecord{Value: revs[i].Definition}).Value
	}
	a.reply(w, r, http.StatusOK, revs, err)
}
