package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitLoadAndRefuseOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := Init(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Init(dir, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init = %v, want ErrExists", err)
	}
	again, created, err := LoadOrInit(dir, "")
	if err != nil || created {
		t.Fatalf("LoadOrInit = created %v, %v", created, err)
	}
	if again.Hash() != ca.Hash() {
		t.Fatal("reloaded CA has another hash")
	}
	if err := ValidHash(ca.Hash()); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRejectsMismatchedKey(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := Init(a, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(b, ""); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(b, CAKeyFile))
	if err := os.WriteFile(filepath.Join(a, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(a); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Load with another CA's key = %v", err)
	}
}

func TestValidHash(t *testing.T) {
	for _, h := range []string{"", "sha256:", "sha256:zz", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("g", 64)} {
		if ValidHash(h) == nil {
			t.Errorf("ValidHash(%q) accepted", h)
		}
	}
}

func TestSignCSRUsesTemplateIdentity(t *testing.T) {
	ca, err := Init(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	csr, err := NewCSR(key, "evil-node")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignCSR(csr, Template{Role: RoleNode, Name: "node-a", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(certPEM)
	role, name, err := Identity(c)
	if err != nil || role != RoleNode || name != "node-a" {
		t.Fatalf("identity = %q %q %v, want node node-a", role, name, err)
	}
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		t.Fatal("certificate is not for the request's key")
	}
	pool, _ := Pool(ca.CertPEM)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a node certificate verifies as a server")
	}
}

func TestParseCSRRejectsGarbage(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("x"), []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), make([]byte, MaxCSRBytes+1)} {
		if _, err := ParseCSR(in); err == nil {
			t.Errorf("ParseCSR(%.20q) accepted", in)
		}
	}
}

// handshake runs one handshake between a server and a client config over
// loopback TCP and returns both sides' errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		s := tls.Server(conn, server)
		err = s.Handshake()
		if err == nil {
			_, _ = io.WriteString(s, "x")
		}
		s.Close()
		done <- err
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(conn, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		buf := make([]byte, 1)
		_, clientErr = io.ReadFull(c, buf)
	}
	c.Close()
	return <-done, clientErr
}

