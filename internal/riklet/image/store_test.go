package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	gcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/testutil/ociimage"
	"golang.org/x/sys/unix"
)

func TestPullCachesByDigest(t *testing.T) {
	reg, ref := ociimage.BusyboxRegistry(t)
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var msgs []string
	img, err := s.Pull(context.Background(), ref, func(m string) { mu.Lock(); msgs = append(msgs, m); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(img.Digest, "sha256:") || len(img.Layers) != 1 {
		t.Fatalf("image = %+v", img)
	}
	if img.Config.Cmd[0] != "sh" || !strings.HasPrefix(img.Config.Env[0], "PATH=") {
		t.Errorf("config = %+v", img.Config)
	}
	if fi, err := os.Stat(filepath.Join(img.Layers[0], "bin/busybox")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("busybox not unpacked: %v", err)
	}
	if len(msgs) < 2 || !strings.Contains(strings.Join(msgs, "\n"), "layer 1/1") {
		t.Errorf("progress = %q", msgs)
	}

	// Cached: no request at all, same result.
	before := reg.Requests()
	again, err := s.Pull(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Requests() != before {
		t.Errorf("second pull made %d requests", reg.Requests()-before)
	}
	if again.Digest != img.Digest || again.Layers[0] != img.Layers[0] {
		t.Errorf("second pull = %+v, want %+v", again, img)
	}

	// A reopened store on the same directory still has it.
	s2, err := Open(s.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetDown(true)
	if _, err := s2.Pull(context.Background(), ref, nil); err != nil {
		t.Errorf("pull from reopened store with the registry down: %v", err)
	}
	reg.SetDown(false)

	// By digest: the layer directory is shared, not unpacked again.
	byDigest := reg.Host + "/busybox@" + img.Digest
	d, err := s.Pull(context.Background(), byDigest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest != img.Digest || d.Layers[0] != img.Layers[0] {
		t.Errorf("by digest = %+v", d)
	}
	layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers"))
	if len(layers) != 1 {
		t.Errorf("%d layer dirs, want 1 shared", len(layers))
	}
}

func TestPullMultiLayer(t *testing.T) {
	reg := ociimage.NewRegistry(t)
	l1, _ := ociimage.Layer([]ociimage.File{{Name: "a", Body: []byte("1")}, {Name: "b", Body: []byte("1")}})
	l2, _ := ociimage.Layer([]ociimage.File{{Name: ".wh.a"}, {Name: "b", Body: []byte("2")}, {Name: "c", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}})
	img, err := mutate.AppendLayers(empty.Image, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "lib/multi:v2", img)
	s, _ := Open(t.TempDir(), Options{Insecure: []string{reg.Host}})
	got, err := s.Pull(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != 2 {
		t.Fatalf("layers = %v", got.Layers)
	}
	out := filepath.Join(t.TempDir(), "root")
	if err := Flatten(got.Layers, out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(out, "a")); err == nil {
		t.Error("a not whited out")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "b")); string(b) != "2" {
		t.Errorf("b = %q", b)
	}
}

func TestPullErrors(t *testing.T) {
	reg := ociimage.NewRegistry(t)
	s, _ := Open(t.TempDir(), Options{})
	ctx := context.Background()
	tests := []struct {
		ref  string
		want error
		text string
	}{
		{"", ErrBadReference, "empty"},
		{"UPPER/case:x", ErrBadReference, "UPPER"},
		{"busybox:bad tag", ErrBadReference, "bad tag"},
		{reg.Host + "/missing:latest", ErrPull, "missing"},
		{"127.0.0.1:1/busybox:latest", ErrPull, "127.0.0.1:1"},
	}
	for _, tt := range tests {
		_, err := s.Pull(ctx, tt.ref, nil)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("Pull(%q) = %v, want %v mentioning %q", tt.ref, err, tt.want, tt.text)
		}
	}
}

func TestParseReferenceDefaults(t *testing.T) {
	s, _ := Open(t.TempDir(), Options{Insecure: []string{"reg.local:5000"}})
	tests := []struct{ in, name, scheme string }{
		{"busybox", "index.docker.io/library/busybox:latest", "https"},
		{"reg.local:5000/a/b:1", "reg.local:5000/a/b:1", "http"},
		{"other.local:5000/a/b", "other.local:5000/a/b:latest", "https"},
	}
	for _, tt := range tests {
		r, err := s.ParseReference(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Name() != tt.name || r.Context().Scheme() != tt.scheme {
			t.Errorf("%s -> %s %s, want %s %s", tt.in, r.Name(), r.Context().Scheme(), tt.name, tt.scheme)
		}
	}
}

func TestGC(t *testing.T) {
	_, ref := ociimage.BusyboxRegistry(t)
	s, _ := Open(t.TempDir(), Options{})
	img, err := s.Pull(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.GC(context.Background(), []string{img.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(img.Digest); err != nil {
		t.Fatalf("kept image gone: %v", err)
	}
	if err := s.GC(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Layers[0]); err == nil {
		t.Error("layer of an unkept image not removed")
	}
}

func TestPullWithDockerConfigCredentials(t *testing.T) {
	reg := ociimage.NewRegistryAuth(t, "rik", "s3cret")
	img, err := ociimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "private/busybox:1", img)

	// No credentials: refused.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	s, _ := Open(t.TempDir(), Options{})
	if _, err := s.Pull(context.Background(), ref, nil); !errors.Is(err, ErrPull) {
		t.Fatalf("pull without credentials = %v, want ErrPull", err)
	}
	// Credentials from $DOCKER_CONFIG/config.json.
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte("rik:s3cret"))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	if _, err := s.Pull(context.Background(), ref, nil); err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
}

func TestConcurrentPulls(t *testing.T) {
	_, ref := ociimage.BusyboxRegistry(t)
	s, _ := Open(t.TempDir(), Options{})
	var wg sync.WaitGroup
	digests := make([]string, 8)
	errs := make([]error, 8)
	for i := range digests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := s.Pull(context.Background(), ref, nil)
			digests[i], errs[i] = img.Digest, err
		}()
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Errorf("pull %d: %s, %v", i, digests[i], errs[i])
		}
	}
	tmp, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
	layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers"))
	if len(tmp) != 0 || len(layers) != 1 {
		t.Errorf("tmp %d entries, layers %d; want 0, 1", len(tmp), len(layers))
	}
}

// verifyingLayer serves a layer the way ggcr does for a remote blob: the
// digest check fails only once the stream is read to its end.
type verifyingLayer struct {
	v1.Layer
	body []byte
}

func (l verifyingLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(l.body), iotest.ErrReader(errors.New("digest mismatch")))), nil
}

func TestUnpackChecksDigestAtEOF(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(tarOf(t, []entry{{name: "evil", body: "tampered"}}))
	body = append(body, make([]byte, 4096)...) // record padding after the end-of-archive blocks
	diffID := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	_, err = s.unpack(context.Background(), verifyingLayer{body: body}, nil, diffID, diffID)
	if err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("unpack = %v, want the digest error", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "layers", diffID.Hex)); err == nil {
		t.Fatal("a layer that failed its digest check was cached")
	}
}

