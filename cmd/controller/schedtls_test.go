package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rik-org/rik/internal/pki"
)

func TestSchedulerTLS(t *testing.T) {
	if cfg, err := schedulerTLS("", "", "", true); cfg != nil || err != nil {
		t.Fatalf("--insecure: %v, %v; want plaintext", cfg, err)
	}
	if _, err := schedulerTLS("", "", "", false); err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("no certificate: %v; want an error naming the flags", err)
	}
	dir := t.TempDir()
	ca, err := pki.Init(filepath.Join(dir, "pki"), "")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := ca.Issue(pki.Template{Role: pki.RoleController, Name: "c"})
	if err := pki.WritePair(dir, "c", pki.Pair{CertPEM: cert, KeyPEM: key}); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "pki", pki.CACertFile)
	cfg, err := schedulerTLS(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), caFile, false)
	if err != nil || len(cfg.Certificates) != 1 || cfg.RootCAs == nil {
		t.Fatalf("schedulerTLS = %+v, %v; want the certificate and the CA", cfg, err)
	}
	if err := os.WriteFile(caFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := schedulerTLS(filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), caFile, false); err == nil {
		t.Fatal("a CA file without certificate accepted")
	}
}
