package dev

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/atomicfile"
	"github.com/rik-org/rik/internal/controller"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/rikctl"
	"github.com/rik-org/rik/internal/store"
)

// How the dev API is secured: HTTPS with a certificate from the cluster CA
// in <data-dir>/pki, and the first admin token in <data-dir>/admin.token;
// rikctl configurations pointing at it are written for the user.

// rikctlMarker starts every rikctl configuration rik dev writes: a file
// without it is the user's own and is never replaced.
const rikctlMarker = "# Written by `rik dev`: replaced by the next `rik dev` run unless this line is removed.\n"

// api is how the dev API is served and reached.
type api struct {
	tls    *tls.Config // nil: plain HTTP, no tokens
	server string      // URL rikctl uses
	caPEM  []byte
	token  string // admin token ("" if unknown or insecure)
}

// apiSecurity prepares the API served on ln: the CA (made on first use),
// a serving certificate for loopback and the listen address, the first
// admin token. With cfg.Insecure: plain HTTP and nothing else.
func apiSecurity(ctx context.Context, cfg Config, ln net.Listener, st store.Store) (api, error) {
	host := connectHost(ln.Addr())
	if cfg.Insecure {
		return api{server: "http://" + host}, nil
	}
	ca, _, err := pki.LoadOrInit(filepath.Join(cfg.DataDir, "pki"), "rik dev CA")
	if err != nil {
		return api{}, err
	}
	certPEM, keyPEM, err := ca.Issue(pki.Template{Role: pki.RoleController, Name: "rik-dev-controller",
		DNSNames: servedNames(ln.Addr()), IPs: servedIPs(ln.Addr())})
	if err != nil {
		return api{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return api{}, fmt.Errorf("loading the API certificate: %w", err)
	}
	tokenFile := filepath.Join(cfg.DataDir, "admin.token")
	if _, err := controller.BootstrapAdminToken(ctx, st, tokenFile); err != nil {
		return api{}, fmt.Errorf("creating the admin token: %w", err)
	}
	a := api{tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		server: "https://" + host, caPEM: ca.CertPEM}
	if b, err := os.ReadFile(tokenFile); err == nil {
		a.token = strings.TrimSpace(string(b))
	} else {
		cfg.Logger.Warn("admin token file unreadable: rikctl is configured without a token", "file", tokenFile, "error", err)
	}
	return a, nil
}

// connectHost is where a client on this machine reaches addr: loopback
// for a wildcard address.
func connectHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// servedIPs are the addresses the API certificate is valid for: loopback,
// and the listen address when it is a specific one.
func servedIPs(addr net.Addr) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP != nil && !tcp.IP.IsUnspecified() && !tcp.IP.IsLoopback() {
		ips = append(ips, tcp.IP)
	}
	return ips
}

// servedNames are the names the API certificate is valid for: localhost,
// and the host name when listening on every address.
func servedNames(addr net.Addr) []string {
	names := []string{"localhost"}
	if tcp, ok := addr.(*net.TCPAddr); ok && (tcp.IP == nil || tcp.IP.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			names = append(names, h)
		}
	}
	return names
}

// rikctlConfig is the configuration file text for a.
func (a api) rikctlConfig() ([]byte, error) {
	cfg := rikctl.Config{Cluster: rikctl.Cluster{Name: "dev", Server: a.server, CertificateAuthority: string(a.caPEM)},
		User: rikctl.User{Token: a.token}}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding the rikctl config: %w", err)
	}
	return append([]byte(rikctlMarker), b...), nil
}

// writeRikctlConfigs writes <data-dir>/rikctl.yaml and the user's rikctl
// config (userPath, if set) unless that one exists without rik dev's
// marker. It returns lines for the welcome text.
func writeRikctlConfigs(a api, dataDir, userPath string) ([]string, error) {
	data, err := a.rikctlConfig()
	if err != nil {
		return nil, err
	}
	own := filepath.Join(dataDir, "rikctl.yaml")
	if err := atomicfile.Write(own, data, 0o600); err != nil {
		return nil, err
	}
	if userPath == "" {
		return []string{"rikctl:     RIKCONFIG=" + own}, nil
	}
	old, err := os.ReadFile(userPath)
	switch {
	case err == nil && !bytes.HasPrefix(old, []byte(rikctlMarker)):
		return []string{"rikctl:     RIKCONFIG=" + own + "  (" + userPath + " is yours: left as it is)"}, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading %s: %w", userPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(userPath), 0o700); err != nil {
		return nil, fmt.Errorf("writing the rikctl config: %w", err)
	}
	if err := atomicfile.Write(userPath, data, 0o600); err != nil {
		return nil, err
	}
	return []string{"rikctl:     configured in " + userPath + " (and " + own + ")"}, nil
}

// welcome is what the welcome text says about access, one line each.
func (a api) welcome(rikctlNotes []string) string {
	var b strings.Builder
	switch {
	case a.tls == nil:
		b.WriteString("  security:   --insecure: plain HTTP, no tokens\n")
	case a.token != "":
		b.WriteString("  token:      " + a.token + "  (admin; rikctl has it)\n")
	}
	for _, n := range rikctlNotes {
		b.WriteString("  " + n + "\n")
	}
	return b.String()
}
