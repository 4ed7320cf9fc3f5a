// Package tarsafe unpacks tar archives — OCI image layers and root
// filesystem tarballs — into a directory with the semantics of containerd's
// archive.Apply, without ever touching anything outside that directory.
//
// # Semantics
//
//   - Entry names are relative to the root: a leading "/" is dropped, a ".."
//     component is refused (ErrUnsafe), the root itself is skipped.
//   - The parent directories of an entry are resolved the way the kernel
//     would inside a chroot at the root: symlinks are followed, absolute
//     targets and ".." stay inside the root. With Options.Lower (the layers
//     below, already unpacked), the lookup sees their union under overlayfs
//     rules (whiteouts, opaque directories, a non-directory ends a stack), so
//     a layer's bin/tool lands in usr/bin/tool when a lower layer has
//     bin -> usr/bin, and that symlink stays. Missing parents are created
//     (copying the mode and owner of the same directory in a lower layer).
//   - The last component is never followed: an entry replaces whatever is at
//     its exact path (a directory over a directory is merged), so only a
//     layer's own entry at a symlink's path replaces that symlink.
//   - Hard links point to a regular file anywhere in the union, lower layers
//     included (resolved like a parent path; the last component is not
//     followed); links to anything else are refused (ErrUnsafe). A hard link
//     shares its target's inode: its own header metadata is not applied.
//   - Whiteouts (.wh.NAME, .wh..wh..opq) follow Options.Whiteouts; the names
//     .wh., .wh.. and .wh... (they would name the directory or its parent)
//     are refused.
//   - Device nodes are never created (skipped and counted): neither an image
//     nor a Function's root filesystem may bring devices of the host.
//     Sockets and other types are skipped too; FIFOs are created.
//   - Owners are applied when running as root (euid 0), then xattrs, then the
//     mode (chown clears setuid bits and file capabilities), then times.
//     Directory times are applied at the end, without following links.
//   - Extended attributes come from the PAX records SCHILY.xattr.NAME and are
//     set on the entry itself, never through a link. overlayfs' own
//     attributes (trusted.overlay.*, user.overlay.*) are never taken from an
//     archive. A filesystem or namespace that does not support an attribute
//     (ENOTSUP), a user.* attribute on a FIFO (EPERM, the kernel's rule) and
//     any attribute on a symlink or a hard link are skipped, counted in
//     Stats.XattrsSkipped and logged; any other failure (security.capability
//     refused, say) fails the extraction: the file would not work as packed.
//   - Regular file bytes are capped by Options.MaxBytes and entries (with
//     the parent directories they create) by Options.MaxEntries
//     (ErrTooLarge); names and resolved paths by MaxPathLen (ErrInvalid);
//     a resolution follows at most 40 symlinks and looks up at most 4096
//     components (ErrUnsafe).
//
// # Confinement
//
// Every change is made with *at system calls on a directory file
// descriptor reached from the root one component at a time with
// O_NOFOLLOW|O_DIRECTORY, and on the entry's own name without following it
// (O_NOFOLLOW opens, AT_SYMLINK_NOFOLLOW, mknodat, symlinkat, linkat
// without AT_SYMLINK_FOLLOW); owner, attributes and mode are set through a
// descriptor of the entry opened with O_NOFOLLOW. The kernel thus refuses
// to cross any symlink on the way to a change, so even a mistaken
// resolution cannot leave the root. Symlinks are resolved in user space
// (above), since the resolution must see the union of several directories.
//
// Neither os.Root nor openat2(RESOLVE_IN_ROOT) fits alone: both resolve in
// one directory tree while layers are resolved through the stack below
// them; os.Root also refuses absolute symlinks and links that climb out
// instead of resolving them inside the root, follows the last symlink in
// Chmod and Chtimes, and has no xattrs. The descriptor walk works on any
// Linux kernel.
package tarsafe

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Errors of Apply; callers map them to their own.
var (
	// ErrUnsafe: an entry would escape the root or corrupt the tree.
	ErrUnsafe = errors.New("unsafe archive entry")
	// ErrTooLarge: the archive is over Options.MaxBytes or MaxEntries.
	ErrTooLarge = errors.New("archive larger than the allowed maximum")
	// ErrInvalid: the archive cannot be read.
	ErrInvalid = errors.New("invalid archive")
)

// Defaults of Options.
const (
	DefaultMaxBytes   = int64(16 << 30)
	DefaultMaxEntries = 1 << 20
	// MaxPathLen caps entry names, link targets and resolved paths (PATH_MAX).
	MaxPathLen = 4096
)

// WhiteoutMode tells how OCI whiteout entries are applied.
type WhiteoutMode int

const (
	// WhiteoutRemove removes what a whiteout names from the tree, and an
	// opaque marker removes what the archive did not unpack in that
	// directory (containerd's default). For one tree: a root filesystem.
	WhiteoutRemove WhiteoutMode = iota
	// WhiteoutOverlay writes the layer as an overlayfs lower directory: a
	// whiteout becomes a 0/0 character device, an opaque directory gets
	// trusted.overlay.opaque=y. Needs root.
	WhiteoutOverlay
)

// Options configure Apply.
type Options struct {
	// Lower are the directories of the layers below this one, lowest first
	// (an image's order), as unpacked by Apply with WhiteoutOverlay. Paths
	// and hard link targets are resolved through them; they are never
	// changed (a hard link to a lower file adds a link to its inode, which
	// needs the same filesystem as the root). Requires WhiteoutOverlay.
	Lower []string
	// Whiteouts selects how whiteouts are applied.
	Whiteouts WhiteoutMode
	// MaxBytes caps the total size of regular files (0: DefaultMaxBytes).
	MaxBytes int64
	// MaxEntries caps the number of entries, and of directories created
	// as their parents (0: DefaultMaxEntries).
	MaxEntries int
	// Logger receives what was skipped; default: discard.
	Logger *slog.Logger
}

// Stats count what Apply did.
type Stats struct {
	Entries       int   // entries written (directories, files, links, FIFOs)
	Bytes         int64 // bytes of regular files
	Skipped       int   // entries not created: device nodes, sockets, unknown types
	XattrsSkipped int   // extended attributes not applied (see package doc)
}

// Apply unpacks the tar stream r into root, an existing directory, as
// described in the package documentation. On error the root holds part of
// the archive: callers unpack into a fresh directory and drop it on error.
func Apply(ctx context.Context, root string, r io.Reader, opts Options) (Stats, error) {
	a, err := newApplier(root, opts)
	if err != nil {
		return Stats{}, err
	}
	defer a.close()
	tr := tar.NewReader(ctxReader{ctx, r})
	for {
		if err := ctx.Err(); err != nil {
			return a.stats, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return a.stats, fmt.Errorf("%w: reading tar: %w", ErrInvalid, err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return a.stats, err
		}
	}
	return a.stats, a.finish()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
