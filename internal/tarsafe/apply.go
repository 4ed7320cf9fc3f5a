package tarsafe

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxID is the largest owner id an entry may carry ((uid_t)-1 means "no
// change" to chown).
const maxID = 1<<32 - 2

// applier holds the state of one Apply.
type applier struct {
	opts    Options
	log     *slog.Logger
	u       *union
	rootfd  int
	lowerfd []int // as u.lower: top first
	chown   bool
	stats   Stats
	seen    int // entries read, and parent directories made

	dirs     []dirTime       // directory times, set at the end
	unpacked map[string]bool // WhiteoutRemove: the paths this archive made
	cur      parentDir       // the last entry's parent directory
}

type dirTime struct {
	path         string
	atime, mtime time.Time
}

// parentDir is an entry's parent directory, resolved and present in the
// upper. It stays valid for the next entries with the same parent name
// while they only change its children, and none of the children the
// resolution went through (touched).
type parentDir struct {
	name    string // as written in the archive
	path    string // resolved
	node    node
	fd      int // O_PATH; -1 when unset
	touched []string
}

func newApplier(root string, opts Options) (*applier, error) {
	if len(opts.Lower) > 0 && opts.Whiteouts != WhiteoutOverlay {
		return nil, errors.New("tarsafe: lower layers need WhiteoutOverlay")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	a := &applier{opts: opts, log: opts.Logger, u: newUnion(root, opts.Lower), chown: os.Geteuid() == 0, cur: parentDir{fd: -1}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if opts.Whiteouts == WhiteoutRemove {
		a.unpacked = map[string]bool{}
	}
	var err error
	if a.rootfd, err = openPath(root); err != nil {
		return nil, err
	}
	for _, l := range a.u.lower {
		fd, err := openPath(l)
		if err != nil {
			a.close()
			return nil, err
		}
		a.lowerfd = append(a.lowerfd, fd)
	}
	return a, nil
}

func (a *applier) close() {
	a.dropParent()
	for _, fd := range append(a.lowerfd, a.rootfd) {
		unix.Close(fd)
	}
	a.lowerfd, a.rootfd = nil, -1
}

func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	if err := a.entryErr(hdr, r); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	return nil
}

func (a *applier) entryErr(hdr *tar.Header, r io.Reader) error {
	if err := a.count(); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX global headers describe no file
	}
	rel, err := cleanName(hdr.Name)
	if err != nil || rel == "" {
		return err // the root itself: nothing to do
	}
	dir, base := splitName(rel)
	wh, hidden, err := classify(base)
	if err != nil {
		return err
	}
	if wh == notWhiteout {
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		default:
			a.stats.Skipped++
			a.log.Debug("archive entry skipped", "name", hdr.Name, "type", string(hdr.Typeflag))
			return nil
		}
		if err := checkHeader(hdr); err != nil {
			return err
		}
	}
	p, err := a.parent(dir)
	if err != nil {
		return err
	}
	switch wh {
	case whiteoutDir:
		return a.opaque(p)
	case whiteoutFile:
		return a.whiteout(p, hidden)
	}
	return a.create(p, base, hdr, r)
}

// count counts an entry, or a directory made for one, against MaxEntries.
func (a *applier) count() error {
	if a.seen++; a.seen > a.opts.MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, a.opts.MaxEntries)
	}
	return nil
}

// checkHeader refuses owners and link targets the kernel would misread.
func checkHeader(hdr *tar.Header) error {
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return fmt.Errorf("%w: owner %d:%d out of range", ErrInvalid, hdr.Uid, hdr.Gid)
	}
	if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
		if hdr.Linkname == "" || len(hdr.Linkname) > MaxPathLen {
			return fmt.Errorf("%w: link target of %d bytes", ErrInvalid, len(hdr.Linkname))
		}
	}
	return nil
}

// parent returns the entry parent directory name resolved, created in the
// upper if missing, and open.
func (a *applier) parent(name string) (*parentDir, error) {
	if a.cur.fd >= 0 && a.cur.name == name {
		return &a.cur, nil
	}
	a.dropParent()
	path, _, seen, err := a.u.resolveDir(name)
	if err != nil {
		return nil, err
	}
	n, err := a.ensureDir(path)
	if err != nil {
		return nil, err
	}
	fd, err := openDir(a.rootfd, path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsafe, err)
	}
	var touched []string
	for _, s := range seen {
		if parentOf(s) == path && s != path {
			_, b := splitName(s)
			touched = append(touched, b)
		}
	}
	a.cur = parentDir{name: name, path: path, node: n, fd: fd, touched: touched}
	return &a.cur, nil
}

