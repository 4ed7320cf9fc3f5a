package chaos

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rik-org/rik/internal/pki"
)

// security is the cluster's CA and credentials: the cluster runs as rik
// does by default (mutual TLS between the components, the API over HTTPS
// with a bearer token).
type security struct {
	dir       string // the CA's directory, also holding the controller's pair
	hash      string // the CA's pin, for the riklets
	joinToken string // one token, without expiry, for every riklet
	caPEM     []byte

	mu    sync.Mutex
	token string // the admin token, read once the controller wrote it
}

// newSecurity creates the CA, the controller's certificate for ctlIP and
// a join token.
func newSecurity(t testing.TB, dir string) *security {
	t.Helper()
	s := &security{dir: filepath.Join(dir, "pki")}
	ca, err := pki.Init(s.dir, "rik chaos CA")
	must(t, err)
	cert, key, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "controller", IPs: []net.IP{net.ParseIP(ctlIP)}})
	must(t, err)
	must(t, pki.WritePair(s.dir, "controller", pki.Pair{CertPEM: cert, KeyPEM: key}))
	s.joinToken, _, err = pki.CreateToken(s.dir, 0, "chaos riklets", time.Now())
	must(t, err)
	s.hash, s.caPEM = ca.Hash(), ca.CertPEM
	return s
}

// schedulerArgs, controllerEnv and rikletArgs are each component's
// security settings.
func (s *security) schedulerArgs() []string { return []string{"--ca-dir", s.dir} }

func (s *security) controllerEnv() []string {
	return []string{
		"RIK_TLS_CERT=" + filepath.Join(s.dir, "controller.crt"),
		"RIK_TLS_KEY=" + filepath.Join(s.dir, "controller.key"),
		"RIK_CA_CERT=" + filepath.Join(s.dir, pki.CACertFile),
	}
}

func (s *security) rikletArgs() []string {
	return []string{"--join-token", s.joinToken, "--ca-cert-hash", s.hash}
}

// apiClient is an HTTPS client from inside the ctl namespace trusting the
// CA and sending the admin token the controller keeps in storeDir.
func (s *security) apiClient(t testing.TB, base *http.Client, storeDir string) *http.Client {
	pool, err := pki.Pool(s.caPEM)
	must(t, err)
	tr := base.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	base.Transport = &bearer{s: s, file: filepath.Join(storeDir, "admin.token"), next: tr}
	return base
}

// bearer adds the admin token to every request.
type bearer struct {
	s    *security
	file string
	next http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	b.s.mu.Lock()
	if b.s.token == "" {
		if data, err := os.ReadFile(b.file); err == nil {
			b.s.token = strings.TrimSpace(string(data))
		}
	}
	tok := b.s.token
	b.s.mu.Unlock()
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}
