package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/pki"
)

func rik(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// The CA and token commands: init prints the hash, refuses to overwrite;
// issue writes a controller pair; tokens are created, listed, checked and
// revoked.
func TestCAAndTokenCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, errOut := rik(t, "ca", "init", "--dir", dir)
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, errOut)
	}
	ca, err := pki.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ca.Hash()) || !strings.Contains(out, "rik token create") {
		t.Errorf("ca init output lacks the hash or the next steps:\n%s", out)
	}
	if code, _, errOut := rik(t, "ca", "init", "--dir", dir); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("second ca init: exit %d, %q", code, errOut)
	}
	if code, out, _ := rik(t, "ca", "hash", "--ca-dir", dir); code != 0 || strings.TrimSpace(out) != ca.Hash() {
		t.Errorf("ca hash: exit %d, %q, want %s", code, out, ca.Hash())
	}

	outDir := filepath.Join(t.TempDir(), "ctl")
	if code, _, errOut := rik(t, "ca", "issue", "controller", "--dir", dir, "--name", "c1", "--san", "10.0.0.1,ctl.example", "--out", outDir); code != 0 {
		t.Fatalf("ca issue controller: exit %d: %s", code, errOut)
	}
	pair, err := pki.ReadPair(outDir, "c1")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.ParseKey(pair.KeyPEM)
	c, err := pki.CheckIssued(pair.CertPEM, key, ca.Cert, pki.RoleController, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "10.0.0.1" || len(c.DNSNames) != 1 || c.DNSNames[0] != "ctl.example" {
		t.Errorf("SANs = %v %v", c.IPAddresses, c.DNSNames)
	}
	if fi, err := os.Stat(filepath.Join(outDir, "c1.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("c1.key mode: %v %v", fi.Mode().Perm(), err)
	}
	if b, _ := os.ReadFile(filepath.Join(outDir, "ca.crt")); !bytes.Equal(b, ca.CertPEM) {
		t.Error("ca.crt not written next to the controller pair")
	}

	code, out, errOut = rik(t, "token", "create", "--ca-dir", dir, "--ttl", "1h", "--description", "node a")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, errOut)
	}
	tok := strings.TrimSpace(out)
	if _, err := pki.CheckToken(dir, tok, time.Now()); err != nil {
		t.Fatalf("created token %q refused: %v", tok, err)
	}
	if !strings.Contains(errOut, "--join-token "+tok) || !strings.Contains(errOut, ca.Hash()) {
		t.Errorf("token create hint: %q", errOut)
	}
	id := strings.Split(tok, ".")[0]
	if code, out, _ := rik(t, "token", "list", "--ca-dir", dir); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "node a") || strings.Contains(out, tok) {
		t.Errorf("token list: exit %d:\n%s", code, out)
	}
	if code, _, errOut := rik(t, "token", "revoke", "--ca-dir", dir, id); code != 0 {
		t.Fatalf("token revoke: exit %d: %s", code, errOut)
	}
	if _, err := pki.CheckToken(dir, tok, time.Now()); err == nil {
		t.Fatal("revoked token still accepted")
	}
	if code, _, _ := rik(t, "token", "revoke", "--ca-dir", dir, id); code != 1 {
		t.Errorf("revoking twice: exit %d, want 1", code)
	}
}

func TestCAAndTokenBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"ca"}, {"ca", "nope"}, {"ca", "issue"}, {"ca", "issue", "node"}, {"ca", "init", "extra"},
		{"token"}, {"token", "nope"}, {"token", "revoke"}, {"token", "create", "--ttl", "soon"},
	} {
		if code, _, _ := rik(t, args...); code != 2 {
			t.Errorf("rik %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	for _, args := range [][]string{
		{"ca", "hash", "--dir", dir},                                  // no CA
		{"ca", "issue", "controller", "--dir", dir},                   // no CA
		{"token", "create", "--ca-dir", dir, "--ttl", "-1h"},          // negative
		{"ca", "issue", "controller", "--dir", dir, "--name", "../x"}, // a path
	} {
		if code, _, _ := rik(t, args...); code != 1 {
			t.Errorf("rik %s: exit %d, want 1", strings.Join(args, " "), code)
		}
	}
}