// A registry (or anyone on the path) serving other bytes than the layer's
// digest names is refused, and nothing of it is cached.
func TestPullRefusesTamperedLayer(t *testing.T) {
	// Layers padded to tar's record size, as GNU tar writes them: a tar
	// reader stops before the padding.
	padded := func(body string) v1.Layer {
		b, _ := io.ReadAll(tarOf(t, []entry{{name: "file", body: body}}))
		b = append(b, make([]byte, 10240)...)
		// Stored, not compressed: both blobs have the same size.
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithCompressionLevel(gzip.NoCompression))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	good, evil := padded("good"), padded("evil")
	goodDigest, _ := good.Digest()
	evilDigest, _ := evil.Digest()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+goodDigest.String()) {
			req.URL.Path = strings.TrimSuffix(req.URL.Path, goodDigest.String()) + evilDigest.String()
		}
		h.ServeHTTP(w, req)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for name, l := range map[string]v1.Layer{"good": good, "evil": evil} {
		img, err := mutate.AppendLayers(empty.Image, l)
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := gcrname.ParseReference(host + "/lib/" + name + ":1")
		if err := remote.Write(tag, img); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := Open(t.TempDir(), Options{})
	if img, err := s.Pull(context.Background(), host+"/lib/good:1", nil); !errors.Is(err, ErrPull) {
		t.Fatalf("Pull of a tampered layer = %+v, %v; want ErrPull", img, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "layers")); len(ents) != 0 {
		t.Errorf("tampered layer cached: %v", ents)
	}
}

