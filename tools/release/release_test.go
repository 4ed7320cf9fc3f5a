package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.0":                  "1.2.0",
		"1.2.0":                   "1.2.0",
		"v1.2.0-rc.1":             "1.2.0~rc.1",
		"v1.2.0-rc1":              "1.2.0~rc1",
		"v1.2.0-3-gabc1234":       "1.2.0+git3.gabc1234",
		"v1.2.0-3-gabc1234-dirty": "1.2.0+git3.gabc1234.dirty",
		"9136712":                 "0.0.0+git9136712",
		"9136712-dirty":           "0.0.0+git9136712.dirty",
		"abcdef0":                 "0.0.0+gitabcdef0",
		"dev":                     "0.0.0+gitdev",
		"v2_x/../y":               "0.0.0+git2.x.y",
		"":                        "0.0.0",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// repoRoot is the repository the tool packs files of.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "packaging", "systemd")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// Every file the release lists is in the repository.
func TestSourcesExist(t *testing.T) {
	root := repoRoot(t)
	for _, f := range append(debFiles(), tarFiles()...) {
		if f.binary {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, f.src)); err != nil {
			t.Errorf("%s: %v", f.dst, err)
		}
	}
	for _, s := range []string{scripts.postinst, scripts.prerm, scripts.postrm} {
		fi, err := os.Stat(filepath.Join(root, s))
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("maintainer script %s: %v (mode %v)", s, err, fi.Mode())
		}
	}
}

// A release from stand-in binaries: an archive per architecture with
// everything under one directory, a package, and checksums that match;
// run twice, byte for byte the same.
func TestRunReproducible(t *testing.T) {
	root := repoRoot(t)
	bins := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		dir := filepath.Join(bins, arch)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range binaries {
			if err := os.WriteFile(filepath.Join(dir, b.name), []byte(b.name+" for "+arch), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	release := func() (string, map[string][]byte) {
		dist := t.TempDir()
		o := options{root: root, dist: dist, version: "v1.2.0-3-gabc1234", bins: filepath.Join(bins, "{arch}"),
			arches: []string{"amd64", "arm64"}, mtime: time.Unix(1700000000, 0).UTC()}
		var out bytes.Buffer
		if err := run(o, &out); err != nil {
			t.Fatalf("run: %v", err)
		}
		got := map[string][]byte{}
		ents, _ := os.ReadDir(dist)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dist, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			got[e.Name()] = b
		}
		return dist, got
	}
	_, first := release()
	_, second := release()
	want := []string{"SHA256SUMS",
		"rik_1.2.0+git3.gabc1234_amd64.deb", "rik_1.2.0+git3.gabc1234_arm64.deb",
		"rik_v1.2.0-3-gabc1234_linux_amd64.tar.gz", "rik_v1.2.0-3-gabc1234_linux_arm64.tar.gz"}
	if len(first) != len(want) {
		t.Errorf("dist holds %d files, want %v", len(first), want)
	}
	for _, name := range want {
		if len(first[name]) == 0 {
			t.Errorf("%s missing or empty", name)
		}
		if !bytes.Equal(first[name], second[name]) {
			t.Errorf("%s differs between two runs", name)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(first["SHA256SUMS"])), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		h := sha256.Sum256(first[name])
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
	}
	checkArchive(t, first["rik_v1.2.0-3-gabc1234_linux_arm64.tar.gz"], "rik_v1.2.0-3-gabc1234_linux_arm64")
}

func checkArchive(t *testing.T, tgz []byte, top string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	seen := map[string]*tar.Header{}
	var controller []byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hdr.Name, top+"/") {
			t.Errorf("%s is outside %s/", hdr.Name, top)
		}
		seen[strings.TrimPrefix(hdr.Name, top+"/")] = hdr
		if hdr.Name == top+"/bin/controller" {
			controller, _ = io.ReadAll(tr)
		}
	}
	for name, mode := range map[string]int64{
		"bin/controller": 0o755, "bin/rik-init": 0o755, "LICENSE": 0o644, "docs/operations.md": 0o644,
		"packaging/systemd/riklet.service": 0o644, "packaging/etc/controller.yaml": 0o644,
		"packaging/scripts/postinst": 0o755, "test/kernel/fetch.sh": 0o755,
	} {
		hdr := seen[name]
		if hdr == nil || hdr.Mode != mode || hdr.Uid != 0 {
			t.Errorf("archive entry %s: %+v, want mode %o", name, hdr, mode)
		}
	}
	if seen["bin/"] == nil || seen["bin/"].Typeflag != tar.TypeDir {
		t.Errorf("no bin/ directory entry")
	}
	if string(controller) != "controller for arm64" {
		t.Errorf("bin/controller holds %q", controller)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-version", "v1", "-arch", "amd64,arm64", "-dist", "/d", "-mtime", "1700000000"})
	if err != nil || len(o.arches) != 2 || o.bins != "/d/linux-{arch}" || o.mtime.Unix() != 1700000000 {
		t.Errorf("parseOptions = %+v, %v", o, err)
	}
	for _, args := range [][]string{{}, {"-version", "v1", "-arch", ""}, {"-version", "v1", "-mtime", "x"}, {"-version", "v1", "extra"}} {
		if _, err := parseOptions(args); err == nil {
			t.Errorf("parseOptions(%q) accepted", args)
		}
	}
}
