package riklet

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
)

// tlsCluster is a real scheduler serving TLS with a test CA.
type tlsCluster struct {
	ca      *pki.CA
	dir     string // CA directory
	workers string // address for riklets
	ctrl    controllerpb.ControllerClient
}

func startTLSScheduler(t *testing.T, nodeTTL time.Duration) *tlsCluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.Init(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	workers, controllers := schedtest.Start(t, scheduler.Config{CADir: dir, NodeCertTTL: nodeTTL,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "ctrl"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(pki.Pair{CertPEM: cert, KeyPEM: key}, ca.CertPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(controllers, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &tlsCluster{ca: ca, dir: dir, workers: workers, ctrl: controllerpb.NewControllerClient(cc)}
}

// ready reports whether node name is listed Ready.
func (c *tlsCluster) ready(name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	nodes, err := c.ctrl.ListNodes(ctx, &emptypb.Empty{})
	if err != nil {
		return false
	}
	for _, n := range nodes.GetNodes() {
		if n.GetName() == name && n.GetStatus() == "Ready" {
			return true
		}
	}
	return false
}

func (c *tlsCluster) token(t *testing.T, ttl time.Duration) string {
	t.Helper()
	tok, _, err := pki.CreateToken(c.dir, ttl, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// logBuffer keeps a riklet's log lines, to count events.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(string(p))
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// secureConfig is a riklet config joining c.
func secureConfig(t *testing.T, c *tlsCluster, stateDir string, logs *logBuffer) Config {
	cfg, _ := testConfig(t, &fakeScheduler{addr: c.workers}, stateDir)
	cfg.Insecure = false
	cfg.CACertHash = c.ca.Hash()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

func readCert(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// A node joins with a token and the CA's hash, keeps its key to itself,
// renews its certificate without dropping its registration, and starts
// again later with the saved certificate and no token.
func TestJoinRenewRestart(t *testing.T) {
	c := startTLSScheduler(t, 6*time.Second)
	state := t.TempDir()
	logs := &logBuffer{t: t}
	cfg := secureConfig(t, c, state, logs)
	cfg.JoinToken = c.token(t, time.Hour)
	n := startNode(t, cfg, nil)
	eventually(t, func() bool { return c.ready("node-1") }, func() string { return "node-1 not Ready" })

	pkiDir := filepath.Join(state, "pki")
	fi, err := os.Stat(filepath.Join(pkiDir, "node.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	first := readCert(t, pkiDir)
	eventually(t, func() bool { return readCert(t, pkiDir) != first }, func() string { return "certificate not renewed" })
	if got := logs.count("registered with scheduler"); got != 1 {
		t.Fatalf("registered %d times across the renewal, want once", got)
	}
	n.stop(t)

	cfg.JoinToken = "" // the saved certificate is enough
	logs2 := &logBuffer{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(logs2, nil))
	startNode(t, cfg, nil)
	eventually(t, func() bool { return logs2.count("registered with scheduler") == 1 }, func() string { return "restarted node not registered" })
	if logs2.count("joined the cluster") != 0 {
		t.Fatal("restarted node joined again")
	}
}

func TestStartRefusals(t *testing.T) {
	c := startTLSScheduler(t, time.Hour)
	other, err := pki.Init(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no certificate, no token", func(*Config) {}, "--join-token"},
		{"token without hash", func(cfg *Config) { cfg.JoinToken, cfg.CACertHash = c.token(t, time.Hour), "" }, "--ca-cert-hash"},
		{"malformed hash", func(cfg *Config) { cfg.JoinToken, cfg.CACertHash = "a.b", "sha256:xyz" }, "--ca-cert-hash"},
		{"refused token", func(cfg *Config) { cfg.JoinToken = "abcdef.0123456789abcdef" }, "invalid or expired join token"},
		{"expired token", func(cfg *Config) { cfg.JoinToken = c.token(t, time.Nanosecond) }, "invalid or expired join token"},
		{"another CA's hash", func(cfg *Config) { cfg.JoinToken, cfg.CACertHash = c.token(t, time.Hour), other.Hash() }, "does not match --ca-cert-hash"},
		{"certificate for another name", func(cfg *Config) {
			cert, key, _ := c.ca.Issue(pki.Template{Role: pki.RoleNode, Name: "someone-else"})
			dir := filepath.Join(cfg.StateDir, "pki")
			if err := pki.WritePair(dir, "node", pki.Pair{CertPEM: cert, KeyPEM: key}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "ca.crt"), c.ca.CertPEM, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "remove node.crt and node.key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := secureConfig(t, c, t.TempDir(), &logBuffer{t: t})
			tc.edit(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error saying %q", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatal("Run waited for its context instead of failing")
			}
			if _, err := os.Stat(filepath.Join(cfg.StateDir, "pki", "node.crt")); tc.name != "certificate for another name" && err == nil {
				t.Fatal("a refused join left a certificate")
			}
		})
	}
}
