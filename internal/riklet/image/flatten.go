package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rik-org/rik/internal/tarsafe"
	"golang.org/x/sys/unix"
)

// Flatten copies layers (lowest first, as unpacked by the store) into dst,
// applying whiteouts and opaque directories the way overlayfs would. It is
// the fallback where overlayfs cannot be mounted. Owners, modes and
// extended attributes (file capabilities) are kept.
func Flatten(layers []string, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("flattening into %s: %w", dst, err)
	}
	for _, layer := range layers {
		if err := applyLayer(layer, dst); err != nil {
			return fmt.Errorf("flattening %s: %w", layer, err)
		}
	}
	return nil
}

func applyLayer(layer, dst string) error {
	return filepath.Walk(layer, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(layer, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if err := checkParents(dst, filepath.ToSlash(rel)); err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if tarsafe.IsWhiteout(fi) {
			return os.RemoveAll(target)
		}
		switch {
		case fi.IsDir():
			old, err := os.Lstat(target)
			if err == nil && (!old.IsDir() || tarsafe.IsOpaque(p)) {
				if err := os.RemoveAll(target); err != nil {
					return err
				}
			}
			if err := os.Mkdir(target, fi.Mode().Perm()); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			if err := removeExisting(target); err != nil {
				return err
			}
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := removeExisting(target); err != nil {
				return err
			}
			if err := copyFile(p, target); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeNamedPipe != 0:
			if err := removeExisting(target); err != nil {
				return err
			}
			if err := unix.Mkfifo(target, uint32(fi.Mode().Perm())); err != nil {
				return err
			}
		default:
			return nil
		}
		return copyMeta(p, target, fi)
	})
}

// copyMeta gives target (just made, never a link followed) the owner,
// xattrs and mode of src, in that order: chown clears setuid bits and
// file capabilities.
func copyMeta(src, target string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	f, err := os.OpenFile(target, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tarsafe.CopyXattrs(src, f); err != nil {
		return err
	}
	return f.Chmod(fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
}

// checkParents fails if any parent of rel inside dir is not a directory,
// so nothing is ever written through a link.
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
		if !fi.IsDir() {
			return fmt.Errorf("%w: %q goes through non-directory %s", tarsafe.ErrUnsafe, rel, strings.TrimPrefix(p, dir))
		}
	}
	return nil
}

func removeExisting(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("replacing %s: %w", p, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
