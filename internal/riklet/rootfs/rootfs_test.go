package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/testutil"
)

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func makeTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body)), Linkname: e.link,
			Uid: os.Getuid(), Gid: os.Getgid()}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestSniff(t *testing.T) {
	ext4 := make([]byte, 2048)
	ext4[1080], ext4[1081] = 0x53, 0xEF
	tarb := makeTar(t, []entry{{name: "a", typ: tar.TypeReg, body: "x"}})
	tests := []struct {
		name string
		in   []byte
		want Format
	}{
		{"ext4", ext4, FormatExt4},
		{"tar", tarb, FormatTar},
		{"tar.gz", gz(tarb), FormatTarGz},
		{"empty", nil, FormatUnknown},
		{"short", []byte("hello"), FormatUnknown},
		{"text", bytes.Repeat([]byte("x"), 4096), FormatUnknown},
	}
	for _, tt := range tests {
		if got := Sniff(tt.in); got != tt.want {
			t.Errorf("%s: Sniff = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestExtract(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "root")
	st, err := Extract(context.Background(), bytes.NewReader(makeTar(t, []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/busybox", typ: tar.TypeReg, body: "ELF", mode: 0o755},
		{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox"},
		{name: "bin/ash", typ: tar.TypeLink, link: "bin/busybox"},
		{name: "deep/er/file", typ: tar.TypeReg, body: "implicit parents"},
		{name: "etc/abs", typ: tar.TypeSymlink, link: "/etc/passwd"}, // dangling is fine, never followed
	})), dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 6 || st.Bytes != int64(len("ELF")+len("implicit parents")) {
		t.Errorf("stats = %+v", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/busybox")); string(b) != "ELF" {
		t.Errorf("busybox = %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "bin/busybox")); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("busybox mode = %v", fi)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "busybox" {
		t.Errorf("sh -> %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/ash")); string(b) != "ELF" {
		t.Errorf("hard link ash = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "deep/er/file")); string(b) != "implicit parents" {
		t.Errorf("deep file = %q", b)
	}
}

// Extract maps tarsafe's refusals to this package's errors; the rules
// themselves are tested in internal/tarsafe.
func TestExtractErrors(t *testing.T) {
	tests := []struct {
		name    string
		archive []byte
		want    error
	}{
		{"dotdot", makeTar(t, []entry{{name: "../evil", typ: tar.TypeReg, body: "x"}}), ErrUnsafePath},
		{"hard link out", makeTar(t, []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}), ErrUnsafePath},
		{"too large", makeTar(t, []entry{{name: "big", typ: tar.TypeReg, body: strings.Repeat("x", 100)}}), ErrTooLarge},
		{"not a tar", bytes.Repeat([]byte("x"), 1024), ErrUnsupported},
		{"cut short", makeTar(t, []entry{{name: "big", typ: tar.TypeReg, body: strings.Repeat("x", 40)}})[:520], ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "root")
			_, err := Extract(context.Background(), bytes.NewReader(tt.archive), dir, 50)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Extract err = %v, want %v", err, tt.want)
			}
			if _, err := os.Lstat(filepath.Join(parent, "evil")); err == nil {
				t.Errorf("file written outside the root")
			}
		})
	}
}

// A rootfs whose bin is a symlink (Debian's merged /usr) is unpacked, with
// paths through the symlink resolved inside the root.
func TestExtractThroughSymlinks(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	_, err := Extract(context.Background(), bytes.NewReader(makeTar(t, []entry{
		{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		{name: "bin/tool", typ: tar.TypeReg, body: "tool", mode: 0o755},
		{name: "lnk", typ: tar.TypeSymlink, link: "/tmp"},
		{name: "lnk/evil", typ: tar.TypeReg, body: "x"},
	})), dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "usr/bin/tool")); err != nil || string(b) != "tool" {
		t.Errorf("usr/bin/tool = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin")); err != nil || l != "usr/bin" {
		t.Errorf("bin = %q, %v; want the symlink kept", l, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "tmp/evil")); err != nil {
		t.Errorf("lnk/evil did not land in the root's tmp: %v", err)
	}
}

func TestFetch(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	ctx := context.Background()
	tgz := gz(makeTar(t, []entry{
		{name: "sbin/", typ: tar.TypeDir, mode: 0o755},
		{name: "sbin/init", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o755},
	}))
	var hits atomic.Int32 // full downloads
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/rootfs.tar.gz":
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			hits.Add(1)
			w.Write(tgz)
		case "/text":
			hits.Add(1)
			w.Write(bytes.Repeat([]byte("not a filesystem "), 300))
		default:
			http.NotFound(w, r)
		}
	}))
	s, err := NewStore(t.TempDir(), 1<<20, testPolicy(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	img, err := s.Fetch(ctx, srv.URL+"/rootfs.tar.gz", "", func(m string) { msgs = append(msgs, m) })
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 2048)
	f, _ := os.Open(img)
	f.Read(head)
	f.Close()
	if Sniff(head) != FormatExt4 {
		t.Errorf("cached image is not ext4")
	}
	if len(msgs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), "fetched rootfs") {
		t.Errorf("progress = %q", msgs)
	}
	if out, err := exec.Command("debugfs", "-R", "cat /sbin/init", img).Output(); err != nil || string(out) != "#!/bin/sh\n" {
		t.Errorf("image /sbin/init = %q, %v", out, err)
	}

	// Cached by URL, revalidated with the ETag: no second download.
	img2, err := s.Fetch(ctx, srv.URL+"/rootfs.tar.gz", "", nil)
	if err != nil || img2 != img || hits.Load() != 1 {
		t.Errorf("second Fetch = %q, %v after %d hits; want cached %q", img2, err, hits.Load(), img)
	}
	// Cached by content hash, even under another URL.
	sum := sha256.Sum256(tgz)
	img3, err := s.Fetch(ctx, srv.URL+"/other-name.tar.gz", hex.EncodeToString(sum[:]), nil)
	if err != nil || img3 != img || hits.Load() != 1 {
		t.Errorf("Fetch by sha256 = %q, %v after %d hits", img3, err, hits.Load())
	}

	// Source gone: the cached image is used.
	url := srv.URL + "/rootfs.tar.gz"
	srv.Close()
	if img4, err := s.Fetch(ctx, url, "", nil); err != nil || img4 != img {
		t.Errorf("Fetch with the source down = %q, %v; want cached %q", img4, err, img)
	}
	srv = httptest.NewServer(srv.Config.Handler)
	defer srv.Close()

	bad := strings.Repeat("0", 64)
	for _, tt := range []struct {
		name, url, sha string
		want           error
	}{
		{"checksum", srv.URL + "/rootfs.tar.gz", bad, ErrChecksum},
		{"not found", srv.URL + "/missing", "", ErrFetch},
		{"unsupported", srv.URL + "/text", "", ErrUnsupported},
		{"scheme", "ftp://example.com/x", "", ErrUnsupported},
		{"bad sha", srv.URL + "/rootfs.tar.gz", "xyz", ErrUnsupported},
		{"missing file", "file:///nonexistent/rootfs.ext4", "", ErrFetch},
	} {
		if _, err := s.Fetch(ctx, tt.url, tt.sha, nil); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}

	small, _ := NewStore(t.TempDir(), 100, testPolicy(), nil)
	if _, err := small.Fetch(ctx, srv.URL+"/rootfs.tar.gz", "", nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("over the cap: err = %v, want ErrTooLarge", err)
	}
}

