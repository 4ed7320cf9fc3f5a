package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Flatten copies layers (lowest first, as unpacked by Extract) into dst,
// applying whiteouts and opaque directories the way overlayfs would. It is
// the fallback where overlayfs cannot be mounted.
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

func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0
}

func isOpaque(path string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(path, opaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
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
		if isWhiteout(fi) {
			return os.RemoveAll(target)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			old, err := os.Lstat(target)
			if err == nil && (!old.IsDir() || isOpaque(p)) {
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
		if st != nil {
			if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return os.Chmod(target, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		}
		return nil
	})
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
