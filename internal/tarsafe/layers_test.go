package tarsafe

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// debianBase is the lowest layer of a Debian bookworm image, cut down: the
// merged /usr layout (bin, lib, lib64 and sbin are symlinks into usr/,
// as debootstrap makes them), an absolute library link, /etc pointing
// into /usr, and a few real programs' places.
func debianBase(t testing.TB) []byte {
	d := func(name string, mode int64) ent { return ent{name: name, typ: tar.TypeDir, mode: mode} }
	l := func(name, target string) ent { return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777} }
	f := func(name, body string, mode int64) ent { return ent{name: name, body: body, mode: mode} }
	return tarOf(t,
		d("./", 0o755),
		l("bin", "usr/bin"),
		d("etc/", 0o755),
		f("etc/debian_version", "12.5\n", 0o644),
		l("etc/os-release", "../usr/lib/os-release"),
		l("lib", "usr/lib"),
		l("lib64", "usr/lib64"),
		d("root/", 0o700),
		l("sbin", "usr/sbin"),
		d("tmp/", 0o1777),
		d("usr/", 0o755),
		d("usr/bin/", 0o755),
		f("usr/bin/dash", "\x7fELF dash", 0o755),
		f("usr/bin/ls", "\x7fELF ls", 0o755),
		l("usr/bin/sh", "dash"),
		d("usr/lib/", 0o755),
		f("usr/lib/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n", 0o644),
		d("usr/lib/x86_64-linux-gnu/", 0o755),
		f("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "\x7fELF ld.so", 0o755),
		f("usr/lib/x86_64-linux-gnu/libc.so.6", "\x7fELF libc", 0o755),
		d("usr/lib64/", 0o755),
		l("usr/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
		d("usr/sbin/", 0o755),
		f("usr/sbin/ldconfig", "\x7fELF ldconfig", 0o755),
		d("var/", 0o755),
		d("var/lib/", 0o755),
	)
}

// An image over a merged-/usr base: files a layer writes through the
// base's symlinks land under usr/, the symlinks survive, a hard link to a
// base file and a file capability survive, and later whiteouts through a
// symlink remove the right file.
func TestApplyMergedUsrImage(t *testing.T) {
	base := t.TempDir()
	dirs := layers(t, base,
		debianBase(t),
		tarOf(t, // like the layer of issue 9: no bin/ entry, only what is under it
			ent{name: "bin/tool", body: "tool", mode: 0o755},
			ent{name: "sbin/rikd", body: "rikd", mode: 0o755},
			ent{name: "lib/x86_64-linux-gnu/libextra.so.1", body: "extra", mode: 0o644},
			ent{name: "bin/ping", body: "\x7fELF ping", mode: 0o755, xattrs: map[string]string{"security.capability": capNetRaw}},
			ent{name: "bin/ls.hard", typ: tar.TypeLink, link: "bin/ls"},
			ent{name: "lib64/ld.hard", typ: tar.TypeLink, link: "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
			ent{name: "etc/os-release.d/", typ: tar.TypeDir}, // a dir beside a symlink, not through it
		),
		tarOf(t,
			ent{name: "bin/.wh.tool"},
			ent{name: "usr/bin/late", body: "late", mode: 0o755},
		),
	)
	// The upper layers hold no bin, lib, lib64 or sbin: the files went
	// where the symlinks point, with the base's directory modes.
	for _, top := range []string{"bin", "lib", "lib64", "sbin"} {
		if _, err := os.Lstat(filepath.Join(dirs[1], top)); err == nil {
			t.Errorf("layer 2 has its own %s: the base's symlink would be hidden", top)
		}
	}
	for rel, body := range map[string]string{
		"usr/bin/tool": "tool", "usr/sbin/rikd": "rikd", "usr/lib/x86_64-linux-gnu/libextra.so.1": "extra",
	} {
		if b, err := readIn(t, dirs[1], rel); err != nil || b != body {
			t.Errorf("layer 2 %s = %q, %v; want %q", rel, b, err, body)
		}
	}
	// Hard links to the base's files share their inodes, wherever the
	// link itself lands (through bin -> usr/bin, lib64 -> usr/lib64).
	for link, target := range map[string]string{
		"usr/bin/ls.hard":   filepath.Join(dirs[0], "usr/bin/ls"),
		"usr/lib64/ld.hard": filepath.Join(dirs[0], "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
	} {
		a, errA := os.Lstat(filepath.Join(dirs[1], link))
		b, errB := os.Lstat(target)
		if errA != nil || errB != nil || !os.SameFile(a, b) {
			t.Errorf("%s is not a hard link to the base's %s: %v %v", link, target, errA, errB)
		}
	}

	mnt := mountLayers(t, dirs[:2])
	for top, target := range map[string]string{"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"} {
		if l, err := os.Readlink(filepath.Join(mnt, top)); err != nil || l != target {
			t.Errorf("/%s = %q, %v; want the symlink to %s", top, l, err, target)
		}
	}
	for rel, body := range map[string]string{
		"bin/tool": "tool", "usr/bin/tool": "tool", "bin/ls": "\x7fELF ls", "bin/dash": "\x7fELF dash",
		"sbin/rikd": "rikd", "sbin/ldconfig": "\x7fELF ldconfig", "lib/x86_64-linux-gnu/libc.so.6": "\x7fELF libc",
		"lib/x86_64-linux-gnu/libextra.so.1": "extra", "etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
		"bin/ls.hard": "\x7fELF ls", "lib64/ld.hard": "\x7fELF ld.so",
	} {
		if b, err := os.ReadFile(filepath.Join(mnt, rel)); err != nil || string(b) != body {
			t.Errorf("/%s = %q, %v; want %q", rel, b, err, body)
		}
	}
	if c, err := getXattr(filepath.Join(mnt, "usr/bin/ping"), "security.capability"); err != nil || string(c) != capNetRaw {
		t.Errorf("/usr/bin/ping capability = %q, %v", c, err)
	}
	for rel, mode := range map[string]os.FileMode{"usr": 0o755, "usr/bin": 0o755, "tmp": os.ModeSticky | 0o777, "root": 0o700} {
		if fi, err := os.Stat(filepath.Join(mnt, rel)); err != nil || fi.Mode()&(os.ModeSticky|os.ModePerm) != mode {
			t.Errorf("/%s mode = %v, %v; want %v", rel, fi.Mode(), err, mode)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dirs[0], "usr/bin/ls"), &st); err != nil || st.Nlink != 2 {
		t.Errorf("base ls has %d links, want 2 (its own and layer 2's)", st.Nlink)
	}

	mnt3 := mountLayers(t, dirs)
	if _, err := os.Lstat(filepath.Join(mnt3, "usr/bin/tool")); err == nil {
		t.Error("layer 3's bin/.wh.tool did not hide usr/bin/tool")
	}
	for _, rel := range []string{"bin/late", "bin/ls", "sbin/rikd"} {
		if _, err := os.Stat(filepath.Join(mnt3, rel)); err != nil {
			t.Errorf("/%s: %v", rel, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(mnt3, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("/bin = %q, %v after layer 3", l, err)
	}
}

// A layer's own entry at a symlink's path replaces it, as in containerd:
// only then does a lower symlink go.
func TestApplyOwnEntryReplacesLowerSymlink(t *testing.T) {
	dirs := layers(t, t.TempDir(),
		debianBase(t),
		tarOf(t, ent{name: "bin/", typ: tar.TypeDir}, ent{name: "bin/tool", body: "tool"}),
	)
	mnt := mountLayers(t, dirs)
	fi, err := os.Lstat(filepath.Join(mnt, "bin"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("/bin = %v, %v; want the layer's directory", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "bin/ls")); err == nil {
		t.Error("/bin/ls still visible under the layer's own bin")
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "usr/bin/ls")); string(b) != "\x7fELF ls" {
		t.Errorf("/usr/bin/ls = %q", b)
	}
}

// The lower layers are read, never changed.
func TestApplyLeavesLowersAlone(t *testing.T) {
	base := t.TempDir()
	dirs := layers(t, base, debianBase(t))
	before := snapshot(t, dirs[0])
	up := filepath.Join(base, "up")
	if err := os.Mkdir(up, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := apply(t, up, tarOf(t,
		ent{name: "usr/bin/.wh.ls"},
		ent{name: "bin/dash", body: "new dash"},
		ent{name: "usr/.wh..wh..opq"},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o700},
		ent{name: "etc/os-release", body: "replaced"},
	), Options{Lower: dirs, Whiteouts: WhiteoutOverlay})
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, dirs[0]); after != before {
		t.Errorf("lower layer changed:\n%s\nwas\n%s", after, before)
	}
}

// snapshot describes every file under dir: name, mode, owner, size, mtime.
func snapshot(t testing.TB, dir string) string {
	t.Helper()
	var out []byte
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := statT(fi)
		out = fmt.Appendf(out, "%s %v %d:%d %d %v\n", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// A directory a layer writes into without an entry for it is created with
// the lower layer's mode, owner and xattrs, as overlayfs' copy-up would.
func TestApplyCopiesUpParents(t *testing.T) {
	dirs := layers(t, t.TempDir(),
		tarOf(t,
			ent{name: "opt/", typ: tar.TypeDir, mode: 0o750, uid: 7, gid: 8, xattrs: map[string]string{"user.note": "kept"}},
			ent{name: "opt/app/", typ: tar.TypeDir, mode: 0o2775, uid: 9},
		),
		tarOf(t, ent{name: "opt/app/bin", body: "x"}),
	)
	for rel, want := range map[string][3]uint32{"opt": {0o750, 7, 8}, "opt/app": {0o2775, 9, 0}} {
		fi, err := os.Lstat(filepath.Join(dirs[1], rel))
		if err != nil {
			t.Fatal(err)
		}
		st := statT(fi)
		if got := [3]uint32{st.Mode & 0o7777, st.Uid, st.Gid}; got != want {
			t.Errorf("layer 2 %s: mode, uid, gid = %o, %d, %d; want %o, %d, %d", rel, got[0], got[1], got[2], want[0], want[1], want[2])
		}
	}
	if v, err := getXattr(filepath.Join(dirs[1], "opt"), "user.note"); err != nil || string(v) != "kept" {
		t.Errorf("opt user.note = %q, %v", v, err)
	}
}