func TestFetchPlainTarFile(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	src := filepath.Join(t.TempDir(), "root.tar")
	os.WriteFile(src, makeTar(t, []entry{{name: "etc/hostname", typ: tar.TypeReg, body: "guest\n"}}), 0o644)
	s, _ := NewStore(t.TempDir(), 0, testPolicy(), nil)
	img, err := s.Fetch(context.Background(), "file://"+src, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "cat /etc/hostname", img).Output()
	if err != nil || string(out) != "guest\n" {
		t.Errorf("image /etc/hostname = %q, %v", out, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(ents) != 0 {
		t.Errorf("temp files left: %v", ents)
	}
}

func TestFetchExt4File(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "hello"), []byte("hi"), 0o644)
	src := filepath.Join(t.TempDir(), "root.ext4")
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, src, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v %s", err, out)
	}
	s, _ := NewStore(t.TempDir(), 0, testPolicy(), nil)
	img, err := s.Fetch(context.Background(), "file://"+src, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(img)
	if !bytes.Equal(a, b) {
		t.Errorf("cached ext4 differs from the source")
	}
	if again, err := s.Fetch(context.Background(), "file://"+src, "", nil); err != nil || again != img {
		t.Errorf("unchanged file: Fetch = %q, %v; want %q", again, err, img)
	}
	// The file changes: a new image.
	os.WriteFile(filepath.Join(tree, "hello"), []byte("changed"), 0o644)
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, src, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v %s", err, out)
	}
	changed, err := s.Fetch(context.Background(), "file://"+src, "", nil)
	if err != nil || changed == img {
		t.Errorf("changed file: Fetch = %q, %v; want a new image", changed, err)
	}
}

func TestClone(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := append(bytes.Repeat([]byte{0}, 3<<20), []byte("tail")...)
	copy(data, "head")
	os.WriteFile(src, data, 0o400)
	dst := filepath.Join(dir, "dst")
	if err := Clone(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatalf("clone differs (len %d vs %d)", len(got), len(data))
	}
	if fi, err := os.Stat(dst); err != nil || fi.Sys().(*syscall.Stat_t).Blocks*512 >= 1<<20 {
		t.Errorf("clone of a mostly-zero file is not sparse: %v", fi.Sys())
	}
	// The copy is private: writing it leaves the source alone.
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XXXX"), 0)
	f.Close()
	if b, _ := os.ReadFile(src); string(b[:4]) != "head" {
		t.Errorf("source changed through the clone: %q", b[:4])
	}
	if err := Clone(context.Background(), filepath.Join(dir, "missing"), filepath.Join(dir, "x")); err == nil {
		t.Errorf("clone of a missing file succeeded")
	}
}

// BenchmarkClone copies a 256 MiB sparse image with 16 MiB of data.
func BenchmarkClone(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(256 << 20)
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	for i := int64(0); i < 16; i++ {
		f.WriteAt(chunk, i*(16<<20))
	}
	f.Close()
	for b.Loop() {
		if err := Clone(context.Background(), src, filepath.Join(dir, "dst")); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFetchRefusesFIFO: a file:// URL naming a FIFO is an error at once;
// opening it used to block until a writer came (forever, with the URL's
// lock held).
func TestFetchRefusesFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := NewStore(t.TempDir(), 0, testPolicy(), nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Fetch(context.Background(), "file://"+fifo, "", nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrFetch) {
			t.Errorf("Fetch of a FIFO: err = %v, want ErrFetch", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the stuck open so the test binary can end.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("Fetch of a FIFO blocked")
	}
}
