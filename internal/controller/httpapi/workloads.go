package httpapi

import (
	"mime"
	"net/http"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/errdefs"
)

// Workloads and instances: RIK's routes.

func (a *API) workloadsList(w http.ResponseWriter, r *http.Request) {
	recs, err := a.svc.ListWorkloads(r.Context())
	for i := range recs {
		recs[i] = showWorkload(r, recs[i])
	}
	a.reply(w, r, http.StatusOK, recs, err)
}

func (a *API) workloadInstances(w http.ResponseWriter, r *http.Request) {
	insts, err := a.svc.WorkloadInstances(r.Context(), r.PathValue("id"))
	a.reply(w, r, http.StatusOK, insts, err)
}

func (a *API) workloadsCreate(w http.ResponseWriter, r *http.Request) {
	data, err := a.readBody(w, r, nil)
	if err == nil {
		data, err = yamlBodyToJSON(r, data)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.svc.CreateWorkload(r.Context(), data)
	if err == nil {
		a.log.Info("workload created", "workload", rec.Name, "id", rec.ID, "by", callerToken(r))
	}
	a.reply(w, r, http.StatusCreated, showWorkload(r, rec), err)
}

func (a *API) workloadsDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	if err == nil {
		err = a.svc.DeleteWorkload(r.Context(), ref)
	}
	a.done(w, r, err)
}

func (a *API) instancesList(w http.ResponseWriter, r *http.Request) {
	recs, err := a.svc.ListInstances(r.Context())
	a.reply(w, r, http.StatusOK, recs, err)
}

func (a *API) instanceGet(w http.ResponseWriter, r *http.Request) {
	rec, err := a.svc.GetInstance(r.Context(), r.PathValue("id"))
	a.reply(w, r, http.StatusOK, rec, err)
}

func (a *API) instancesCreate(w http.ResponseWriter, r *http.Request) {
	call(a, w, r, http.StatusCreated, a.svc.CreateInstances)
}

func (a *API) instancesDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	if err == nil {
		err = a.svc.DeleteInstance(r.Context(), ref)
	}
	a.done(w, r, err)
}

// yamlBodyToJSON converts a YAML body (Content-Type application/yaml: a
// definition pasted in the dashboard) to JSON; other bodies are returned
// as they are.
func yamlBodyToJSON(r *http.Request, data []byte) ([]byte, error) {
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/yaml", "application/x-yaml", "text/yaml":
	default:
		return data, nil
	}
	out, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid YAML body: %v", err)
	}
	return out, nil
}
