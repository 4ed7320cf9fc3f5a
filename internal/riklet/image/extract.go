package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeEntry: a layer holds an entry that would escape its root.
var ErrUnsafeEntry = errors.New("unsafe layer entry")

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// Extract unpacks the tar stream r into dir (which must exist) as one
// overlayfs lower layer: OCI whiteouts become overlay whiteouts (0/0 char
// devices) and opaque directories get the trusted.overlay.opaque xattr.
//
// It never writes outside dir: names are cleaned and kept under dir, no
// entry is written through a symlink, hard links must point inside dir,
// and device nodes are skipped.
func Extract(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer: %w", err)
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" { // the root itself
			continue
		}
		target := filepath.Join(dir, rel)
		if err := checkParents(dir, rel); err != nil {
			return err
		}
		parent := filepath.Dir(target)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", parent, err)
		}
		base := path.Base(rel)
		if base == whiteoutOpaque {
			if err := unix.Setxattr(parent, opaqueXattr, []byte("y"), 0); err != nil {
				return fmt.Errorf("marking %s opaque: %w", parent, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			hidden := strings.TrimPrefix(base, whiteoutPrefix)
			if hidden == "" || hidden == "." || hidden == ".." {
				// ".wh.." or ".wh..." would remove the directory itself or its parent.
				return fmt.Errorf("%w: whiteout %q", ErrUnsafeEntry, hdr.Name)
			}
			wh := filepath.Join(parent, hidden)
			if err := removeExisting(wh); err != nil {
				return err
			}
			if err := unix.Mknod(wh, unix.S_IFCHR|0o000, 0); err != nil {
				return fmt.Errorf("creating whiteout %s: %w", wh, err)
			}
			continue
		}
		if hdr.Typeflag != tar.TypeDir {
			if err := removeExisting(target); err != nil {
				return err
			}
		}
		mode := hdr.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			fi, err := os.Lstat(target)
			switch {
			case err == nil && !fi.IsDir():
				if err := os.Remove(target); err != nil {
					return fmt.Errorf("replacing %s: %w", target, err)
				}
				fallthrough
			case errors.Is(err, os.ErrNotExist):
				if err := os.Mkdir(target, 0o755); err != nil {
					return fmt.Errorf("creating %s: %w", target, err)
				}
			case err != nil:
				return fmt.Errorf("checking %s: %w", target, err)
			}
			dirs = append(dirs, dirTime{target, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("creating %s: %w", target, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", target, err)
			}
		case tar.TypeSymlink:
			// The target is kept as is: it is resolved inside the
			// container's root at run time, and never followed here.
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return fmt.Errorf("creating symlink %s: %w", target, err)
			}
		case tar.TypeLink:
			lrel, err := cleanName(hdr.Linkname)
			if err != nil || lrel == "" {
				return fmt.Errorf("%w: hard link %s -> %s", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			if err := checkParents(dir, lrel); err != nil {
				return err
			}
			src := filepath.Join(dir, lrel)
			fi, err := os.Lstat(src)
			if err != nil {
				return fmt.Errorf("hard link %s -> %s: %w", hdr.Name, hdr.Linkname, err)
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("%w: hard link %s to non-regular %s", ErrUnsafeEntry, hdr.Name, hdr.Linkname)
			}
			if err := os.Link(src, target); err != nil {
				return fmt.Errorf("creating hard link %s: %w", target, err)
			}
			continue // shares the source's metadata
		case tar.TypeFifo:
			if err := unix.Mkfifo(target, uint32(mode.Perm())); err != nil {
				return fmt.Errorf("creating fifo %s: %w", target, err)
			}
		case tar.TypeChar, tar.TypeBlock:
			continue // device nodes are never created from images
		default:
			continue // pax headers, sparse... nothing to create
		}
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown %s: %w", target, err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			// chmod after chown: chown clears setuid bits.
			if err := os.Chmod(target, mode); err != nil {
				return fmt.Errorf("chmod %s: %w", target, err)
			}
			if hdr.Typeflag != tar.TypeDir {
				_ = os.Chtimes(target, hdr.ModTime, hdr.ModTime)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	return nil
}

// cleanName turns a tar entry name into a path relative to the layer root,
// rejecting names that climb out of it. Leading slashes are dropped.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(filepath.ToSlash(name), "/")
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the layer", ErrUnsafeEntry, name)
		}
	}
	c := path.Clean(n)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// checkParents fails if any parent of rel inside dir is a symlink, so no
// entry is ever written through a link.
func checkParents(dir, rel string) error {
	p := dir
	parts := strings.Split(rel, "/")
	for _, part := range parts[:len(parts)-1] {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%w: %q goes through symlink %s", ErrUnsafeEntry, rel, strings.TrimPrefix(p, dir))
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %q goes through non-directory %s", ErrUnsafeEntry, rel, strings.TrimPrefix(p, dir))
		}
	}
	return nil
}

func removeExisting(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
	}
	if fi.IsDir() {
		err = os.RemoveAll(p)
	} else {
		err = os.Remove(p)
	}
	if err != nil {
		return fmt.Errorf("replacing %s: %w", p, err)
	}
	return nil
}
