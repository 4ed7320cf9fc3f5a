package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
	"golang.org/x/sys/unix"
)

// A Function root filesystem: one tree, owners of the running user.
func TestApplyTree(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	st, err := apply(t, dir, tarOf(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755, uid: uid, gid: gid},
		ent{name: "bin/", typ: tar.TypeDir, mode: 0o755, uid: uid, gid: gid},
		ent{name: "bin/busybox", body: "ELF", mode: 0o755, uid: uid, gid: gid},
		ent{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox", uid: uid, gid: gid},
		ent{name: "bin/ash", typ: tar.TypeLink, link: "bin/busybox", uid: uid, gid: gid},
		ent{name: "deep/er/file", body: "implicit parents", uid: uid, gid: gid},
		ent{name: "etc/abs", typ: tar.TypeSymlink, link: "/etc/passwd", uid: uid, gid: gid}, // dangling is fine, never followed
		ent{name: "/abs/file", body: "abs", uid: uid, gid: gid},                             // leading slash: inside
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620, uid: uid, gid: gid},
		ent{name: "dev/null", typ: tar.TypeChar, devmajor: 1, uid: uid, gid: gid},
		ent{name: "dev/sda", typ: tar.TypeBlock, devmajor: 8, uid: uid, gid: gid},
		ent{name: "bin/tool", body: "first", uid: uid, gid: gid},
		ent{name: "bin/tool", body: "second", uid: uid, gid: gid}, // a later entry replaces
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Entries: 10, Bytes: int64(len("ELF" + "implicit parents" + "abs" + "first" + "second")), Skipped: 2}
	if st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
	for rel, body := range map[string]string{"bin/busybox": "ELF", "bin/ash": "ELF", "deep/er/file": "implicit parents", "abs/file": "abs", "bin/tool": "second"} {
		if b, err := readIn(t, dir, rel); err != nil || b != body {
			t.Errorf("%s = %q, %v; want %q", rel, b, err, body)
		}
	}
	if fi, err := lstatIn(dir, "bin/busybox"); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("busybox mode = %v, %v", fi, err)
	}
	for rel, target := range map[string]string{"bin/sh": "busybox", "etc/abs": "/etc/passwd"} {
		if l, err := os.Readlink(filepath.Join(dir, rel)); l != target {
			t.Errorf("%s -> %q, %v; want %q kept", rel, l, err, target)
		}
	}
	if fi, err := lstatIn(dir, "run/fifo"); err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o620 {
		t.Errorf("fifo = %v, %v", fi, err)
	}
	for _, dev := range []string{"dev/null", "dev/sda"} {
		if _, err := lstatIn(dir, dev); err == nil {
			t.Errorf("device node %s created", dev)
		}
	}
	if fi, _ := lstatIn(dir, "bin/busybox"); fi != nil && !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("busybox mtime = %v", fi.ModTime())
	}
}

// An image layer as an overlayfs lower directory: whiteouts become 0/0
// devices, opaque directories are marked, modes and owners are kept.
func TestApplyLayer(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	_, err := apply(t, dir, tarOf(t,
		ent{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "bin/tool", body: "#!", mode: 0o4755, uid: 1000, gid: 1001},
		ent{name: "bin/link", typ: tar.TypeSymlink, link: "/bin/tool", uid: 1000},
		ent{name: "bin/hard", typ: tar.TypeLink, link: "/bin/tool"},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "gone/.wh.old"},
		ent{name: "opq/.wh..wh..opq"},
	), Options{Whiteouts: WhiteoutOverlay})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := lstatIn(dir, "bin/tool")
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 || statT(fi).Uid != 1000 || statT(fi).Gid != 1001 {
		t.Errorf("bin/tool = %v, %v; want setuid 0755 owned 1000:1001", fi.Mode(), err)
	}
	if fi, err := lstatIn(dir, "bin/link"); err != nil || statT(fi).Uid != 1000 {
		t.Errorf("symlink owner: %v", err)
	}
	if fi, err := lstatIn(dir, "tmp"); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp = %v, %v; want sticky 0777", fi.Mode(), err)
	}
	if b, _ := readIn(t, dir, "bin/hard"); b != "#!" {
		t.Errorf("hard link content = %q", b)
	}
	if fi, err := lstatIn(dir, "gone/old"); err != nil || !IsWhiteout(fi) {
		t.Errorf("gone/old is not an overlay whiteout: %v", err)
	}
	if !IsOpaque(filepath.Join(dir, "opq")) {
		t.Error("opq is not marked opaque")
	}
	if IsOpaque(filepath.Join(dir, "gone")) {
		t.Error("gone is marked opaque")
	}
}

