package tarsafe

import (
	"fmt"
	"path"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	// maxSymlinks bounds the links followed in one resolution (Linux's MAXSYMLINKS).
	maxSymlinks = 40
	// maxLookups bounds the components looked up in one resolution, so
	// that links full of ".." cannot make an entry cost seconds.
	maxLookups = 4096
)

// cleanName turns an entry name into a clean slash path relative to the
// root, "" for the root itself. Leading slashes are dropped; a ".."
// component or a NUL byte is refused.
func cleanName(name string) (string, error) {
	if len(name) > MaxPathLen {
		return "", fmt.Errorf("%w: name of %d bytes, over %d", ErrInvalid, len(name), MaxPathLen)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: %q holds a NUL byte", ErrUnsafe, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the root", ErrUnsafe, name)
		}
	}
	return path.Clean("/" + name)[1:], nil
}

// splitName splits a clean relative path into its parent ("" for the root)
// and its last component.
func splitName(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// join joins a clean relative path and one component.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// parentOf is the parent of a clean relative path ("" for a top entry).
func parentOf(rel string) string {
	d, _ := splitName(rel)
	return d
}

// components lists the non-empty components of p.
func components(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}

type whiteoutKind int

const (
	notWhiteout whiteoutKind = iota
	whiteoutFile
	whiteoutDir // opaque: hides the lower layers' content of the directory
)

// classify tells whether base is a whiteout and, for a file whiteout, the
// name it hides. ".wh.", ".wh.." and ".wh..." are refused: they would hide
// the directory itself or its parent.
func classify(base string) (whiteoutKind, string, error) {
	if base == whiteoutOpaque {
		return whiteoutDir, "", nil
	}
	hidden, ok := strings.CutPrefix(base, whiteoutPrefix)
	if !ok {
		return notWhiteout, "", nil
	}
	if hidden == "" || hidden == "." || hidden == ".." {
		return 0, "", fmt.Errorf("%w: whiteout %q", ErrUnsafe, base)
	}
	return whiteoutFile, hidden, nil
}

// overlayXattr reports whether name is one of overlayfs' own attributes,
// which an archive must never set: they redirect lookups and hide files.
func overlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}
