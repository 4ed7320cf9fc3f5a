package httpapi

import (
	"net/http"

	"github.com/rik-org/rik/api"
)

// Token management routes (admin only, see routeRoles).

func (a *API) tokensCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateTokenRequest
	if _, err := a.readBody(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	created, err := a.svc.CreateToken(r.Context(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("token created", "token", created.ID, "role", created.Value.Role, "by", callerToken(r))
	writeJSON(w, http.StatusCreated, created)
}

func (a *API) tokensList(w http.ResponseWriter, r *http.Request) {
	items, err := a.svc.ListTokens(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, items)
}

func (a *API) tokensDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id, err := a.svc.DeleteToken(r.Context(), ref)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("token deleted", "token", id, "by", callerToken(r))
	w.WriteHeader(http.StatusNoContent)
}