// Entries that would leave the root or break the tree are refused, in
// both whiteout modes, and nothing outside the root changes.
func TestApplyRefuses(t *testing.T) {
	tests := []struct {
		name    string
		entries []ent
		want    error
	}{
		{"dotdot", []ent{{name: "../evil", body: "x"}}, ErrUnsafe},
		{"inner dotdot", []ent{{name: "a/../../evil", body: "x"}}, ErrUnsafe},
		{"dotdot dir", []ent{{name: "a/..", typ: tar.TypeDir}}, ErrUnsafe},
		{"hard link dotdot", []ent{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}, ErrUnsafe},
		{"hard link to the host through a symlink", []ent{
			{name: "etc", typ: tar.TypeSymlink, link: "/etc"},
			{name: "h", typ: tar.TypeLink, link: "etc/passwd"}, // root/etc/passwd: missing
		}, ErrUnsafe},
		{"hard link to a symlink", []ent{
			{name: "s", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "h", typ: tar.TypeLink, link: "s"},
		}, ErrUnsafe},
		{"hard link to a directory", []ent{{name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}}, ErrUnsafe},
		{"hard link to the root", []ent{{name: "h", typ: tar.TypeLink, link: "./"}}, ErrUnsafe},
		{"hard link to itself", []ent{{name: "h", body: "x"}, {name: "h", typ: tar.TypeLink, link: "h"}}, nil},
		{"through a file", []ent{{name: "f", body: "x"}, {name: "f/evil", body: "x"}}, ErrUnsafe},
		{"symlink loop", []ent{{name: "a", typ: tar.TypeSymlink, link: "b"}, {name: "b", typ: tar.TypeSymlink, link: "a"}, {name: "a/evil", body: "x"}}, ErrUnsafe},
		// In the root, /etc is etc itself: a loop, as in a chroot.
		{"through an absolute symlink to itself", []ent{{name: "etc", typ: tar.TypeSymlink, link: "/etc"}, {name: "etc/evil", body: "x"}}, ErrUnsafe},
		{"whiteout .wh.", []ent{{name: ".wh."}}, ErrUnsafe},
		{"whiteout .wh..", []ent{{name: ".wh.."}}, ErrUnsafe},
		{"whiteout .wh...", []ent{{name: ".wh..."}}, ErrUnsafe},
		{"whiteout sub/.wh..", []ent{{name: "sub/", typ: tar.TypeDir}, {name: "sub/.wh.."}}, ErrUnsafe},
		{"whiteout sub/.wh...", []ent{{name: "sub/", typ: tar.TypeDir}, {name: "sub/.wh..."}}, ErrUnsafe},
		{"owner out of range", []ent{{name: "f", body: "x", uid: 1 << 40}}, ErrInvalid},
		{"name too long", []ent{{name: strings.Repeat("a/", MaxPathLen/2) + "f", body: "x"}}, ErrInvalid},
	}
	for _, mode := range []WhiteoutMode{WhiteoutRemove, WhiteoutOverlay} {
		for _, tt := range tests {
			t.Run(modeName[mode]+"/"+tt.name, func(t *testing.T) {
				if mode == WhiteoutOverlay {
					testutil.RequireRoot(t)
				}
				h := newHost(t)
				inRoot := filepath.Join(h.root, "keep")
				if err := os.WriteFile(inRoot, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				_, err := apply(t, h.root, tarOf(t, tt.entries...), Options{Whiteouts: mode})
				if tt.want != nil { // else any result will do: nothing may escape
					wantErr(t, err, tt.want)
				}
				h.check(t)
				if b, err := os.ReadFile(inRoot); err != nil || string(b) != "x" {
					t.Errorf("file in the root removed: %v", err)
				}
			})
		}
	}
}

func TestApplyCaps(t *testing.T) {
	big := tarOf(t, ent{name: "big", body: strings.Repeat("x", 100)})
	_, err := apply(t, t.TempDir(), big, Options{MaxBytes: 50})
	wantErr(t, err, ErrTooLarge)
	if _, err := apply(t, t.TempDir(), big, Options{MaxBytes: 100}); err != nil {
		t.Errorf("exactly MaxBytes: %v", err)
	}
	many := tarOf(t, ent{name: "a"}, ent{name: "b"}, ent{name: "c"})
	_, err = apply(t, t.TempDir(), many, Options{MaxEntries: 2})
	wantErr(t, err, ErrTooLarge)
	deep := tarOf(t, ent{name: "a/b/c/f"}) // three directories and a file
	_, err = apply(t, t.TempDir(), deep, Options{MaxEntries: 3})
	wantErr(t, err, ErrTooLarge)
	// Each a costs 801 lookups (b, then back up, 800 times, then a).
	costly := tarOf(t,
		ent{name: "a", typ: tar.TypeSymlink, link: strings.Repeat("b/../", 800) + "."},
		ent{name: "a/a/a/a/a/a/f"})
	_, err = apply(t, t.TempDir(), costly, Options{})
	wantErr(t, err, ErrUnsafe)
	if _, err := apply(t, t.TempDir(), costly[:len(costly)-3*512], Options{}); err != nil {
		t.Errorf("the link alone: %v", err)
	}
	_, err = apply(t, t.TempDir(), []byte("not a tar archive, not at all, but long enough to be read"), Options{})
	wantErr(t, err, ErrInvalid)
	short := tarOf(t, ent{name: "f", body: strings.Repeat("x", 2000)})[:1024]
	_, err = apply(t, t.TempDir(), short, Options{})
	wantErr(t, err, ErrInvalid)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(many), Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Apply = %v", err)
	}
	if _, err := apply(t, t.TempDir(), many, Options{Lower: []string{t.TempDir()}}); err == nil {
		t.Error("lower layers accepted with WhiteoutRemove")
	}
}

