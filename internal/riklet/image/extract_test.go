package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type entry struct {
	name     string
	typ      byte
	body     string
	link     string
	mode     int64
	devmajor int64
}

func tarOf(t *testing.T, entries []entry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Devmajor: e.devmajor}
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

func TestExtractRejectsUnsafe(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
	}{
		{"dotdot", []entry{{name: "../evil", body: "x"}}},
		{"dotdot inside", []entry{{name: "a/../../evil", body: "x"}}},
		{"through absolute symlink", []entry{{name: "etc", typ: tar.TypeSymlink, link: "/etc"}, {name: "etc/evil", body: "x"}}},
		{"through relative symlink", []entry{{name: "up", typ: tar.TypeSymlink, link: "../.."}, {name: "up/evil", body: "x"}}},
		{"hardlink dotdot", []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}},
		{"hardlink through symlink", []entry{{name: "etc", typ: tar.TypeSymlink, link: "/etc"}, {name: "h", typ: tar.TypeLink, link: "etc/passwd"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outer := t.TempDir()
			dir := filepath.Join(outer, "root")
			os.Mkdir(dir, 0o755)
			err := Extract(tarOf(t, tt.entries), dir)
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Fatalf("Extract = %v, want ErrUnsafeEntry", err)
			}
			if _, err := os.Lstat(filepath.Join(outer, "evil")); err == nil {
				t.Fatal("file written outside the root")
			}
		})
	}
}

func TestExtract(t *testing.T) {
	dir := t.TempDir()
	err := Extract(tarOf(t, []entry{
		{name: "/abs/file", body: "abs"}, // leading slash: kept inside
		{name: "./bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/tool", body: "#!", mode: 0o4755},
		{name: "bin/link", typ: tar.TypeSymlink, link: "/bin/tool"},
		{name: "bin/hard", typ: tar.TypeLink, link: "/bin/tool"},
		{name: "dev/null", typ: tar.TypeChar, devmajor: 1},
		{name: "dev/sda", typ: tar.TypeBlock, devmajor: 8},
		{name: "gone/.wh.old", body: ""},
		{name: "opq/.wh..wh..opq", body: ""},
		{name: "bin/tool2", body: "first"},
		{name: "bin/tool2", body: "second"}, // later entry replaces
	}), dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "abs/file")); string(b) != "abs" {
		t.Errorf("abs/file = %q", b)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/tool"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/tool mode = %v, %v; want setuid 0755", fi.Mode(), err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/link")); l != "/bin/tool" {
		t.Errorf("symlink target = %q, want kept as /bin/tool", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/hard")); string(b) != "#!" {
		t.Errorf("hard link content = %q", b)
	}
	for _, dev := range []string{"dev/null", "dev/sda"} {
		if _, err := os.Lstat(filepath.Join(dir, dev)); err == nil {
			t.Errorf("device node %s created", dev)
		}
	}
	wfi, err := os.Lstat(filepath.Join(dir, "gone/old"))
	if err != nil || !isWhiteout(wfi) {
		t.Errorf("gone/old is not an overlay whiteout: %v", err)
	}
	if !isOpaque(filepath.Join(dir, "opq")) {
		t.Error("opq is not marked opaque")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/tool2")); string(b) != "second" {
		t.Errorf("bin/tool2 = %q, want second", b)
	}
}

func TestFlatten(t *testing.T) {
	base := t.TempDir()
	l1, l2, out := filepath.Join(base, "l1"), filepath.Join(base, "l2"), filepath.Join(base, "out")
	os.Mkdir(l1, 0o755)
	os.Mkdir(l2, 0o755)
	if err := Extract(tarOf(t, []entry{
		{name: "keep", body: "1"},
		{name: "old", body: "1"},
		{name: "dir/a", body: "1"},
		{name: "over", body: "1"},
	}), l1); err != nil {
		t.Fatal(err)
	}
	if err := Extract(tarOf(t, []entry{
		{name: ".wh.old"},
		{name: "dir/.wh..wh..opq"},
		{name: "dir/b", body: "2"},
		{name: "over", body: "2"},
	}), l2); err != nil {
		t.Fatal(err)
	}
	if err := Flatten([]string{l1, l2}, out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep": "1", "over": "2", "dir/b": "2"}
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
}

// A whiteout of "." or ".." would remove the layer root or the directory
// holding it.
func TestExtractRejectsDotWhiteouts(t *testing.T) {
	for _, name := range []string{".wh.", ".wh..", ".wh...", "sub/.wh..", "sub/.wh..."} {
		t.Run(name, func(t *testing.T) {
			outer := t.TempDir()
			dir := filepath.Join(outer, "root")
			os.Mkdir(dir, 0o755)
			sentinel := filepath.Join(outer, "keep")
			os.WriteFile(sentinel, []byte("x"), 0o644)
			inRoot := filepath.Join(dir, "keep")
			os.WriteFile(inRoot, []byte("x"), 0o644)
			err := Extract(tarOf(t, []entry{{name: "sub/", typ: tar.TypeDir, mode: 0o755}, {name: name}}), dir)
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("Extract = %v, want ErrUnsafeEntry", err)
			}
			for _, f := range []string{sentinel, inRoot} {
				if fi, err := os.Lstat(f); err != nil || !fi.Mode().IsRegular() {
					t.Errorf("%s removed by a whiteout: %v", f, err)
				}
			}
		})
	}
}
