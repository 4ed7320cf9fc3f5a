package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchLayer is a layer of 100 directories of 40 files of 8 KiB and a
// symlink each (32 MiB of files), written under bin/, which a merged-/usr
// base turns into usr/bin.
func benchLayer(b *testing.B) ([]byte, int64) {
	var ents []ent
	var size int64
	body := strings.Repeat("x", 8<<10)
	for d := range 100 {
		dir := fmt.Sprintf("bin/d%03d/", d)
		ents = append(ents, ent{name: dir, typ: tar.TypeDir})
		for f := range 40 {
			ents = append(ents, ent{name: fmt.Sprintf("%sf%02d", dir, f), body: body})
			size += int64(len(body))
		}
		ents = append(ents, ent{name: dir + "link", typ: tar.TypeSymlink, link: "f00"})
	}
	return tarOf(b, ents...), size
}

// BenchmarkApply measures unpacking throughput (file bytes per second):
// as one tree, and as a layer over a merged-/usr base (root only).
func BenchmarkApply(b *testing.B) {
	layer, size := benchLayer(b)
	b.Run("tree", func(b *testing.B) { benchApply(b, layer, size, Options{}) })
	b.Run("over-base", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("layers need root")
		}
		base := filepath.Join(b.TempDir(), "base")
		if err := os.Mkdir(base, 0o755); err != nil {
			b.Fatal(err)
		}
		if _, err := apply(b, base, debianBase(b), Options{Whiteouts: WhiteoutOverlay}); err != nil {
			b.Fatal(err)
		}
		benchApply(b, layer, size, Options{Lower: []string{base}, Whiteouts: WhiteoutOverlay})
	})
}

func benchApply(b *testing.B, layer []byte, size int64, opts Options) {
	b.SetBytes(size)
	tmp := b.TempDir()
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(tmp, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if _, err := Apply(context.Background(), dir, bytes.NewReader(layer), opts); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