// Paths through symlinks are resolved inside the root, as in a chroot:
// absolute targets and ".." never leave it.
func TestApplyResolvesSymlinksInsideRoot(t *testing.T) {
	tests := []struct {
		name    string
		entries func(h *host) []ent
		want    func(h *host) string // where the file "evil" lands, in the root
	}{
		{"absolute", func(*host) []ent {
			return []ent{{name: "etc", typ: tar.TypeSymlink, link: "/real/etc"}, {name: "etc/evil", body: "x"}}
		}, fixed("real/etc/evil")},
		{"relative up", func(*host) []ent {
			return []ent{{name: "up", typ: tar.TypeSymlink, link: "../.."}, {name: "up/evil", body: "x"}}
		}, fixed("evil")},
		{"to the host", func(h *host) []ent {
			return []ent{{name: "lnk", typ: tar.TypeSymlink, link: h.dir}, {name: "lnk/evil", body: "x"}}
		}, func(h *host) string { return strings.TrimPrefix(h.dir, "/") + "/evil" }},
		{"chain", func(*host) []ent {
			return []ent{
				{name: "a", typ: tar.TypeSymlink, link: "b/c"},
				{name: "b", typ: tar.TypeSymlink, link: "/x/../../y"},
				{name: "a/evil", body: "x"},
			}
		}, fixed("y/c/evil")},
		{"dot dot through a link", func(*host) []ent {
			return []ent{
				{name: "d/e/", typ: tar.TypeDir},
				{name: "l", typ: tar.TypeSymlink, link: "d/e/../../../../.."},
				{name: "l/evil", body: "x"},
			}
		}, fixed("evil")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			want := tt.want(h)
			if _, err := apply(t, h.root, tarOf(t, tt.entries(h)...), Options{}); err != nil {
				t.Fatal(err)
			}
			fi, err := lstatIn(h.root, want)
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("evil not at %s in the root: %v", want, err)
			}
			h.check(t)
		})
	}
}

func fixed(p string) func(*host) string { return func(*host) string { return p } }

