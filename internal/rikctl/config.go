package rikctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// DefaultServer is used when no configuration file says otherwise.
const DefaultServer = "http://127.0.0.1:5000"

// Config is rikctl's configuration file, JSON or YAML: RIK's format
// {"cluster":{"name":"...","server":"http://127.0.0.1:5000"}}, plus the
// cluster's CA and the user's token:
//
//	cluster:
//	  name: dev
//	  server: https://127.0.0.1:5000
//	  certificate-authority: /path/to/ca.crt   # or the PEM itself
//	user:
//	  token: rik_...
type Config struct {
	Cluster Cluster `json:"cluster"`
	User    User    `json:"user,omitzero"`
}

// Cluster names the controller to talk to.
type Cluster struct {
	Name   string `json:"name,omitempty"`
	Server string `json:"server"`
	// CertificateAuthority is the CA that signed the controller's
	// certificate: a file path, or the PEM text itself. Empty: the
	// system's CAs.
	CertificateAuthority string `json:"certificate-authority,omitempty"`
}

// User is who rikctl talks as.
type User struct {
	Token string `json:"token,omitempty"` // bearer token
}

// ConfigPath is $RIKCONFIG, or ~/.rik/config.yaml.
func ConfigPath(getenv func(string) string) string {
	if p := getenv("RIKCONFIG"); p != "" {
		return p
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".rik", "config.yaml")
}

// LoadConfig reads the configuration at path. A missing file gives the
// default configuration.
func LoadConfig(path string) (Config, error) {
	cfg := Config{Cluster: Cluster{Server: DefaultServer}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	if len(b) > 1<<20 {
		return Config{}, fmt.Errorf("reading config %s: larger than 1 MiB", path)
	}
	var file Config
	if err := yaml.Unmarshal(b, &file); err != nil { // YAML is a superset of JSON
		return Config{}, fmt.Errorf("parsing config %s: %w", path, err)
	}
	if file.Cluster.Server != "" {
		cfg.Cluster.Server = file.Cluster.Server
	}
	cfg.Cluster.Name = file.Cluster.Name
	cfg.Cluster.CertificateAuthority = file.Cluster.CertificateAuthority
	cfg.User = file.User
	if err := checkServer(cfg.Cluster.Server); err != nil {
		return Config{}, fmt.Errorf("config %s: cluster.server: %w", path, err)
	}
	return cfg, nil
}

// checkServer accepts http(s)://host[:port][/path] URLs.
func checkServer(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: must be an http:// or https:// URL", s)
	}
	return nil
}

func normalizeServer(s string) string { return strings.TrimRight(s, "/") }

// LoadCA returns the PEM of a certificate-authority setting: the text
// itself when it holds a PEM block, else the file it names.
func LoadCA(ca string) ([]byte, error) {
	if strings.Contains(ca, "-----BEGIN") {
		return []byte(ca), nil
	}
	b, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("reading certificate authority: %w", err)
	}
	return b, nil
}

// tlsClient is an HTTP client trusting the CA in caPEM (the system's CAs
// when empty), with base's timeout.
func tlsClient(base *http.Client, caPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("certificate authority: no PEM certificate found")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c := &http.Client{Transport: tr}
	if base != nil {
		c.Timeout = base.Timeout
	}
	return c, nil
}
