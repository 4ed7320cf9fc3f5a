package cgroups

import (
	"path/filepath"
	"slices"
	"strings"
)

// Summary describes the cgroups of a host: whether v1 hierarchies and a v2
// (unified) one are mounted, and the controllers they offer together.
type Summary struct {
	V1, V2      bool
	Controllers []string // sorted, each once
}

// Describe reads the host's cgroups from the text of /proc/self/mountinfo;
// read returns a file's content (the cgroup.controllers of a v2 root).
func Describe(mountinfo string, read func(path string) ([]byte, error)) Summary {
	var h Summary
	for _, hy := range withControllers(parseMountinfo(mountinfo), read) {
		h.V1 = h.V1 || !hy.V2
		h.V2 = h.V2 || hy.V2
		h.Controllers = append(h.Controllers, hy.Controllers...)
	}
	slices.Sort(h.Controllers)
	h.Controllers = slices.Compact(h.Controllers)
	return h
}

// withControllers fills in the controllers of the v2 hierarchies of hs.
func withControllers(hs []hierarchy, read func(path string) ([]byte, error)) []hierarchy {
	for i, h := range hs {
		if h.V2 {
			c, _ := read(filepath.Join(h.Root, "cgroup.controllers"))
			hs[i].Controllers = strings.Fields(string(c))
		}
	}
	return hs
}