func layerOf(t *testing.T, entries []entry) v1.Layer {
	t.Helper()
	b, _ := io.ReadAll(tarOf(t, entries))
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Layers are unpacked over the ones below them (a merged-/usr base keeps
// its symlinks, hard links and capabilities reach into it), so the same
// layer over another base is another directory: the cache is keyed by
// chain id.
func TestPullUnpacksLayersOverTheirBase(t *testing.T) {
	testutil.RequireRoot(t)
	reg := ociimage.NewRegistry(t)
	merged := layerOf(t, []entry{
		{name: "usr/bin/ls", body: "ls", mode: 0o755},
		{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
	})
	split := layerOf(t, []entry{{name: "bin/ls", body: "ls", mode: 0o755}})
	top := layerOf(t, []entry{
		{name: "bin/tool", body: "tool", mode: 0o755},
		{name: "bin/ping", body: "ping", mode: 0o755, xattrs: map[string]string{"security.capability": capNetRaw}},
		{name: "bin/ls.hard", typ: tar.TypeLink, link: "bin/ls"},
	})
	s, _ := Open(t.TempDir(), Options{Insecure: []string{reg.Host}})
	pull := func(name string, base v1.Layer) Image {
		img, err := mutate.AppendLayers(empty.Image, base, top)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Pull(context.Background(), reg.Push(t, name, img), nil)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	a, b := pull("lib/merged:1", merged), pull("lib/split:1", split)
	if a.DiffIDs[1] != b.DiffIDs[1] || a.Layers[1] == b.Layers[1] {
		t.Errorf("the same top layer over two bases: diff ids %s %s, dirs %s %s; want one diff id, two dirs",
			a.DiffIDs[1], b.DiffIDs[1], a.Layers[1], b.Layers[1])
	}
	if _, err := os.Lstat(filepath.Join(a.Layers[1], "bin")); err == nil {
		t.Error("over the merged base, the top layer has its own bin: it would hide the symlink")
	}
	for img, bin := range map[*Image]string{&a: "usr/bin", &b: "bin"} {
		out := filepath.Join(t.TempDir(), "rootfs")
		if err := Flatten(img.Layers, out); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"tool", "ping", "ls.hard", "ls"} {
			if _, err := os.Lstat(filepath.Join(out, bin, f)); err != nil {
				t.Errorf("%s: %s/%s: %v", img.Ref, bin, f, err)
			}
		}
		if c, err := unix.Lgetxattr(filepath.Join(out, bin, "ping"), "security.capability", make([]byte, 64)); err != nil || c != len(capNetRaw) {
			t.Errorf("%s: ping capability = %d, %v", img.Ref, c, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(a.Layers[0], "bin")); err != nil || l != "usr/bin" {
		t.Errorf("merged base bin = %q, %v", l, err)
	}
	// A reopened store finds both by chain id, and GC keeps what they use.
	if err := s.GC(context.Background(), []string{a.Digest, b.Digest}); err != nil {
		t.Fatal(err)
	}
	for _, img := range []Image{a, b} {
		got, err := s.Get(img.Digest)
		if err != nil || !slices.Equal(got.Layers, img.Layers) {
			t.Errorf("Get(%s) = %v, %v; want layers %v", img.Ref, got.Layers, err, img.Layers)
		}
	}
}
