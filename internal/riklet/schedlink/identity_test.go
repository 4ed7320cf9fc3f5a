package schedlink

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

// logBuffer keeps a node's log lines, to count events.
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

func readSerial(t *testing.T, dir string) string {
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
	cfg := testConfig(t, c.workers)
	cfg.Insecure = false
	cfg.PKIDir = filepath.Join(cfg.StateDir, "pki")
	cfg.CACertHash = c.ca.Hash()
	if _, err := LoadIdentity(cfg); err == nil || !strings.Contains(err.Error(), "--join-token") {
		t.Fatalf("LoadIdentity without a certificate nor a token: %v, want a hint to join", err)
	}
	tok, _, err := pki.CreateToken(c.dir, time.Hour, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg.JoinToken = tok
	logs := &logBuffer{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	id, err := LoadIdentity(cfg)
	if err != nil || id != nil {
		t.Fatalf("LoadIdentity with a token = %v, %v; want none: the node joins", id, err)
	}
	r := startLink(t, cfg, nil, newFakeSupervisor(t), openLedger(t))
	eventually(t, func() bool { return c.ready("node-1") }, func() string { return "node-1 not Ready" })

	fi, err := os.Stat(filepath.Join(cfg.PKIDir, "node.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	first := readSerial(t, cfg.PKIDir)
	eventually(t, func() bool { return readSerial(t, cfg.PKIDir) != first }, func() string { return "certificate not renewed" })
	if got := logs.count("registered with scheduler"); got != 1 {
		t.Fatalf("registered %d times across the renewal, want once", got)
	}
	r.stop(t)

	cfg.JoinToken = "" // the saved certificate is enough
	logs2 := &logBuffer{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(logs2, nil))
	id, err = LoadIdentity(cfg)
	if err != nil || id == nil {
		t.Fatalf("LoadIdentity after joining = %v, %v", id, err)
	}
	startLink(t, cfg, id, newFakeSupervisor(t), openLedger(t))
	eventually(t, func() bool { return logs2.count("registered with scheduler") == 1 }, func() string { return "restarted node not registered" })
	if logs2.count("joined the cluster") != 0 {
		t.Fatal("restarted node joined again")
	}
}