// The attack of issue 7: a directory entry later replaced by a symlink to
// the host made the deferred Chtimes change the host file. Every metadata
// change goes to the entry itself, never through a link.
func TestApplyNeverFollowsLinksForMetadata(t *testing.T) {
	tests := []struct {
		name    string
		entries func(h *host) []ent
	}{
		{"dir then symlink to a host file", func(h *host) []ent {
			return []ent{
				{name: "d/", typ: tar.TypeDir, mode: 0o777, mtime: time.Unix(1600000000, 0)},
				{name: "d", typ: tar.TypeSymlink, link: h.file},
			}
		}},
		{"dir then symlink to a host dir, then through it", func(h *host) []ent {
			return []ent{
				{name: "d/", typ: tar.TypeDir, mode: 0o777, uid: 4242, mtime: time.Unix(1600000000, 0)},
				{name: "d", typ: tar.TypeSymlink, link: h.dir},
				{name: "d/x", body: "x", mode: 0o777, uid: 4242},
				{name: "d/sub/", typ: tar.TypeDir, mode: 0o777, uid: 4242},
				{name: "d/.wh..wh..opq"},
			}
		}},
		{"relative symlink, then a dir entry replaces it", func(h *host) []ent {
			rel, _ := filepath.Rel(h.root, h.dir)
			return []ent{
				{name: "d", typ: tar.TypeSymlink, link: rel},
				{name: "d/", typ: tar.TypeDir, mode: 0o777, uid: 4242, mtime: time.Unix(1600000000, 0)},
			}
		}},
		{"symlink with an owner and xattrs", func(h *host) []ent {
			return []ent{{name: "s", typ: tar.TypeSymlink, link: h.file, uid: 4242, gid: 4242, mode: 0o777,
				xattrs: map[string]string{"user.evil": "x"}}}
		}},
		{"hard link through a symlink to the host", func(h *host) []ent {
			return []ent{
				{name: "hd", typ: tar.TypeSymlink, link: filepath.Dir(h.file)},
				{name: "h", typ: tar.TypeLink, link: "hd/secret"},
			}
		}},
		{"whiteouts through symlinks", func(h *host) []ent {
			return []ent{
				{name: "lnk", typ: tar.TypeSymlink, link: filepath.Dir(h.file)},
				{name: "lnk/.wh.secret"},
				{name: "up", typ: tar.TypeSymlink, link: "../../.."},
				{name: "up/.wh.host"},
				{name: "up/.wh..wh..opq"},
			}
		}},
	}
	for _, mode := range []WhiteoutMode{WhiteoutRemove, WhiteoutOverlay} {
		for _, tt := range tests {
			t.Run(modeName[mode]+"/"+tt.name, func(t *testing.T) {
				if mode == WhiteoutOverlay {
					testutil.RequireRoot(t)
				}
				h := newHost(t)
				_, err := apply(t, h.root, tarOf(t, tt.entries(h)...), Options{Whiteouts: mode})
				if err != nil && !errors.Is(err, ErrUnsafe) {
					t.Fatal(err)
				}
				h.check(t)
			})
		}
	}
}

// A parent resolved once is reused for the next entries in it, until one
// of them replaces what its resolution went through.
func TestApplyReresolvesAfterChangingItsPath(t *testing.T) {
	dir := t.TempDir()
	_, err := apply(t, dir, tarOf(t,
		ent{name: "p/b/", typ: tar.TypeDir},
		ent{name: "x", typ: tar.TypeSymlink, link: "p/b/.."}, // x is p
		ent{name: "x/f1", body: "1"},                         // p/f1
		ent{name: "x/b", typ: tar.TypeSymlink, link: "/q"},   // now x is /q/.., the root
		ent{name: "x/f2", body: "2"},                         // f2
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{"p/f1": true, "f2": true, "p/f2": false} {
		if _, err := lstatIn(dir, rel); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", rel, err == nil, want)
		}
	}
}

func TestApplyWhiteoutsRemove(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "c/old"), 0o755); err != nil { // not from the archive
		t.Fatal(err)
	}
	_, err := apply(t, dir, tarOf(t,
		ent{name: "a/f", body: "f"},
		ent{name: "a/g", body: "g"},
		ent{name: "b/", typ: tar.TypeDir},
		ent{name: "b/x", body: "x"},
		ent{name: "a/.wh.f"},
		ent{name: ".wh.b"},
		ent{name: "c/x", body: "x"},
		ent{name: "c/sub/y", body: "y"},
		ent{name: "c/.wh..wh..opq"},
	), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{"a/f": false, "a/g": true, "b": false, "c/x": true, "c/sub/y": true, "c/old": false, "a/.wh.f": false} {
		if _, err := lstatIn(dir, rel); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", rel, err == nil, want)
		}
	}
}

