package tarsafe

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const paxXattr = "SCHILY.xattr."

// create writes the entry hdr as name in the parent directory p, replacing
// what is there (a directory over a directory is merged).
func (a *applier) create(p *parentDir, name string, hdr *tar.Header, r io.Reader) error {
	var src linkSource
	if hdr.Typeflag == tar.TypeLink {
		var err error
		if src, err = a.linkSource(hdr.Linkname); err != nil {
			return err
		}
		defer unix.Close(src.dirfd)
	}
	// The parent stays valid unless its resolution went through name.
	defer a.dropParentIf(slices.Contains(p.touched, name))
	hid, err := clearAt(p.fd, name, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.dir(p, name, hdr, hid)
	case tar.TypeReg:
		err = a.file(p.fd, name, hdr, r)
	case tar.TypeSymlink:
		err = a.symlink(p.fd, name, hdr)
	case tar.TypeLink:
		if err = unix.Linkat(src.dirfd, src.name, p.fd, name, 0); err != nil {
			err = fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		a.skipXattrs(hdr, "a hard link shares its target's attributes")
	case tar.TypeFifo:
		err = a.fifo(p.fd, name, hdr)
	}
	if err != nil {
		return err
	}
	a.stats.Entries++
	a.mark(join(p.path, name))
	return nil
}

// clearAt removes what is at name in dirfd unless both it and the entry
// are directories. hid reports that a non-directory (or a whiteout) was
// removed.
func clearAt(dirfd int, name string, dir bool) (hid bool, err error) {
	st, ok, err := statAt(dirfd, name)
	if err != nil || !ok {
		return false, err
	}
	if isDirStat(st) {
		if dir {
			return false, nil
		}
		return false, removeAt(dirfd, name)
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return false, fmt.Errorf("replacing: %w", err)
	}
	return true, nil
}

func (a *applier) dir(p *parentDir, name string, hdr *tar.Header, hid bool) error {
	st, ok, err := statAt(p.fd, name)
	if err != nil {
		return err
	}
	var fd int
	if ok && isDirStat(st) {
		fd, err = openEntry(p.fd, name, true)
	} else {
		fd, err = mkdirAt(p.fd, name)
	}
	if err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	defer unix.Close(fd)
	path := join(p.path, name)
	if hid && p.node.lowers && a.opts.Whiteouts == WhiteoutOverlay {
		// This layer removed what stood here: a lower directory at the
		// same path must stay hidden.
		ln, err := a.u.lowerAt(path)
		if err != nil {
			return err
		}
		if ln.kind == isDir {
			if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
				return fmt.Errorf("marking opaque: %w", err)
			}
		}
	}
	if err := a.meta(fd, hdr); err != nil {
		return err
	}
	a.dirs = append(a.dirs, dirTime{path, atime(hdr), hdr.ModTime})
	return nil
}

func (a *applier) file(dirfd int, name string, hdr *tar.Header, r io.Reader) error {
	if a.stats.Bytes += hdr.Size; a.stats.Bytes > a.opts.MaxBytes {
		return fmt.Errorf("%w: regular files over %d bytes", ErrTooLarge, a.opts.MaxBytes)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("creating file: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := io.Copy(f, readErr{r}); err != nil {
		return fmt.Errorf("writing file: %w", err)
	}
	if err := a.meta(fd, hdr); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing file: %w", err)
	}
	return setTimes(dirfd, name, atime(hdr), hdr.ModTime)
}

// readErr marks errors of the archive stream as ErrInvalid, so a short
// archive is told from a full disk.
type readErr struct{ r io.Reader }

func (e readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: reading tar: %w", ErrInvalid, err)
	}
	return n, err
}