func TestMutualTLSAndPinning(t *testing.T) {
	ca, err := Init(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Init(t.TempDir(), "")
	srvCert, srvKey, err := ca.Issue(Template{Role: RoleScheduler, Name: "scheduler", DNSNames: []string{"sched"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	server, err := ServerTLS(WithChain(Pair{srvCert, srvKey}, ca.CertPEM), ca.CertPEM, tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey, _ := ca.Issue(Template{Role: RoleNode, Name: "a"})
	client, _ := ClientTLS(Pair{nodeCert, nodeKey}, ca.CertPEM, "sched")
	if serr, cerr := handshake(t, server, client); serr != nil || cerr != nil {
		t.Fatalf("mutual TLS: server %v, client %v", serr, cerr)
	}
	// No client certificate: refused.
	anon, _ := ClientTLS(Pair{}, ca.CertPEM, "sched")
	if serr, _ := handshake(t, server, anon); serr == nil {
		t.Fatal("server accepted a client without certificate")
	}
	// A certificate of another CA: refused.
	foreignCert, foreignKey, _ := other.Issue(Template{Role: RoleNode, Name: "a"})
	foreign, _ := ClientTLS(Pair{foreignCert, foreignKey}, ca.CertPEM, "sched")
	if serr, _ := handshake(t, server, foreign); serr == nil {
		t.Fatal("server accepted a certificate of another CA")
	}
	// Pinning: the right hash accepts, another refuses.
	var found *x509.Certificate
	pinned, _ := PinnedTLS(ca.Hash(), func(c *x509.Certificate) { found = c })
	pinned.Certificates = client.Certificates
	if _, cerr := handshake(t, server, pinned); cerr != nil || found == nil || Hash(found) != ca.Hash() {
		t.Fatalf("pinned handshake: %v (found %v)", cerr, found != nil)
	}
	wrong, _ := PinnedTLS(other.Hash(), nil)
	wrong.Certificates = client.Certificates
	if _, cerr := handshake(t, server, wrong); cerr == nil {
		t.Fatal("pinned handshake with another CA's hash succeeded")
	}
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, jt, err := CreateToken(dir, time.Hour, "node a", now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(mustRead(t, filepath.Join(dir, TokensFile)), strings.SplitN(tok, ".", 2)[1]) {
		t.Fatal("tokens file holds the secret in clear")
	}
	if _, err := CheckToken(dir, tok, now.Add(30*time.Minute)); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}
	if _, err := CheckToken(dir, tok, now.Add(time.Hour)); !errors.Is(err, ErrBadToken) {
		t.Fatalf("expired token = %v", err)
	}
	bad := jt.ID + "." + strings.Repeat("a", tokenSecretLen)
	for _, in := range []string{"", "nodot", bad, tok + "x", "." + tok} {
		if _, err := CheckToken(dir, in, now); !errors.Is(err, ErrBadToken) {
			t.Errorf("CheckToken(%q) = %v", in, err)
		}
	}
	forever, _, _ := CreateToken(dir, 0, "", now)
	if _, err := CheckToken(dir, forever, now.Add(100*365*24*time.Hour)); err != nil {
		t.Fatalf("token without ttl refused: %v", err)
	}
	list, _ := ListTokens(dir)
	if len(list) != 2 {
		t.Fatalf("listed %d tokens, want 2", len(list))
	}
	if err := RevokeToken(dir, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckToken(dir, tok, now); !errors.Is(err, ErrBadToken) {
		t.Fatalf("revoked token = %v", err)
	}
	if err := RevokeToken(dir, "nosuch"); err == nil {
		t.Fatal("revoking an unknown token succeeded")
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestKeyHashMatchesCertificateHash(t *testing.T) {
	ca, err := Init(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	certPEM, err := ca.Sign(key.Public(), Template{Role: RoleNode, Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(certPEM)
	kh, err := KeyHash(key.Public())
	if err != nil || kh != Hash(c) {
		t.Fatalf("KeyHash = %q, %v; certificate's Hash = %q", kh, err, Hash(c))
	}
	other, _ := NewKey()
	if okh, _ := KeyHash(other.Public()); okh == kh {
		t.Fatal("two keys share a hash")
	}
}

func TestRenewAt(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: issued.Add(-Backdate), NotAfter: issued.Add(30 * time.Hour)}
	if got, want := RenewAt(c), issued.Add(20*time.Hour); !got.Equal(want) {
		t.Fatalf("RenewAt = %v, want %v", got, want)
	}
	// Not backdated (another issuer): two thirds from its start.
	c = &x509.Certificate{NotBefore: issued, NotAfter: issued.Add(3 * time.Minute)}
	if got, want := RenewAt(c), issued.Add(2*time.Minute); !got.Equal(want) {
		t.Fatalf("RenewAt = %v, want %v", got, want)
	}
}

func TestCheckIssued(t *testing.T) {
	ca, _ := Init(t.TempDir(), "")
	other, _ := Init(t.TempDir(), "")
	key, _ := NewKey()
	good, _ := ca.Sign(key.Public(), Template{Role: RoleNode, Name: "a"})
	if _, err := CheckIssued(good, key, ca.Cert, RoleNode, "a"); err != nil {
		t.Fatalf("CheckIssued(good) = %v", err)
	}
	otherKey, _ := NewKey()
	foreign, _ := other.Sign(key.Public(), Template{Role: RoleNode, Name: "a"})
	forKey, _ := ca.Sign(otherKey.Public(), Template{Role: RoleNode, Name: "a"})
	named, _ := ca.Sign(key.Public(), Template{Role: RoleNode, Name: "b"})
	ctrl, _ := ca.Sign(key.Public(), Template{Role: RoleController, Name: "a"})
	for name, in := range map[string][]byte{"another CA": foreign, "another key": forKey, "another name": named,
		"another role": ctrl, "garbage": []byte("x")} {
		if _, err := CheckIssued(in, key, ca.Cert, RoleNode, "a"); err == nil {
			t.Errorf("CheckIssued(%s) accepted", name)
		}
	}
}
