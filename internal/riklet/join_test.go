package riklet

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/scheduler"
	"github.com/rik-org/rik/internal/scheduler/schedtest"
)

// A riklet that cannot join fails at once, saying why, and leaves no
// certificate behind.
func TestStartRefusals(t *testing.T) {
	caDir := t.TempDir()
	ca, err := pki.Init(caDir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	workers, _ := schedtest.Start(t, scheduler.Config{CADir: caDir, NodeCertTTL: time.Hour,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	token := func(ttl time.Duration) string {
		tok, _, err := pki.CreateToken(caDir, ttl, "test", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
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
		{"refused token", func(cfg *Config) { cfg.JoinToken = "abcdef.0123456789abcdef" }, "invalid or expired join token"},
		{"expired token", func(cfg *Config) { cfg.JoinToken = token(time.Nanosecond) }, "invalid or expired join token"},
		{"another CA's hash", func(cfg *Config) { cfg.JoinToken, cfg.CACertHash = token(time.Hour), other.Hash() }, "does not match --ca-cert-hash"},
		{"certificate for another name", func(cfg *Config) {
			cert, key, _ := ca.Issue(pki.Template{Role: pki.RoleNode, Name: "someone-else"})
			dir := filepath.Join(cfg.StateDir, "pki")
			if err := pki.WritePair(dir, "node", pki.Pair{CertPEM: cert, KeyPEM: key}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "remove node.crt and node.key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t, workers, t.TempDir())
			cfg.Insecure = false
			cfg.CACertHash = ca.Hash()
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
