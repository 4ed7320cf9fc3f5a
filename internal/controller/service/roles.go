package service

import "errors"

// Role is what an API token allows. Each role includes the ones below it:
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
)

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

// Valid reports whether r is one of the roles a token can have.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a holder of r may do what needs need.
func (r Role) Allows(need Role) bool {
	return r.rank() > 0 && r.rank() >= need.rank()
}

// ParseRole checks a role name given by a user.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", errors.New("must be admin, operator or viewer")
}

// Identity is who makes a request: the id of its token and its role.
type Identity struct {
	TokenID string // "" when tokens are off
	Role    Role
}