// Whiteouts of an upper layer, seen through overlayfs.
func TestApplyWhiteoutsOverlay(t *testing.T) {
	dirs := layers(t, t.TempDir(),
		tarOf(t,
			ent{name: "a/x", body: "x"}, ent{name: "a/y", body: "y"},
			ent{name: "d/z", body: "z"},
			ent{name: "e/old", body: "old"},
			ent{name: "f", body: "file"},
			ent{name: "g/old", body: "old"},
		),
		tarOf(t,
			ent{name: ".wh.g"}, ent{name: "g/new", body: "new"}, // g made again as a parent: opaque
			ent{name: "a/.wh.x"},
			ent{name: "d/.wh..wh..opq"}, ent{name: "d/new", body: "new"},
			ent{name: ".wh.e"}, ent{name: "e/", typ: tar.TypeDir}, ent{name: "e/new", body: "new"},
			ent{name: ".wh.f"}, ent{name: "f/", typ: tar.TypeDir}, ent{name: "f/in", body: "in"},
		),
	)
	mnt := mountLayers(t, dirs)
	for rel, want := range map[string]bool{
		"a/x": false, "a/y": true, "d/z": false, "d/new": true, "e/old": false, "e/new": true, "f/in": true,
		"g/old": false, "g/new": true,
	} {
		if _, err := lstatIn(mnt, rel); (err == nil) != want {
			t.Errorf("%s visible = %v, want %v", rel, err == nil, want)
		}
	}
}

// Extended attributes: file capabilities (ping's cap_net_raw) and user
// attributes are applied; overlayfs' own are never taken from an archive.
func TestApplyXattrs(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"user.probe", "security.probe"} {
		if err := unix.Setxattr(probe, x, []byte("1"), 0); err != nil {
			testutil.Unavailable(t, "xattrs on "+dir+": "+err.Error())
		}
	}
	os.Remove(probe)
	st, err := apply(t, dir, tarOf(t,
		ent{name: "usr/bin/ping", body: "ELF", mode: 0o755, xattrs: map[string]string{"security.capability": capNetRaw, "user.comment": "ping"}},
		ent{name: "etc/", typ: tar.TypeDir, xattrs: map[string]string{"user.dir": "d", "trusted.overlay.opaque": "y"}},
		ent{name: "run/fifo", typ: tar.TypeFifo, xattrs: map[string]string{"user.fifo": "f"}},
		ent{name: "lnk", typ: tar.TypeSymlink, link: "usr/bin/ping", xattrs: map[string]string{"user.link": "l"}},
	), Options{Whiteouts: WhiteoutOverlay})
	if err != nil {
		t.Fatal(err)
	}
	for rel, x := range map[string][2]string{
		"usr/bin/ping": {"security.capability", capNetRaw},
		"etc":          {"user.dir", "d"},
	} {
		if got, err := getXattr(filepath.Join(dir, rel), x[0]); err != nil || string(got) != x[1] {
			t.Errorf("%s %s = %q, %v; want %q", rel, x[0], got, err, x[1])
		}
	}
	if fi, _ := lstatIn(dir, "usr/bin/ping"); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("ping mode = %v (set after the capability)", fi)
	}
	if IsOpaque(filepath.Join(dir, "etc")) {
		t.Error("an archive set trusted.overlay.opaque")
	}
	if st.XattrsSkipped != 3 { // trusted.overlay.opaque, user.* on a FIFO, on a symlink
		t.Errorf("xattrs skipped = %d, want 3", st.XattrsSkipped)
	}
	if out, err := execGetcap(filepath.Join(dir, "usr/bin/ping")); err == nil && !strings.Contains(out, "cap_net_raw") {
		t.Errorf("getcap = %q", out)
	}
}

var modeName = map[WhiteoutMode]string{WhiteoutRemove: "remove", WhiteoutOverlay: "overlay"}

// execGetcap runs getcap on p, when installed.
func execGetcap(p string) (string, error) {
	out, err := exec.Command("getcap", p).Output()
	return string(out), err
}

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw (13), effective and permitted, as Debian's ping has it.
const capNetRaw = "\x01\x00\x00\x02" + "\x00\x20\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00"
