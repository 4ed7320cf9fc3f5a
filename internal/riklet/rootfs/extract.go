package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafePath: an archive entry would land outside the target directory.
var ErrUnsafePath = errors.New("unsafe path in archive")

// ExtractStats counts what Extract wrote.
type ExtractStats struct {
	Files int   // entries written
	Bytes int64 // bytes of regular files
}

// Extract unpacks the tar stream r into dir (created), refusing entries that
// would escape dir (.., absolute paths, paths through symlinks, hard links
// outside) and stopping when regular files exceed max bytes in total. It
// keeps modes and owners, and creates device nodes (it runs as root).
func Extract(ctx context.Context, r io.Reader, dir string, max int64) (ExtractStats, error) {
	var st ExtractStats
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, fmt.Errorf("creating %s: %w", dir, err)
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("%w: reading tar: %w", ErrUnsupported, err)
		}
		rel, ok := cleanRel(hdr.Name)
		if !ok {
			return st, fmt.Errorf("%w: %q", ErrUnsafePath, hdr.Name)
		}
		if rel == "" {
			continue // the root itself
		}
		target := filepath.Join(dir, rel)
		if err := mkParents(dir, rel); err != nil {
			return st, err
		}
		if err := removeExisting(target, hdr.Typeflag == tar.TypeDir); err != nil {
			return st, err
		}
		mode := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o755); err != nil && !os.IsExist(err) {
				return st, fmt.Errorf("creating %s: %w", rel, err)
			}
		case tar.TypeReg, tar.TypeRegA:
			st.Bytes += hdr.Size
			if st.Bytes > max {
				return st, fmt.Errorf("%w: unpacked size over %d bytes", ErrTooLarge, max)
			}
			if err := writeFile(target, tr, hdr.Size); err != nil {
				return st, fmt.Errorf("writing %s: %w", rel, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return st, fmt.Errorf("creating symlink %s: %w", rel, err)
			}
		case tar.TypeLink:
			lrel, ok := cleanRel(hdr.Linkname)
			if !ok || lrel == "" {
				return st, fmt.Errorf("%w: hard link %q -> %q", ErrUnsafePath, hdr.Name, hdr.Linkname)
			}
			if err := mkParents(dir, lrel); err != nil {
				return st, err
			}
			src := filepath.Join(dir, lrel)
			if fi, err := os.Lstat(src); err != nil || !fi.Mode().IsRegular() {
				return st, fmt.Errorf("%w: hard link %q to a missing or non-regular file", ErrUnsafePath, hdr.Name)
			}
			if err := os.Link(src, target); err != nil {
				return st, fmt.Errorf("creating hard link %s: %w", rel, err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
			dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
			if err := unix.Mknod(target, kind|mode, dev); err != nil {
				return st, fmt.Errorf("creating node %s: %w", rel, err)
			}
		default:
			continue // xattrs headers, sockets...: skipped
		}
		st.Files++
		if hdr.Typeflag == tar.TypeLink {
			continue // shares the inode, and its owner and mode, with its target
		}
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return st, fmt.Errorf("chown %s: %w", rel, err)
		}
		if hdr.Typeflag != tar.TypeSymlink {
			if err := unix.Chmod(target, mode); err != nil {
				return st, fmt.Errorf("chmod %s: %w", rel, err)
			}
		}
	}
}

// cleanRel turns an archive name into a clean relative path; ok is false
// when it would climb out of the root.
func cleanRel(name string) (string, bool) {
	if strings.ContainsRune(name, 0) {
		return "", false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", false
		}
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), true
}

// mkParents creates the parent directories of rel under dir, refusing to
// go through anything that is not a real directory (a symlink above all).
func mkParents(dir, rel string) error {
	parts := strings.Split(rel, "/")
	cur := dir
	for _, p := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, p)
		fi, err := os.Lstat(cur)
		switch {
		case os.IsNotExist(err):
			if err := os.Mkdir(cur, 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", cur, err)
			}
		case err != nil:
			return fmt.Errorf("checking %s: %w", cur, err)
		case !fi.IsDir():
			return fmt.Errorf("%w: %q goes through a non-directory", ErrUnsafePath, rel)
		}
	}
	return nil
}

func removeExisting(target string, isDir bool) error {
	fi, err := os.Lstat(target)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() && isDir {
		return nil
	}
	return os.RemoveAll(target)
}

func writeFile(target string, r io.Reader, size int64) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
