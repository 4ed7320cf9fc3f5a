package tarsafe

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// openDir opens the directory rel (clean, relative) below the directory
// descriptor base, one component at a time, refusing to cross a symlink.
// The descriptor (O_PATH) serves the *at calls.
func openDir(base int, rel string) (int, error) {
	fd, err := unix.Openat(base, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, c := range components(rel) {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", rel, err)
		}
		fd = next
	}
	return fd, nil
}

// openPath opens the directory at path (trusted: the caller's) for *at calls.
func openPath(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// openEntry opens name in dirfd for its metadata, never following a link:
// O_NONBLOCK keeps a FIFO from waiting for a writer.
func openEntry(dirfd int, name string, dir bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	if dir {
		flags |= unix.O_DIRECTORY
	}
	return unix.Openat(dirfd, name, flags, 0)
}

// statAt stats name in dirfd without following it; ok is false when there
// is nothing there.
func statAt(dirfd int, name string) (st unix.Stat_t, ok bool, err error) {
	err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

func isDirStat(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func isWhiteoutStat(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 }

// removeAt removes name from dirfd and, for a directory, all it holds,
// never following a symlink.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	fd, err := openEntry(dirfd, name, true)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	names, err := readNames(fd)
	for _, n := range names {
		if err != nil {
			break
		}
		err = removeAt(fd, n)
	}
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return nil
}

// readNames lists the directory dirfd.
func readNames(dirfd int) ([]string, error) {
	fd, err := openEntry(dirfd, ".", true)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), ".")
	defer d.Close()
	return d.Readdirnames(-1)
}

// setTimes sets the times of name in dirfd, never following a link.
func setTimes(dirfd int, name string, atime, mtime time.Time) error {
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// CopyXattrs copies the extended attributes of the file at src (not
// followed if a symlink) onto the open file dst, except overlayfs' own.
// Attributes the destination cannot hold (ENOTSUP) are skipped.
func CopyXattrs(src string, dst *os.File) error {
	return copyXattrs(src, int(dst.Fd()))
}

func copyXattrs(src string, dst int) error {
	names, err := listXattrs(src)
	if err != nil {
		return fmt.Errorf("listing xattrs of %s: %w", src, err)
	}
	for _, name := range names {
		if overlayXattr(name) {
			continue
		}
		val, err := getXattr(src, name)
		if err != nil {
			return fmt.Errorf("reading xattr %s of %s: %w", name, src, err)
		}
		if err := unix.Fsetxattr(dst, name, val, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("copying xattr %s of %s: %w", name, src, err)
		}
	}
	return nil
}

func listXattrs(p string) ([]string, error) {
	buf, err := xattrBuf(func(b []byte) (int, error) { return unix.Llistxattr(p, b) })
	if err != nil || len(buf) == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(buf), "\x00"), "\x00"), nil
}

func getXattr(p, name string) ([]byte, error) {
	return xattrBuf(func(b []byte) (int, error) { return unix.Lgetxattr(p, name, b) })
}

// xattrBuf calls get with a buffer large enough for its answer.
func xattrBuf(get func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = get(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
