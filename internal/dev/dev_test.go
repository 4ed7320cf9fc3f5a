package dev

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var apiLine = regexp.MustCompile(`API: +(https?://\S+)`)

// runDev runs a dev cluster on free loopback ports until it serves, then
// stops it and returns Run's error.
func runDev(t *testing.T, dataDir string, temporary bool) error {
	t.Helper()
	return runDevConfig(t, Config{DataDir: dataDir, Temporary: temporary})
}

// runDevConfig is runDev with more of the configuration.
func runDevConfig(t *testing.T, cfg Config) error {
	t.Helper()
	return withDev(t, cfg, nil, nil)
}

// runDevUntil runs a dev cluster until it serves and ready holds, then
// stops it and returns Run's error.
func runDevUntil(t *testing.T, cfg Config, ready func(url string, client *http.Client) bool) error {
	t.Helper()
	return withDev(t, cfg, ready, nil)
}

// withDev runs a dev cluster on free loopback ports until it serves and
// ready (if set) holds, calls fn (if set) with the API's URL, a client
// trusting its CA and carrying the admin token, and the welcome text, then
// stops it and returns Run's error.
func withDev(t *testing.T, cfg Config, ready func(url string, client *http.Client) bool, fn func(url string, client *http.Client, welcome string)) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	cfg.Addr, cfg.WorkersAddr, cfg.ControllersAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Hostname, cfg.Logger, cfg.Out = "dev-node", slog.New(slog.DiscardHandler), out
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	var url string
	client := &http.Client{Timeout: 10 * time.Second}
	testutil.Eventually(t, 10*time.Second, func() bool {
		m := apiLine.FindStringSubmatch(out.String())
		if m == nil {
			return false
		}
		url = m[1]
		if strings.HasPrefix(url, "https://") && client.Transport == nil {
			caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "pki", "ca.crt"))
			if err != nil {
				t.Fatalf("the dev CA: %v", err)
			}
			pool, err := pki.Pool(caPEM)
			if err != nil {
				t.Fatal(err)
			}
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		}
		resp, err := client.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && (ready == nil || ready(url, client))
	}, func() string { return "dev cluster not serving: " + out.String() })
	if fn != nil {
		fn(url, client, out.String())
	}
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// A temporary data directory is removed on exit (its instances stopped
// first); a given one is kept for the next run to adopt.
func TestTemporaryDataDirRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rik-dev-tmp")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := runDev(t, dir, true); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary data dir still there after exit: %v", err)
	}

	kept := t.TempDir()
	if err := runDev(t, kept, false); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(kept, "riklet")); err != nil {
		t.Errorf("given data dir lost its riklet state dir: %v", err)
	}
}

// Something still mounted under the temporary directory keeps it: removing
// it would reach into the mount.
func TestRemoveTemporaryKeepsMounts(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "riklet", "pods", "p1", "rootfs")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	file := filepath.Join(mnt, "keep")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeTemporary(dir); err == nil {
		t.Errorf("removeTemporary with a mount inside: no error")
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("file inside the mount: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := removeTemporary(dir); err != nil {
		t.Errorf("removeTemporary: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir still there: %v", err)
	}
}

// A temporary data directory is removed also when the cluster cannot start.
func TestTemporaryDataDirRemovedOnStartFailure(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := filepath.Join(t.TempDir(), "rik-dev-tmp")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Config{
		DataDir: dir, Addr: busy.Addr().String(), WorkersAddr: "127.0.0.1:0", ControllersAddr: "127.0.0.1:0",
		Hostname: "dev-node", Logger: slog.New(slog.DiscardHandler), Temporary: true,
	})
	if err == nil {
		t.Fatal("Run with the API port in use: no error")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary data dir left after a failed start: %v", err)
	}
}

// nodeReady reports whether the API lists node name Ready, asking with the
// admin token of the cluster in dir, if any.
func nodeReady(client *http.Client, dir, api, name string) bool {
	req, err := http.NewRequest(http.MethodGet, api+"/api/v0/nodes.list", nil)
	if err != nil {
		return false
	}
	if b, err := os.ReadFile(filepath.Join(dir, "admin.token")); err == nil {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var nodes []struct {
		Name  string `json:"name"`
		Value struct {
			Status string `json:"status"`
		} `json:"value"`
	}
	if json.NewDecoder(resp.Body).Decode(&nodes) != nil {
		return false
	}
	for _, n := range nodes {
		if n.Name == name && n.Value.Status == "Ready" {
			return true
		}
	}
	return false
}

// By default the dev cluster has its own CA: the controller reaches the
// scheduler over mutual TLS (it lists the node) and the riklet joined with
// a token that is revoked on exit. A second run reuses the CA and the
// node's certificate. --insecure makes no CA.
func TestDevClusterUsesTLS(t *testing.T) {
	dir := t.TempDir()
	for run := 0; run < 2; run++ {
		if err := runDevUntil(t, Config{DataDir: dir}, func(api string, c *http.Client) bool { return nodeReady(c, dir, api, "dev-node") }); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		ca, err := pki.Load(filepath.Join(dir, "pki"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "riklet", "pki", "node.crt"))
		if err != nil {
			t.Fatalf("run %d: the riklet has no node certificate: %v", run, err)
		}
		c, _ := pki.ParseCert(b)
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || c.Subject.CommonName != "dev-node" {
			t.Fatalf("run %d: node certificate %q: %v", run, c.Subject.CommonName, err)
		}
		if ts, err := pki.ListTokens(filepath.Join(dir, "pki")); err != nil || len(ts) != 0 {
			t.Fatalf("run %d: join tokens left after exit: %v %v", run, ts, err)
		}
	}

	plain := t.TempDir()
	if err := runDevUntil(t, Config{DataDir: plain, Insecure: true}, func(api string, c *http.Client) bool { return nodeReady(c, plain, api, "dev-node") }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(plain, "pki")); !os.IsNotExist(err) {
		t.Fatalf("--insecure made a CA: %v", err)
	}
}
