package httpapi

import (
	"slices"
	"testing"
)

// Every route has an entry in the role table (its value is checked
// against openapi.yaml's x-rik-role), and the table names no other route.
func TestRouteRoles(t *testing.T) {
	patterns := routePatterns(t)
	for _, p := range patterns {
		if role, ok := routeRoles[p]; !ok || (role != rolePublic && !role.Valid()) {
			t.Errorf("route %q: role %q in routeRoles", p, role)
		}
	}
	for p := range routeRoles {
		if !slices.Contains(patterns, p) {
			t.Errorf("routeRoles has %q, which is no route", p)
		}
	}
}
