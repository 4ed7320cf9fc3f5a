package ui_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/dev"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/riklet"
	"github.com/rik-org/rik/internal/riklet/runtime"
	"github.com/rik-org/rik/internal/riklet/runtime/runtimetest"
	"github.com/rik-org/rik/internal/testutil"
	"github.com/rik-org/rik/internal/workload"
)

// followingFake is the fake runtime, whose followed logs go on with the
// lines the test sends until the follower goes away.
type followingFake struct {
	*runtimetest.Fake
	lines <-chan string
}

func (f followingFake) Logs(ctx context.Context, inst runtime.Instance, opts runtime.LogOptions, w io.Writer) error {
	if err := f.Fake.Logs(ctx, inst, opts, w); err != nil || !opts.Follow {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-f.lines:
			if _, err := io.WriteString(w, l); err != nil {
				return err
			}
		}
	}
}

// cluster is `rik dev` in this process, secured as by default (HTTPS, an
// admin token) or --insecure, with one node running the fake runtime.
type cluster struct {
	url   string
	token string
	api   *rikctl.Client
	lines chan<- string // more lines of followed logs
}

const nodeName = "node-ui"

func startCluster(t testing.TB, insecure bool) *cluster {
	t.Helper()
	dir := t.TempDir()
	lines := make(chan string)
	fa := &runtimetest.Factory{Kind: workload.KindPod, Dir: filepath.Join(dir, "fake")}
	factory := func(ctx context.Context, report runtime.Reporter) (runtime.Runtime, error) {
		rt, err := fa.New(ctx, report)
		if err != nil {
			return nil, err
		}
		return followingFake{Fake: rt.(*runtimetest.Fake), lines: lines}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dev.Run(ctx, dev.Config{DataDir: dir, Addr: "127.0.0.1:0", WorkersAddr: "127.0.0.1:0",
			ControllersAddr: "127.0.0.1:0", Hostname: nodeName, Runtimes: []riklet.RuntimeFactory{factory}, Insecure: insecure,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("rik dev returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("rik dev did not stop within 20s")
		}
	})

	var cfg rikctl.Config
	eventually(t, 20*time.Second, "rik dev writes its rikctl config", func() error {
		if _, err := os.Stat(filepath.Join(dir, "rikctl.yaml")); err != nil {
			return err
		}
		var err error
		cfg, err = rikctl.LoadConfig(filepath.Join(dir, "rikctl.yaml"))
		return err
	})
	c := &cluster{url: cfg.Cluster.Server, token: cfg.User.Token, lines: lines}
	hc := &http.Client{Timeout: 10 * time.Second}
	if !insecure {
		ca, err := rikctl.LoadCA(cfg.Cluster.CertificateAuthority)
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pki.Pool(ca)
		if err != nil {
			t.Fatal(err)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	c.api = rikctl.NewClient(c.url, hc).WithToken(c.token)
	eventually(t, 20*time.Second, "the node is Ready", func() error {
		ns, err := c.api.ListNodes(context.Background())
		if err != nil {
			return err
		}
		if len(ns) != 1 || ns[0].Value.Status != "Ready" {
			return fmt.Errorf("nodes: %+v", ns)
		}
		return nil
	})
	return c
}

// eventually waits until f returns nil, failing the test with what and
// f's last error after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	testutil.Eventually(t, timeout, func() bool { err = f(); return err == nil },
		func() string { return fmt.Sprintf("%s: %v", what, err) })
}
