package httpapi

import (
	"net/http"
)

// Token management routes (admin only, see routeRoles).

func (a *API) tokensCreate(w http.ResponseWriter, r *http.Request) {
	if created, ok := call(a, w, r, http.StatusCreated, a.svc.CreateToken); ok {
		a.log.Info("token created", "token", created.ID, "role", created.Value.Role, "by", callerToken(r))
	}
}

func (a *API) tokensList(w http.ResponseWriter, r *http.Request) {
	items, err := a.svc.ListTokens(r.Context())
	a.reply(w, r, http.StatusOK, items, err)
}

func (a *API) tokensDelete(w http.ResponseWriter, r *http.Request) {
	ref, err := a.readID(w, r)
	id := ""
	if err == nil {
		id, err = a.svc.DeleteToken(r.Context(), ref)
	}
	if err == nil {
		a.log.Info("token deleted", "token", id, "by", callerToken(r))
	}
	a.done(w, r, err)
}
