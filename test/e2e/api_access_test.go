package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// apiAccess is how the tests reach the controllers' REST API: HTTPS with
// the controllers' certificate from the cluster CA and the first
// controller's admin token; plain HTTP without tokens when insecure.
type apiAccess struct {
	insecure          bool
	certFile, keyFile string
	caFile            string
	pool              *x509.CertPool
	token             string
	rikctlConfig      string // RIKCONFIG of every rikctl run: the CA and the token
}

// newAPIAccess reads the controllers' certificate pair and the CA from
// certDir (`rik ca issue controller --out certDir`); certDir "" means an
// insecure cluster.
func newAPIAccess(t testing.TB, dir, certDir string) apiAccess {
	t.Helper()
	a := apiAccess{insecure: certDir == "", rikctlConfig: filepath.Join(dir, "rikctl.yaml")}
	if a.insecure {
		return a
	}
	a.certFile, a.keyFile = filepath.Join(certDir, "controller.crt"), filepath.Join(certDir, "controller.key")
	a.caFile = filepath.Join(certDir, pki.CACertFile)
	caPEM, err := os.ReadFile(a.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if a.pool, err = pki.Pool(caPEM); err != nil {
		t.Fatal(err)
	}
	return a
}

// scheme is the controllers' URL scheme.
func (a apiAccess) scheme() string {
	if a.insecure {
		return "http"
	}
	return "https"
}

// controllerArgs are the controller's flags: its certificate pair, which
// also identifies it to the scheduler, and the CA; or --insecure.
func (a apiAccess) controllerArgs() []string {
	if a.insecure {
		return []string{"--insecure"}
	}
	return []string{"--tls-cert", a.certFile, "--tls-key", a.keyFile, "--ca-cert", a.caFile}
}

// useTokenOf reads the admin token a controller wrote and writes the
// rikctl configuration with it and the CA (the server comes from
// --server).
func (a *apiAccess) useTokenOf(t testing.TB, file, server string) {
	t.Helper()
	if a.insecure {
		cfg, _ := yaml.Marshal(rikctl.Config{Cluster: rikctl.Cluster{Name: "e2e", Server: server}})
		if err := os.WriteFile(a.rikctlConfig, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading the admin token: %v", err)
	}
	a.token = strings.TrimSpace(string(b))
	cfg, err := yaml.Marshal(rikctl.Config{Cluster: rikctl.Cluster{Name: "e2e", Server: server, CertificateAuthority: a.caFile},
		User: rikctl.User{Token: a.token}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.rikctlConfig, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}

// apiClient is nsClient trusting the API's CA and sending the admin token
// to HTTPS servers (the controllers: the tests' other servers are HTTP).
func (c *cluster) apiClient(ns *netns.NS, timeout time.Duration) *http.Client {
	hc := nsClient(ns, timeout)
	tr := hc.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: c.api.pool}
	hc.Transport = bearer{token: c.api.token, next: tr}
	return hc
}

// bearer adds a bearer token to HTTPS requests.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" && b.token != "" && req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(req)
}

// statusAs is the status of GET url from the client namespace with token
// ("" for none).
func (c *cluster) statusAs(token, url string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := nsClient(c.client, 10*time.Second)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: c.api.pool}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestAPIAuthentication: the real controller serves HTTPS only, asks for
// a token, and gives a viewer token (made with rikctl) reads only.
func TestAPIAuthentication(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{})
	url := c.apiURL() + "/api/v0/workloads.list"
	if code, err := c.statusAs("", url); err != nil || code != http.StatusUnauthorized {
		t.Errorf("no token: %d %v", code, err)
	}
	if code, err := c.statusAs("", c.apiURL()+"/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("healthz without a token: %d %v", code, err)
	}
	if _, err := c.get(c.client, strings.Replace(url, "https://", "http://", 1)); err == nil {
		t.Error("plain HTTP to the controller answered")
	}
	viewer := strings.TrimSpace(c.mustRikctl("token", "create", "--role", "viewer", "--description", "e2e"))
	if code, err := c.statusAs(viewer, url); err != nil || code != http.StatusOK {
		t.Errorf("viewer lists: %d %v", code, err)
	}
	def := c.writeFile("pod.json", httpdPod("auth", "127.0.0.1:1/busybox:latest", "e2e-auth", "Never", 0))
	out, err := c.rikctl("--token", viewer, "create", "workload", "-f", def)
	if err == nil || !strings.Contains(err.Error(), "forbidden: this needs the operator role") {
		t.Errorf("viewer creates a workload: %v %s", err, out)
	}
	list := c.mustRikctl("token", "list")
	if !strings.Contains(list, "viewer") || strings.Contains(list, viewer) {
		t.Errorf("token list:\n%s", list)
	}
	id := strings.Split(strings.TrimPrefix(viewer, "rik_"), "_")[0]
	c.mustRikctl("token", "delete", id)
	if code, err := c.statusAs(viewer, url); err != nil || code != http.StatusUnauthorized {
		t.Errorf("deleted viewer token: %d %v", code, err)
	}
}