func (a *applier) symlink(dirfd int, name string, hdr *tar.Header) error {
	if err := unix.Symlinkat(hdr.Linkname, dirfd, name); err != nil {
		return fmt.Errorf("creating symlink: %w", err)
	}
	if a.chown {
		if err := unix.Fchownat(dirfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	a.skipXattrs(hdr, "not applied to symlinks")
	return setTimes(dirfd, name, atime(hdr), hdr.ModTime)
}

func (a *applier) fifo(dirfd int, name string, hdr *tar.Header) error {
	if err := unix.Mknodat(dirfd, name, unix.S_IFIFO|0o600, 0); err != nil {
		return fmt.Errorf("creating fifo: %w", err)
	}
	fd, err := openEntry(dirfd, name, false)
	if err != nil {
		return fmt.Errorf("opening fifo: %w", err)
	}
	err = a.meta(fd, hdr)
	unix.Close(fd)
	if err != nil {
		return err
	}
	return setTimes(dirfd, name, atime(hdr), hdr.ModTime)
}

// meta applies owner, xattrs and mode, in that order (chown clears setuid
// bits and file capabilities), through the entry's own descriptor.
func (a *applier) meta(fd int, hdr *tar.Header) error {
	if a.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(hdr.PAXRecords)) {
		name, ok := strings.CutPrefix(k, paxXattr)
		if !ok {
			continue
		}
		if overlayXattr(name) {
			a.skipXattr(hdr, name, errors.New("overlayfs attributes are not taken from archives"))
			continue
		}
		err := unix.Fsetxattr(fd, name, []byte(hdr.PAXRecords[k]), 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOTSUP),
			// user.* is for regular files and directories only (xattr(7)).
			errors.Is(err, unix.EPERM) && strings.HasPrefix(name, "user.") && hdr.Typeflag == tar.TypeFifo:
			a.skipXattr(hdr, name, err)
		default:
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// skipXattrs skips every xattr of hdr.
func (a *applier) skipXattrs(hdr *tar.Header, why string) {
	for k := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, paxXattr); ok {
			a.skipXattr(hdr, x, errors.New(why))
		}
	}
}

func (a *applier) skipXattr(hdr *tar.Header, name string, why error) {
	a.stats.XattrsSkipped++
	a.log.Warn("archive xattr skipped", "name", hdr.Name, "xattr", name, "err", why)
}

func atime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// linkSource is the target of a hard link: name in the directory dirfd of
// the upper or of a lower layer.
type linkSource struct {
	dirfd int
	name  string
}

// linkSource resolves a hard link target in the union: its parents like an
// entry's, its last component not followed. It must be a regular file.
func (a *applier) linkSource(linkname string) (linkSource, error) {
	rel, err := cleanName(linkname)
	if err != nil {
		return linkSource{}, fmt.Errorf("hard link: %w", err)
	}
	dir, base := splitName(rel)
	path, pn, _, err := a.u.resolveDir(dir)
	if err != nil {
		return linkSource{}, fmt.Errorf("hard link: %w", err)
	}
	n := node{}
	if rel != "" {
		if n, err = a.u.lookup(pn, join(path, base)); err != nil {
			return linkSource{}, err
		}
	}
	if n.kind != isOther || !n.mode.IsRegular() {
		return linkSource{}, fmt.Errorf("%w: hard link to %q: no regular file there", ErrUnsafe, linkname)
	}
	layer := a.rootfd
	if n.layer >= 0 {
		layer = a.lowerfd[n.layer]
	}
	fd, err := openDir(layer, path)
	if err != nil {
		return linkSource{}, fmt.Errorf("%w: hard link to %q: %w", ErrUnsafe, linkname, err)
	}
	return linkSource{fd, base}, nil
}

// whiteout hides name in p: removed from the upper and, for overlayfs, a
// whiteout device in its place.
func (a *applier) whiteout(p *parentDir, name string) error {
	defer a.dropParentIf(slices.Contains(p.touched, name))
	if _, err := clearAt(p.fd, name, false); err != nil {
		return err
	}
	if a.opts.Whiteouts == WhiteoutOverlay {
		if err := unix.Mknodat(p.fd, name, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("creating whiteout: %w", err)
		}
	}
	return nil
}

// opaque hides what the lower layers hold in p: an overlayfs mark, or the
// removal of what this archive did not make there.
func (a *applier) opaque(p *parentDir) error {
	defer a.dropParent() // lookups below p change
	fd, err := openEntry(p.fd, ".", true)
	if err != nil {
		return fmt.Errorf("opening directory: %w", err)
	}
	defer unix.Close(fd)
	if a.opts.Whiteouts == WhiteoutOverlay {
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("marking opaque: %w", err)
		}
		return nil
	}
	return a.prune(fd, p.path)
}

// prune removes from the directory fd (at path) what this archive did not
// make.
func (a *applier) prune(fd int, path string) error {
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("reading directory: %w", err)
	}
	for _, n := range names {
		q := join(path, n)
		if !a.unpacked[q] {
			if err := removeAt(fd, n); err != nil {
				return err
			}
			continue
		}
		if st, ok, err := statAt(fd, n); err != nil || !ok || !isDirStat(st) {
			continue
		}
		sub, err := openEntry(fd, n, true)
		if err != nil {
			return fmt.Errorf("opening %s: %w", q, err)
		}
		err = a.prune(sub, q)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}
