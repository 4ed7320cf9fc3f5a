package bridgenet

import (
	"net/netip"
	"strings"

	"github.com/rik-org/rik/internal/riklet/podnet"
)

// functionOwner prefixes the owners of bridge-mode Functions' leases in
// the pod pool: ':' is in no instance id, so no pod can hold such a key.
const functionOwner = "function:"

// SplitPool shares one pod address pool between the pod runtime and
// bridge-mode Functions: each sees and lists only its own leases, so that
// neither ever releases the other's (each removes what it does not own
// when it recovers).
func SplitPool(a podnet.Allocator) (pods, functions podnet.Allocator) {
	return view{a, ""}, view{a, functionOwner}
}

// view is the part of a pool whose owners start with prefix ("" = those
// without any prefix of a view).
type view struct {
	a      podnet.Allocator
	prefix string
}

func (v view) Allocate(owner string) (netip.Prefix, error) { return v.a.Allocate(v.prefix + owner) }
func (v view) Release(owner string) error                  { return v.a.Release(v.prefix + owner) }
func (v view) Lookup(owner string) (netip.Prefix, bool)    { return v.a.Lookup(v.prefix + owner) }

func (v view) Owners() []string {
	var out []string
	for _, o := range v.a.Owners() {
		switch {
		case v.prefix == "" && !strings.HasPrefix(o, functionOwner):
			out = append(out, o)
		case v.prefix != "" && strings.HasPrefix(o, v.prefix):
			out = append(out, strings.TrimPrefix(o, v.prefix))
		}
	}
	return out
}
