package tarsafe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

type kind uint8

const (
	absent kind = iota
	isDir
	isSymlink
	isOther // regular file, FIFO...
)

// node is what a path is in the union of the upper directory (the root,
// being written) over the lower layers.
type node struct {
	kind  kind
	mode  fs.FileMode // type of a non-directory
	link  string      // symlink target
	layer int         // non-directory: -1 the upper, else an index in union.lower
	upper bool        // directory: the upper has it as a directory
	// lowers: directory whose lower layers' content shows through (no
	// opaque upper directory, no lower non-directory, on the way).
	lowers bool
}

// lowerNode is what a path is in the union of the lower layers alone,
// which never changes while a layer is applied. What exists is cached:
// the cache is bounded by the lower layers' size, not by the archive.
type lowerNode struct {
	node
	dirs []int // directory: the lower layers holding it, top first
}

// union looks paths up in the upper directory over the lower ones, the way
// overlayfs does. Every path it takes is clean, relative and resolved: no
// component is a symlink in the union. Lookups read the layers by path; a
// layer is only asked about a path whose parents it holds as directories.
type union struct {
	upper string
	lower []string // top first
	cache map[string]lowerNode
}

func newUnion(upper string, lowest []string) *union {
	u := &union{upper: upper, cache: map[string]lowerNode{}}
	for i := len(lowest) - 1; i >= 0; i-- {
		u.lower = append(u.lower, lowest[i])
	}
	return u
}

// root is the node of the root directory.
func (u *union) root() node {
	return node{kind: isDir, upper: true, lowers: len(u.lower) > 0}
}

// lookup returns the node at p, whose parent is the node parent.
func (u *union) lookup(parent node, p string) (node, error) {
	if parent.kind != isDir {
		return node{}, nil
	}
	var n node
	if parent.upper {
		full := filepath.Join(u.upper, p)
		fi, err := lstat(full)
		switch {
		case err != nil:
			return node{}, fmt.Errorf("looking up %s: %w", p, err)
		case fi == nil:
		case IsWhiteout(fi):
			return node{}, nil
		case fi.IsDir():
			n = node{kind: isDir, upper: true, lowers: parent.lowers && !IsOpaque(full)}
		default:
			return leaf(fi, full, -1)
		}
	}
	if !parent.lowers {
		return n, nil
	}
	ln, err := u.lowerAt(p)
	if err != nil {
		return node{}, err
	}
	if n.kind == isDir {
		n.lowers = n.lowers && ln.kind == isDir
		return n, nil
	}
	return ln.node, nil
}

// lowerAt returns the node at p in the union of the lower layers.
func (u *union) lowerAt(p string) (lowerNode, error) {
	if n, ok := u.cache[p]; ok {
		return n, nil
	}
	var n lowerNode
	if p == "" {
		n = lowerNode{node: node{kind: isDir, lowers: true}}
		for i := range u.lower {
			n.dirs = append(n.dirs, i)
		}
	} else {
		parent, err := u.lowerAt(parentOf(p))
		if err != nil {
			return lowerNode{}, err
		}
		if parent.kind == isDir {
			if n, err = u.scan(parent.dirs, p); err != nil {
				return lowerNode{}, err
			}
		}
	}
	if n.kind != absent {
		u.cache[p] = n
	}
	return n, nil
}

// scan finds p in layers (top first) that hold its parent as a directory:
// the first non-directory or whiteout ends the search, an opaque directory
// ends it after itself.
func (u *union) scan(layers []int, p string) (lowerNode, error) {
	var dirs []int
	for _, i := range layers {
		full := filepath.Join(u.lower[i], p)
		fi, err := lstat(full)
		if err != nil {
			return lowerNode{}, fmt.Errorf("looking up %s in a lower layer: %w", p, err)
		}
		if fi == nil {
			continue
		}
		if fi.IsDir() {
			dirs = append(dirs, i)
			if IsOpaque(full) {
				break
			}
			continue
		}
		if len(dirs) == 0 && !IsWhiteout(fi) {
			n, err := leaf(fi, full, i)
			return lowerNode{node: n}, err
		}
		break
	}
	if len(dirs) == 0 {
		return lowerNode{}, nil
	}
	return lowerNode{node: node{kind: isDir, lowers: true}, dirs: dirs}, nil
}

// resolveDir resolves name (a clean relative path) as a directory path in
// the union, following symlinks inside the root like the kernel would in a
// chroot. It returns the resolved path, its node (a directory or absent:
// missing directories are created by the caller) and the paths it looked
// at, resolved, on the way.
func (u *union) resolveDir(name string) (string, node, []string, error) {
	todo := reversed(components(name)) // a stack: the next component last
	cur, n := "", u.root()
	var up []node // the nodes of cur's parents, for ".."
	var seen []string
	for hops, lookups := 0, 0; len(todo) > 0; {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch c {
		case ".":
			continue
		case "..":
			if cur != "" {
				cur, n, up = parentOf(cur), up[len(up)-1], up[:len(up)-1]
			}
			continue
		}
		p := join(cur, c)
		if lookups++; lookups > maxLookups {
			return "", node{}, nil, fmt.Errorf("%w: more than %d lookups to resolve %q", ErrUnsafe, maxLookups, name)
		}
		if len(p) > MaxPathLen {
			return "", node{}, nil, fmt.Errorf("%w: resolved path longer than %d bytes", ErrInvalid, MaxPathLen)
		}
		child, err := u.lookup(n, p)
		if err != nil {
			return "", node{}, nil, err
		}
		seen = append(seen, p)
		switch child.kind {
		case isSymlink:
			if hops++; hops > maxSymlinks {
				return "", node{}, nil, fmt.Errorf("%w: more than %d symlinks in %q", ErrUnsafe, maxSymlinks, name)
			}
			if filepath.IsAbs(child.link) {
				cur, n, up = "", u.root(), up[:0]
			}
			todo = append(todo, reversed(components(child.link))...)
			continue
		case isOther:
			return "", node{}, nil, fmt.Errorf("%w: %q goes through non-directory %s", ErrUnsafe, name, p)
		}
		up = append(up, n)
		cur, n = p, child
	}
	return cur, n, seen, nil
}

func reversed(s []string) []string {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
	return s
}

// lstat is os.Lstat with a missing path (or parent) as nil, nil.
func lstat(p string) (fs.FileInfo, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	return fi, err
}

func leaf(fi fs.FileInfo, full string, layer int) (node, error) {
	n := node{kind: isOther, mode: fi.Mode().Type(), layer: layer}
	if fi.Mode()&fs.ModeSymlink != 0 {
		link, err := os.Readlink(full)
		if err != nil {
			return node{}, fmt.Errorf("reading link: %w", err)
		}
		n.kind, n.link = isSymlink, link
	}
	return n, nil
}

// IsWhiteout reports whether fi is an overlayfs whiteout (a 0/0 character
// device), as WhiteoutOverlay writes them.
func IsWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0
}

// IsOpaque reports whether the directory at p is an opaque overlayfs
// directory, as WhiteoutOverlay marks them.
func IsOpaque(p string) bool {
	buf := make([]byte, 2)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}
