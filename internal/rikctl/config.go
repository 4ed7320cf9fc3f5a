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
//
// or several clusters as named contexts, one of them current (see
// contexts.go):
//
//	current-context: prod
//	contexts:
//	- name: prod
//	  cluster: {server: https://10.0.0.1:5000, certificate-authority: /etc/rik/ca.crt}
//	  user: {token: rik_...}
//	- name: dev
//	  cluster: {server: http://127.0.0.1:5000}
type Config struct {
	Cluster        Cluster   `json:"cluster,omitzero"`
	User           User      `json:"user,omitzero"`
	CurrentContext string    `json:"current-context,omitempty"`
	Contexts       []Context `json:"contexts,omitempty"`
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

// LoadConfig reads the configuration at path, for its current context. A
// missing file gives the default configuration.
func LoadConfig(path string) (Config, error) { return LoadContext(path, "") }

// LoadContext reads the configuration at path for the context named (""
// the current one): the cluster and user to talk to. A missing file gives
// the default configuration.
func LoadContext(path, name string) (Config, error) {
	file, found, err := readConfigFile(path)
	if err != nil {
		return Config{}, err
	}
	if !found {
		if name != "" {
			return Config{}, fmt.Errorf("context %q: no config file %s", name, path)
		}
		return Config{Cluster: Cluster{Server: DefaultServer}}, nil
	}
	ctx, field, err := file.pick(name)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	cfg := Config{Cluster: ctx.Cluster, User: ctx.User}
	if cfg.Cluster.Server == "" {
		cfg.Cluster.Server = DefaultServer
	}
	if err := checkServer(cfg.Cluster.Server); err != nil {
		return Config{}, fmt.Errorf("config %s: %s.server: %w", path, field, err)
	}
	return cfg, nil
}

// readConfigFile reads the file as it is; found is false when it does not
// exist.
func readConfigFile(path string) (cfg Config, found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, false, nil
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("reading config: %w", err)
	}
	if len(b) > 1<<20 {
		return Config{}, false, fmt.Errorf("reading config %s: larger than 1 MiB", path)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil { // YAML is a superset of JSON
		return Config{}, false, fmt.Errorf("parsing config %s: %w", path, err)
	}
	return cfg, true, nil
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
