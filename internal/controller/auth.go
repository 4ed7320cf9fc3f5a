package controller

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/rik-org/rik/internal/workload"
)

// Role is what a bearer token allows. Each role includes the ones below it:
// admin > operator > viewer.
type Role string

const (
	// RoleAdmin: everything, token management included.
	RoleAdmin Role = "admin"
	// RoleOperator: workloads and instances (create, delete, logs) and
	// every read.
	RoleOperator Role = "operator"
	// RoleViewer: reads only; secrets (env values) are redacted.
	RoleViewer Role = "viewer"
	// rolePublic marks a route open without a token (health probes).
	rolePublic Role = "public"
)

// Roles lists the roles a token can have.
var Roles = []Role{RoleAdmin, RoleOperator, RoleViewer}

// rank orders the roles; 0 is no role.
func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// allows reports whether a holder of r may use a route that needs need.
func (r Role) allows(need Role) bool {
	return need == rolePublic || (r.rank() > 0 && r.rank() >= need.rank())
}

// ParseRole checks a role name given by a user.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.rank() > 0 {
		return r, nil
	}
	return "", errors.New("must be admin, operator or viewer")
}

// routeRoles is the role each route needs: the one table authorization
// reads. A route missing here is refused to everyone but admins (and a
// test fails).
var routeRoles = map[string]Role{
	"GET /api/v0/workloads.list":           RoleViewer,
	"GET /api/v0/workloads.instances/{id}": RoleViewer,
	"POST /api/v0/workloads.create":        RoleOperator,
	"POST /api/v0/workloads.delete":        RoleOperator,
	"GET /api/v0/instances.list":           RoleViewer,
	"POST /api/v0/instances.create":        RoleOperator,
	"POST /api/v0/instances.delete":        RoleOperator,
	"GET /api/v0/instances.get/{id}":       RoleViewer,
	// Logs are the workload's own output, where secrets often end up.
	"GET /api/v0/instances.logs/{id}":  RoleOperator,
	"GET /api/v0/nodes.list":           RoleViewer,
	"GET /api/v0/events":               RoleViewer,
	"GET /api/v0/openapi.yaml":         RoleViewer,
	"GET /api/v0/workload.schema.json": RoleViewer,
	"POST /api/v0/tokens.create":       RoleAdmin,
	"GET /api/v0/tokens.list":          RoleAdmin,
	"POST /api/v0/tokens.delete":       RoleAdmin,
	"GET /healthz":                     rolePublic,
	"GET /readyz":                      rolePublic,
	"GET /metrics":                     RoleViewer,
	// The dashboard's files hold no data: its pages call the API with
	// the user's token.
	"GET /ui/": rolePublic,
}

// unmatchedRole is what a request no route matches needs: without a token
// it gets 401, not a 404 telling which routes exist.
const unmatchedRole = RoleViewer

// identity is who made a request: the token's id and role.
type identity struct {
	tokenID string
	role    Role
}

type identityKey struct{}

// roleOf is the role of the request's caller (admin when tokens are off).
func roleOf(r *http.Request) Role {
	id, _ := r.Context().Value(identityKey{}).(identity)
	return id.role
}

// authorize lets a request through to next only with a token whose role
// the route's entry in routeRoles allows; pattern names the route ("" when
// none matched). With Insecure every caller is admin.
func (s *Server) authorize(next http.Handler, pattern func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Insecure {
			next.ServeHTTP(w, withIdentity(r, identity{role: RoleAdmin}))
			return
		}
		p := pattern(r)
		need, ok := routeRoles[p]
		switch {
		case p == "":
			need = unmatchedRole
		case !ok:
			s.log.Error("route without an entry in the role table: admins only", "route", p)
			need = RoleAdmin
		}
		if need == rolePublic {
			next.ServeHTTP(w, r)
			return
		}
		id, err := s.tokens.verify(r.Context(), bearerToken(r))
		switch {
		case errors.Is(err, errBadToken):
			unauthorized(w)
			return
		case err != nil:
			s.log.Error("checking a token", "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot check the token now, retry")
			return
		case !id.role.allows(need):
			writeError(w, http.StatusForbidden, "forbidden: this needs the "+string(need)+" role, the token has "+string(id.role))
			return
		}
		next.ServeHTTP(w, withIdentity(r, id))
	})
}

func withIdentity(r *http.Request, id identity) *http.Request {
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

// RedactedValue replaces secrets in what viewers are shown.
const RedactedValue = "<redacted>"

// canSeeSecrets reports whether the caller may see env values.
func canSeeSecrets(r *http.Request) bool { return roleOf(r).allows(RoleOperator) }

// showWorkload is rec as the caller may see it: env values redacted for
// viewers. Every response carrying a definition goes through it.
func showWorkload(r *http.Request, rec workloadRecord) workloadRecord {
	if canSeeSecrets(r) {
		return rec
	}
	rec.Value = redactWorkload(rec.Value)
	return rec
}

// redactWorkload returns a copy of w with every env value replaced.
func redactWorkload(w workload.Workload) workload.Workload {
	cs := make([]workload.Container, len(w.Spec.Containers))
	for i, c := range w.Spec.Containers {
		if len(c.Env) > 0 {
			env := make([]workload.EnvVar, len(c.Env))
			for j, e := range c.Env {
				env[j] = workload.EnvVar{Name: e.Name, Value: RedactedValue}
			}
			c.Env = env
		}
		cs[i] = c
	}
	if w.Spec.Containers != nil {
		w.Spec.Containers = cs
	}
	return w
}
