package tarsafe

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzApply feeds Apply arbitrary bytes, as one tree (mode&1 == 0) or, as
// root, as a layer over a Debian-like base (mode&1 == 1): it must not
// panic, nor change anything outside the root, nor change the base. With
// mode&2, header checksums are fixed first, so that mutated headers reach
// the extractor instead of the tar reader's checksum test.
func FuzzApply(f *testing.F) {
	h := newHost(f)
	for _, seed := range fuzzSeeds(f, h) {
		for mode := range byte(4) {
			f.Add(mode, seed)
		}
	}
	asRoot := os.Geteuid() == 0 && !testing.Short() // the root modes need the host: not with -short
	var base, baseSnap string
	if asRoot {
		base = filepath.Join(f.TempDir(), "base")
		if err := os.Mkdir(base, 0o755); err != nil {
			f.Fatal(err)
		}
		if _, err := apply(f, base, debianBase(f), Options{Whiteouts: WhiteoutOverlay}); err != nil {
			f.Fatal(err)
		}
		baseSnap = snapshot(f, base)
	}
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		dir := t.TempDir()
		if !asRoot { // entries may leave directories the user cannot remove
			t.Cleanup(func() { chmodTree(dir) })
		}
		opts := Options{MaxBytes: 1 << 20, MaxEntries: 256}
		if mode&1 == 1 && asRoot {
			opts.Whiteouts, opts.Lower = WhiteoutOverlay, []string{base}
		}
		if mode&2 != 0 {
			data = fixChecksums(data)
		}
		_, _ = Apply(context.Background(), dir, bytes.NewReader(data), opts)
		h.check(t)
		if asRoot {
			if s := snapshot(t, base); s != baseSnap {
				t.Fatalf("base layer changed:\n%s", s)
			}
		}
	})
}

// fixChecksums rewrites the checksum of every header block of a tar
// archive, walking headers by their size fields.
func fixChecksums(b []byte) []byte {
	b = bytes.Clone(b)
	for off := 0; off+512 <= len(b); {
		h := b[off : off+512]
		off += 512
		if bytes.Count(h, []byte{0}) == len(h) {
			continue
		}
		copy(h[148:156], "        ")
		sum := 0
		for _, c := range h {
			sum += int(c)
		}
		copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
		size, err := strconv.ParseInt(strings.Trim(string(h[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 || size > int64(len(b)) {
			continue
		}
		off += int((size + 511) / 512 * 512)
	}
	return b
}

func chmodTree(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}

// fuzzSeeds are archives of the tests: attacks on the host h, whiteouts,
// links, a layer over the base.
func fuzzSeeds(t testing.TB, h *host) [][]byte {
	dir, sym, link := byte(tar.TypeDir), byte(tar.TypeSymlink), byte(tar.TypeLink)
	return [][]byte{
		tarOf(t, ent{name: "d/", typ: dir, mode: 0o777}, ent{name: "d", typ: sym, link: h.file}),
		tarOf(t, ent{name: "d/", typ: dir}, ent{name: "d", typ: sym, link: h.dir}, ent{name: "d/x", body: "x"}, ent{name: "d/.wh..wh..opq"}),
		tarOf(t, ent{name: "up", typ: sym, link: "../../.."}, ent{name: "up/evil", body: "x"}, ent{name: "up/.wh.host"}),
		tarOf(t, ent{name: "hd", typ: sym, link: filepath.Dir(h.file)}, ent{name: "h", typ: link, link: "hd/secret"}),
		tarOf(t, ent{name: "a", typ: sym, link: "b"}, ent{name: "b", typ: sym, link: "/a/../b/c"}, ent{name: "a/x", body: "x"}),
		tarOf(t, ent{name: "bin/tool", body: "tool", xattrs: map[string]string{"security.capability": capNetRaw}},
			ent{name: "bin/ls.hard", typ: link, link: "bin/ls"}, ent{name: "bin/.wh.dash"}, ent{name: "usr/.wh..wh..opq"},
			ent{name: ".wh.lib"}, ent{name: "lib/", typ: dir}, ent{name: "run/p", typ: tar.TypeFifo}),
		tarOf(t, ent{name: "a/f", body: "f"}, ent{name: "a/.wh.f"}, ent{name: "a", body: "file"}, ent{name: "a/", typ: dir}),
		debianBase(t),
	}
}
