package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type cpioEntry struct {
	Name       string
	Mode       uint32
	Data       string
	RMaj, RMin uint32
}

// readCPIO parses a newc archive (test oracle, independent of the writer).
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:6+8*i+8], 16, 32)
			if err != nil {
				t.Fatalf("bad field %d: %v", i, err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, nameSz := field(1), int(field(6)), field(9), field(10), int(field(11))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+nameSz-1])
		if b[nameStart+nameSz-1] != 0 {
			t.Fatalf("name %q not NUL terminated", name)
		}
		dataStart := align(nameStart + nameSz)
		data := string(b[dataStart : dataStart+size])
		off = align(dataStart + size)
		if name == "TRAILER!!!" {
			if len(b)%512 != 0 {
				t.Errorf("archive length %d not padded to 512", len(b))
			}
			return out
		}
		out = append(out, cpioEntry{Name: name, Mode: mode, Data: data, RMaj: rmaj, RMin: rmin})
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("/dev", 0o755))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.File("init", 0o755, []byte("abcde"))) // odd size: needs padding
	must(w.Symlink("sbin", "bin"))
	must(w.File("empty", 0o644, nil))
	must(w.Close())
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{Name: "dev", Mode: 0o040755},
		{Name: "dev/console", Mode: 0o020600, RMaj: 5, RMin: 1},
		{Name: "init", Mode: 0o100755, Data: "abcde"},
		{Name: "sbin", Mode: 0o120777, Data: "bin"},
		{Name: "empty", Mode: 0o100644},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
	if err := w.File("", 0o644, nil); err == nil {
		t.Errorf("empty name accepted")
	}
}

// TestCPIOWriterWithCpioTool checks the archive with cpio(1) when present.
func TestCPIOWriterWithCpioTool(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	w.Dir("a", 0o755)
	w.File("a/b", 0o644, []byte("hello"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-it")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "a/b") {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "rik-init")
	os.WriteFile(initBin, []byte("#init"), 0o755)
	mods := filepath.Join(dir, "lib/modules/6.1/kernel/drivers")
	os.MkdirAll(mods, 0o755)
	os.WriteFile(filepath.Join(mods, "virtio_net.ko"), []byte("plain"), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("gzipped"))
	zw.Close()
	os.WriteFile(filepath.Join(mods, "virtio-blk.ko.gz"), gz.Bytes(), 0o644)
	os.WriteFile(filepath.Join(mods, "unrelated.ko"), []byte("x"), 0o644)

	var out bytes.Buffer
	names, err := Build(context.Background(), &out, Options{
		Init: initBin, ModulesDir: filepath.Join(dir, "lib/modules/6.1"),
		Modules: []string{"virtio_blk", "missing_builtin", "virtio_net"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"virtio_blk", "virtio_net"}, names); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	zr, err := gzip.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	files := map[string]string{}
	for _, e := range readCPIO(t, raw) {
		files[e.Name] = e.Data
		if e.Name == "init" && e.Mode != 0o100755 {
			t.Errorf("init mode %o", e.Mode)
		}
	}
	for name, want := range map[string]string{
		"init":                      "#init",
		"lib/modules/virtio_blk.ko": "gzipped",
		"lib/modules/virtio_net.ko": "plain",
		"rik/modules.order":         "virtio_blk.ko\nvirtio_net.ko\n",
		"dev/console":               "",
	} {
		if got, ok := files[name]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := files["lib/modules/unrelated.ko"]; ok {
		t.Errorf("unwanted module included")
	}
}

func TestBuildXZModule(t *testing.T) {
	xz, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("xz not installed")
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	os.WriteFile(initBin, []byte("i"), 0o755)
	ko := filepath.Join(dir, "evdev.ko")
	os.WriteFile(ko, []byte("module-bytes"), 0o644)
	if out, err := exec.Command(xz, ko).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v %s", err, out)
	}
	var out bytes.Buffer
	if _, err := Build(context.Background(), &out, Options{Init: initBin, ModulesDir: dir, Modules: []string{"evdev"}}); err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(&out)
	raw, _ := io.ReadAll(zr)
	for _, e := range readCPIO(t, raw) {
		if e.Name == "lib/modules/evdev.ko" {
			if e.Data != "module-bytes" {
				t.Fatalf("evdev.ko = %q", e.Data)
			}
			return
		}
	}
	t.Fatal("evdev.ko missing")
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"virtio_net.ko": "virtio_net", "virtio-blk.ko.xz": "virtio_blk", "a.ko.zst": "a", "b.ko.gz": "b",
		"modules.dep": "", ".ko": "", "x.txt": "",
	} {
		got, ok := moduleName(in)
		if got != want || ok != (want != "") {
			t.Errorf("moduleName(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestBuildMissingInit(t *testing.T) {
	_, err := Build(context.Background(), io.Discard, Options{Init: "/nonexistent/rik-init"})
	if err == nil || !strings.Contains(err.Error(), "reading init") {
		t.Fatalf("err = %v", err)
	}
}
