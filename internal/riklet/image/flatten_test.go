package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rik-org/rik/internal/tarsafe"
	"github.com/rik-org/rik/internal/testutil"
	"golang.org/x/sys/unix"
)

type entry struct {
	name   string
	typ    byte
	body   string
	link   string
	mode   int64
	xattrs map[string]string
}

func tarOf(t *testing.T, entries []entry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// unpackLayers unpacks archives as the store does, each over the ones
// below, and returns their directories (lowest first).
func unpackLayers(t *testing.T, archives ...*bytes.Reader) []string {
	t.Helper()
	testutil.RequireRoot(t) // whiteout devices, trusted.overlay.opaque
	base := t.TempDir()
	var dirs []string
	for i, a := range archives {
		d := filepath.Join(base, fmt.Sprint("l", i+1))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := tarsafe.Apply(context.Background(), d, a, tarsafe.Options{Lower: dirs, Whiteouts: tarsafe.WhiteoutOverlay}); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

func TestFlatten(t *testing.T) {
	layers := unpackLayers(t,
		tarOf(t, []entry{
			{name: "keep", body: "1"},
			{name: "old", body: "1"},
			{name: "dir/a", body: "1"},
			{name: "over", body: "1"},
			{name: "usr/bin/ls", body: "ls", mode: 0o755},
			{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		}),
		tarOf(t, []entry{
			{name: ".wh.old"},
			{name: "dir/.wh..wh..opq"},
			{name: "dir/b", body: "2"},
			{name: "over", body: "2"},
			{name: "bin/ping", body: "ping", mode: 0o4755, xattrs: map[string]string{"security.capability": capNetRaw}},
		}))
	out := filepath.Join(t.TempDir(), "out")
	if err := Flatten(layers, out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep": "1", "over": "2", "dir/b": "2", "bin/ls": "ls", "bin/ping": "ping"}
	for f, body := range want {
		if b, err := os.ReadFile(filepath.Join(out, f)); err != nil || string(b) != body {
			t.Errorf("%s = %q, %v; want %q", f, b, err, body)
		}
	}
	for _, f := range []string{"old", "dir/a"} {
		if _, err := os.Lstat(filepath.Join(out, f)); err == nil {
			t.Errorf("%s should be gone", f)
		}
	}
	if l, err := os.Readlink(filepath.Join(out, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("bin = %q, %v; want the symlink kept", l, err)
	}
	fi, err := os.Stat(filepath.Join(out, "usr/bin/ping"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("ping = %v, %v; want setuid 0755", fi, err)
	}
	if c, err := unix.Lgetxattr(filepath.Join(out, "usr/bin/ping"), "security.capability", make([]byte, 64)); err != nil || c != len(capNetRaw) {
		t.Errorf("ping capability lost in the copy: %d, %v", c, err)
	}
}

// capNetRaw is a security.capability value granting cap_net_raw.
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
