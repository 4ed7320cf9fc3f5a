package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/rik-org/rik/internal/controller/service"
	"github.com/rik-org/rik/internal/errdefs"
	"github.com/rik-org/rik/internal/workload"
)

// rolePublic marks a route open without a token (health probes).
const rolePublic service.Role = "public"

// routeRoles is the role each route needs: the one table authorization
// reads. A route missing here is refused to everyone but admins (and a
// test fails).
var routeRoles = map[string]service.Role{
	"GET /api/v0/workloads.list":           service.RoleViewer,
	"GET /api/v0/workloads.instances/{id}": service.RoleViewer,
	"POST /api/v0/workloads.create":        service.RoleOperator,
	"POST /api/v0/workloads.delete":        service.RoleOperator,
	"POST /api/v0/workloads.apply":         service.RoleOperator,
	"POST /api/v0/workloads.scale":         service.RoleOperator,
	"POST /api/v0/workloads.undo":          service.RoleOperator,
	"GET /api/v0/workloads.rollout/{id}":   service.RoleViewer,
	"GET /api/v0/workloads.rollouts":       service.RoleViewer,
	"GET /api/v0/workloads.history/{id}":   service.RoleViewer,
	"GET /api/v0/instances.list":           service.RoleViewer,
	"POST /api/v0/instances.create":        service.RoleOperator,
	"POST /api/v0/instances.delete":        service.RoleOperator,
	"GET /api/v0/instances.get/{id}":       service.RoleViewer,
	// Logs are the workload's own output, where secrets often end up.
	"GET /api/v0/instances.logs/{id}":  service.RoleOperator,
	"GET /api/v0/nodes.list":           service.RoleViewer,
	"GET /api/v0/events":               service.RoleViewer,
	"GET /api/v0/events.list":          service.RoleViewer,
	"GET /api/v0/openapi.yaml":         service.RoleViewer,
	"GET /api/v0/workload.schema.json": service.RoleViewer,
	"POST /api/v0/tokens.create":       service.RoleAdmin,
	"GET /api/v0/tokens.list":          service.RoleAdmin,
	"POST /api/v0/tokens.delete":       service.RoleAdmin,
	"GET /healthz":                     rolePublic,
	"GET /readyz":                      rolePublic,
	"GET /metrics":                     service.RoleViewer,
	// The dashboard's files hold no data: its pages call the API with
	// the user's token.
	"GET /ui/": rolePublic,
}

// unmatchedRole is what a request no route matches needs: without a token
// it gets 401, not a 404 telling which routes exist.
const unmatchedRole = service.RoleViewer

type identityKey struct{}

// identityOf is who made the request (admin when tokens are off).
func identityOf(r *http.Request) service.Identity {
	id, _ := r.Context().Value(identityKey{}).(service.Identity)
	return id
}

// authorize lets a request through to next only with a token whose role
// the route's entry in routeRoles allows; pattern names the route ("" when
// none matched). With Insecure every caller is admin.
func (a *API) authorize(next http.Handler, pattern func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Insecure {
			next.ServeHTTP(w, withIdentity(r, service.Identity{Role: service.RoleAdmin}))
			return
		}
		p := pattern(r)
		need, ok := routeRoles[p]
		switch {
		case p == "":
			need = unmatchedRole
		case !ok:
			a.log.Error("route without an entry in the role table: admins only", "route", p)
			need = service.RoleAdmin
		}
		if need == rolePublic {
			next.ServeHTTP(w, r)
			return
		}
		id, err := a.svc.VerifyToken(r.Context(), bearerToken(r))
		switch {
		case errors.Is(err, errdefs.ErrUnauthenticated):
			unauthorized(w)
			return
		case err != nil:
			a.log.Error("checking a token", "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the token now, retry")
			return
		case !id.Role.Allows(need):
			writeError(w, http.StatusForbidden, "forbidden: this needs the "+string(need)+" role, the token has "+string(id.Role))
			return
		}
		next.ServeHTTP(w, withIdentity(r, id))
	})
}

func withIdentity(r *http.Request, id service.Identity) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
}

// bearerToken is the token of an "Authorization: Bearer ..." header, or "".
func bearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// unauthorized answers 401 the same way whatever was wrong with the token
// (missing, malformed, unknown, expired, revoked): no hint about which
// tokens exist.
func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="rik"`)
	writeError(w, http.StatusUnauthorized, "unauthorized: a valid bearer token is required")
}

// callerToken is the id of the token that made the request, for logs.
func callerToken(r *http.Request) string {
	if id := identityOf(r).TokenID; id != "" {
		return id
	}
	return "-"
}

// RedactedValue replaces secrets in what viewers are shown.
const RedactedValue = "<redacted>"

// showWorkload is rec as the caller may see it: env values redacted for
// viewers. Every answer carrying a definition goes through it.
func showWorkload(r *http.Request, rec service.WorkloadRecord) service.WorkloadRecord {
	if identityOf(r).Role.Allows(service.RoleOperator) {
		return rec
	}
	rec.Value = redactWorkload(rec.Value)
	return rec
}

// redactWorkload returns a copy of w with every env value replaced (its
// containers' and its function's).
func redactWorkload(w workload.Workload) workload.Workload {
	cs := make([]workload.Container, len(w.Spec.Containers))
	for i, c := range w.Spec.Containers {
		c.Env = redactEnv(c.Env)
		cs[i] = c
	}
	if w.Spec.Containers != nil {
		w.Spec.Containers = cs
	}
	if f := w.Spec.Function; f != nil && len(f.Execution.Env) > 0 {
		fc := *f
		fc.Execution.Env = redactEnv(f.Execution.Env)
		w.Spec.Function = &fc
	}
	return w
}

// redactEnv returns a copy of env with every value replaced.
func redactEnv(env []workload.EnvVar) []workload.EnvVar {
	if len(env) == 0 {
		return env
	}
	out := make([]workload.EnvVar, len(env))
	for j, e := range env {
		out[j] = workload.EnvVar{Name: e.Name, Value: RedactedValue}
	}
	return out
}
