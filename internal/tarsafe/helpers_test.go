package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"golang.org/x/sys/unix"
)

// ent is one archive entry of a test.
type ent struct {
	name, body, link string
	typ              byte // default tar.TypeReg
	mode             int64
	uid, gid         int
	xattrs           map[string]string
	mtime            time.Time
	devmajor         int64
}

// tarOf builds a tar archive of entries.
func tarOf(t testing.TB, entries ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Devmajor: e.devmajor, ModTime: e.mtime, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords[paxXattr+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func apply(t testing.TB, root string, archive []byte, opts Options) (Stats, error) {
	t.Helper()
	return Apply(context.Background(), root, bytes.NewReader(archive), opts)
}

// host is a directory beside the root standing for the rest of the
// machine: a file and a directory that extraction must never touch.
type host struct {
	outer, root   string
	file, dir     string
	fileSt, dirSt unix.Stat_t
}

var hostTime = time.Unix(1000000000, 0)

func newHost(t testing.TB) *host {
	t.Helper()
	h := &host{outer: t.TempDir()}
	h.root = filepath.Join(h.outer, "root")
	h.file = filepath.Join(h.outer, "host", "secret")
	h.dir = filepath.Join(h.outer, "host", "dir")
	for _, d := range []string{h.root, h.dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(h.file, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{h.file, h.dir} {
		if err := os.Chtimes(p, hostTime, hostTime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(h.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.fileSt, h.dirSt = h.stat(t, h.file), h.stat(t, h.dir)
	return h
}

func (h *host) stat(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// check fails the test if anything outside the root changed: the host
// file and directory keep their content, mode, owner and times, and the
// outer directory holds nothing new.
func (h *host) check(t testing.TB) {
	t.Helper()
	for p, want := range map[string]unix.Stat_t{h.file: h.fileSt, h.dir: h.dirSt} {
		got := h.stat(t, p)
		if got.Mode != want.Mode || got.Uid != want.Uid || got.Gid != want.Gid ||
			got.Mtim != want.Mtim || got.Ctim != want.Ctim || got.Nlink != want.Nlink {
			t.Errorf("host %s changed: mode %o uid %d gid %d mtime %v ctime %v nlink %d; was mode %o uid %d gid %d mtime %v ctime %v nlink %d",
				p, got.Mode, got.Uid, got.Gid, got.Mtim, got.Ctim, got.Nlink, want.Mode, want.Uid, want.Gid, want.Mtim, want.Ctim, want.Nlink)
		}
	}
	if b, err := os.ReadFile(h.file); err != nil || string(b) != "secret" {
		t.Errorf("host file = %q, %v", b, err)
	}
	for _, d := range []string{h.outer, filepath.Join(h.outer, "host"), h.dir} {
		ents, _ := os.ReadDir(d)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		want := map[string]string{h.outer: "host root", filepath.Join(h.outer, "host"): "dir secret", h.dir: ""}[d]
		if strings.Join(names, " ") != want {
			t.Errorf("host directory %s holds %q, want %q", d, names, want)
		}
	}
}

// readIn reads the file at rel inside root, refusing to follow any link
// out of it (os.Root).
func readIn(t testing.TB, root, rel string) (string, error) {
	t.Helper()
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := r.ReadFile(rel)
	return string(b), err
}

func lstatIn(root, rel string) (fs.FileInfo, error) {
	return os.Lstat(filepath.Join(root, rel))
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

// layers unpacks archives as an image's layers (lowest first), each into
// its own directory over the ones below, and returns the directories.
func layers(t testing.TB, base string, archives ...[]byte) []string {
	t.Helper()
	testutil.RequireRoot(t) // whiteout devices, trusted.overlay.opaque
	var dirs []string
	for i, a := range archives {
		d := filepath.Join(base, "layer"+string(rune('1'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := apply(t, d, a, Options{Lower: dirs, Whiteouts: WhiteoutOverlay}); err != nil {
			t.Fatalf("layer %d: %v", i+1, err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

// mountLayers mounts dirs (lowest first) read-only with overlayfs, the way
// a container sees them, and returns the mount point.
func mountLayers(t testing.TB, dirs []string) string {
	t.Helper()
	testutil.RequireRoot(t)
	mnt := t.TempDir()
	var lower []string
	for i := len(dirs) - 1; i >= 0; i-- {
		lower = append(lower, dirs[i])
	}
	lowerdir := strings.Join(lower, ":")
	if len(dirs) == 1 { // overlayfs needs two layers without an upper
		lowerdir += ":" + t.TempDir()
	}
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+lowerdir); err != nil {
		testutil.Unavailable(t, "mounting overlayfs: "+err.Error())
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

func statT(fi fs.FileInfo) *syscall.Stat_t { return fi.Sys().(*syscall.Stat_t) }
