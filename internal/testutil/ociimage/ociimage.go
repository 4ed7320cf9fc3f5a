// Package ociimage builds small OCI images in-process (busybox from the
// host's busybox-static) and serves them from an in-process registry on
// 127.0.0.1, so tests pull real images without the internet.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Applets linked to busybox in the image.
var Applets = []string{"sh", "ls", "cat", "echo", "env", "sleep", "httpd", "wget", "id", "ip", "ifconfig", "true", "false", "mkdir", "printf", "grep", "ps", "hostname", "pwd"}

// File is one entry of a layer built by Layer.
type File struct {
	Name     string
	Body     []byte
	Mode     int64
	Typeflag byte // default tar.TypeReg
	Linkname string
	Uid, Gid int
}

// Layer builds an uncompressed tar layer from files.
func Layer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Typeflag: f.Typeflag, Linkname: f.Linkname, Uid: f.Uid, Gid: f.Gid, Size: int64(len(f.Body))}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.Name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(f.Body); err != nil {
				return nil, fmt.Errorf("writing %s: %w", f.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// Busybox builds an image with /bin/busybox, its applets as symlinks,
// /etc/passwd and /etc/group, /tmp and /www/index.html ("hello from rik\n").
// Its config runs "sh" with PATH set.
func Busybox() (v1.Image, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	files := []File{
		{Name: "bin/", Typeflag: tar.TypeDir},
		{Name: "bin/busybox", Body: bin, Mode: 0o755},
		{Name: "etc/", Typeflag: tar.TypeDir},
		{Name: "etc/passwd", Body: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n")},
		{Name: "etc/group", Body: []byte("root:x:0:\nnogroup:x:65534:\napp:x:1000:\n")},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "root/", Typeflag: tar.TypeDir, Mode: 0o700},
		{Name: "www/", Typeflag: tar.TypeDir},
		{Name: "www/index.html", Body: []byte("hello from rik\n")},
	}
	for _, a := range Applets {
		files = append(files, File{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	layer, err := Layer(files)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = "amd64"
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// Registry is an in-process OCI registry on 127.0.0.1.
type Registry struct {
	Host       string // "127.0.0.1:port"
	user, pass string
	srv        *httptest.Server
	requests   atomic.Int64
	down       atomic.Bool
}

// NewRegistry starts a registry, stopped when the test ends.
func NewRegistry(t testing.TB) *Registry { return NewRegistryAuth(t, "", "") }

// NewRegistryAuth starts a registry that wants HTTP basic auth with user
// and pass (none if user is empty).
func NewRegistryAuth(t testing.TB, user, pass string) *Registry {
	t.Helper()
	r := &Registry{user: user, pass: pass}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if r.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="rik-test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// Requests is how many HTTP requests the registry has served.
func (r *Registry) Requests() int64 { return r.requests.Load() }

// SetDown makes every request fail with 503 (true) or work again.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// Push pushes img as repo:tag ("busybox:1") and returns its full reference.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref := r.Host + "/" + repoTag
	tag, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("parsing %s: %v", ref, err)
	}
	var opts []remote.Option
	if r.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

// BusyboxRegistry starts a registry holding the busybox image as busybox:latest and
// returns the registry and the image reference. It fails the test if
// /bin/busybox is missing.
func BusyboxRegistry(t testing.TB) (*Registry, string) {
	t.Helper()
	img, err := Busybox()
	if err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(t)
	return r, r.Push(t, "busybox:latest", img)
}