func (a *applier) dropParent() {
	if a.cur.fd >= 0 {
		unix.Close(a.cur.fd)
	}
	a.cur = parentDir{fd: -1}
}

func (a *applier) dropParentIf(stale bool) {
	if stale {
		a.dropParent()
	}
}

// ensureDir makes every directory of path (resolved, all directories or
// missing in the union) a directory of the upper, and returns its node.
func (a *applier) ensureDir(path string) (node, error) {
	n, cur := a.u.root(), ""
	for _, c := range components(path) {
		q := join(cur, c)
		child, err := a.u.lookup(n, q)
		if err != nil {
			return node{}, err
		}
		if child.kind != isDir || !child.upper {
			if child.kind != isDir && child.kind != absent {
				return node{}, fmt.Errorf("%w: %s is not a directory", ErrUnsafe, q)
			}
			if err := a.makeParent(cur, c, child); err != nil {
				return node{}, err
			}
			if child, err = a.u.lookup(n, q); err != nil {
				return node{}, err
			}
		}
		n, cur = child, q
	}
	return n, nil
}

// makeParent creates the missing directory name in the upper directory
// dir: a copy of the same directory of the lower layers (mode, owner,
// xattrs, times) when they have one (child), else 0755.
func (a *applier) makeParent(dir, name string, child node) error {
	if err := a.count(); err != nil {
		return err
	}
	q := join(dir, name)
	pfd, err := openDir(a.rootfd, dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafe, err)
	}
	defer unix.Close(pfd)
	// A whiteout of this layer hides the lower directory: the new one
	// must keep hiding its content.
	st, ok, err := statAt(pfd, name)
	if err != nil {
		return fmt.Errorf("creating %s: %w", q, err)
	}
	opaque := ok && isWhiteoutStat(st)
	if ok && !opaque {
		return fmt.Errorf("%w: %s is in the way", ErrUnsafe, q)
	}
	if opaque {
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return fmt.Errorf("creating %s: %w", q, err)
		}
	}
	var lower string
	if child.kind == isDir {
		ln, err := a.u.lowerAt(q)
		if err != nil {
			return err
		}
		lower = join(a.u.lower[ln.dirs[0]], q)
	}
	fd, err := mkdirAt(pfd, name)
	if err != nil {
		return fmt.Errorf("creating %s: %w", q, err)
	}
	defer unix.Close(fd)
	if err := a.dirMeta(fd, lower, opaque); err != nil {
		return fmt.Errorf("creating %s: %w", q, err)
	}
	if lower != "" {
		fi, err := os.Lstat(lower)
		if err != nil {
			return fmt.Errorf("creating %s: %w", q, err)
		}
		a.dirs = append(a.dirs, dirTime{q, fi.ModTime(), fi.ModTime()})
	}
	a.mark(q)
	return nil
}

// dirMeta gives a directory made as a parent the metadata of lower (a path
// in a lower layer), or 0755 when lower is "".
func (a *applier) dirMeta(fd int, lower string, opaque bool) error {
	mode := uint32(0o755)
	if lower != "" {
		var st unix.Stat_t
		if err := unix.Lstat(lower, &st); err != nil {
			return err
		}
		if a.chown {
			if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if err := copyXattrs(lower, fd); err != nil {
			return err
		}
		mode = st.Mode & 0o7777
	}
	if opaque && a.opts.Whiteouts == WhiteoutOverlay {
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("marking opaque: %w", err)
		}
	}
	return unix.Fchmod(fd, mode)
}

func mkdirAt(dirfd int, name string) (int, error) {
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
		return -1, err
	}
	return openEntry(dirfd, name, true)
}

// mark records path as made by this archive (WhiteoutRemove only).
func (a *applier) mark(path string) {
	if a.unpacked != nil {
		a.unpacked[path] = true
	}
}

// finish sets the directory times, never following a link: a directory
// replaced since by a symlink, or gone, is left alone.
func (a *applier) finish() error {
	a.dropParent()
	for _, d := range a.dirs {
		dir, base := splitName(d.path)
		fd, err := openDir(a.rootfd, dir)
		if err != nil {
			continue // a parent is gone or is no longer a directory
		}
		st, ok, err := statAt(fd, base)
		if err == nil && ok && isDirStat(st) {
			err = setTimes(fd, base, d.atime, d.mtime)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("directory %s: %w", d.path, err)
		}
	}
	return nil
}
