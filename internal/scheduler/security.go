package scheduler

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
)

// security is what the scheduler serves TLS with: the cluster CA (with its
// key: it signs node certificates) and its own serving certificate.
type security struct {
	ca        *pki.CA
	tokensDir string // where the join tokens are (the CA directory)
	nodeTTL   time.Duration
	serving   *servingCert
}

// loadSecurity loads the CA of cfg and issues the scheduler's serving
// certificate for the names it is reached by. It returns nil when cfg
// asks for plaintext.
func loadSecurity(cfg Config, addrs []net.Addr, log *slog.Logger) (*security, error) {
	if cfg.Insecure {
		return nil, nil
	}
	if cfg.CADir == "" {
		return nil, errors.New("a CA directory is required to serve TLS (or run insecure, in plaintext)")
	}
	ca, err := pki.Load(cfg.CADir)
	if err != nil {
		return nil, fmt.Errorf("%w (create one with `rik ca init --dir %s`, or serve plaintext with --insecure)", err, cfg.CADir)
	}
	ttl := cfg.NodeCertTTL
	if ttl <= 0 {
		ttl = pki.NodeLifetime
	}
	host, _ := os.Hostname()
	tmpl := servingTemplate(host, cfg.TLSNames, addrs, interfaceIPs)
	sc := &servingCert{ca: ca, tmpl: tmpl, log: log, now: time.Now}
	if _, err := sc.get(nil); err != nil {
		return nil, err
	}
	log.Info("serving TLS", "ca", ca.Hash(), "names", tmpl.DNSNames, "ips", tmpl.IPs)
	return &security{ca: ca, tokensDir: cfg.CADir, nodeTTL: ttl, serving: sc}, nil
}

// servingTemplate names the scheduler's serving certificate: its host
// name, localhost, the extra names, and the addresses it listens on (every
// interface address for an unspecified one).
func servingTemplate(host string, extra []string, addrs []net.Addr, ifaceIPs func() []net.IP) pki.Template {
	t := pki.Template{Role: pki.RoleScheduler, Name: "rik-scheduler", TTL: pki.CertLifetime}
	t.AddNames(host, "localhost", "127.0.0.1", "::1")
	t.AddNames(extra...)
	for _, a := range addrs {
		tcp, ok := a.(*net.TCPAddr)
		switch {
		case !ok:
		case tcp.IP.IsUnspecified():
			for _, ip := range ifaceIPs() {
				t.AddNames(ip.String())
			}
		default:
			t.AddNames(tcp.IP.String())
		}
	}
	return t
}

// interfaceIPs lists the host's addresses.
func interfaceIPs() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

// servingCert is the scheduler's serving certificate, issued by the CA at
// start (its key lives only in memory) and again once it is two thirds
// through its lifetime.
type servingCert struct {
	ca   *pki.CA
	tmpl pki.Template
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

// get is a tls.Config.GetCertificate.
func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert != nil && s.now().Before(s.renewAt) {
		return s.cert, nil
	}
	certPEM, keyPEM, err := s.ca.Issue(s.tmpl)
	if err == nil {
		pair := pki.WithChain(pki.Pair{CertPEM: certPEM, KeyPEM: keyPEM}, s.ca.CertPEM)
		var c tls.Certificate
		if c, err = tls.X509KeyPair(pair.CertPEM, pair.KeyPEM); err == nil {
			s.cert, s.renewAt = &c, pki.RenewAt(c.Leaf)
			return s.cert, nil
		}
	}
	if s.cert == nil {
		return nil, fmt.Errorf("issuing the scheduler's certificate: %w", err)
	}
	s.log.Error("renewing the scheduler's certificate, serving the old one", "error", err)
	return s.cert, nil
}

// serverTLS is the TLS configuration of one port.
func (sec *security) serverTLS(auth tls.ClientAuthType) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(sec.ca.Cert)
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: sec.serving.get,
		ClientAuth:     auth,
		ClientCAs:      pool,
	}
}

// caller is who is on the other end of a call, as its verified client
// certificate says. It is the zero caller when the scheduler serves
// plaintext (nobody is checked).
type caller struct {
	secure bool // the call came over TLS with a verified certificate
	role   pki.Role
	name   string // node name or component name
	key    string // pki.KeyHash of its certificate's key
}

// errNoCertificate: a call over TLS without a verified client certificate.
var errNoCertificate = errors.New("no client certificate")

// callerOf reads the caller of ctx. Over TLS, a call without a verified
// client certificate is an error; in plaintext it is the zero caller.
func callerOf(ctx context.Context) (caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return caller{}, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return caller{}, nil
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return caller{}, errNoCertificate
	}
	c := info.State.VerifiedChains[0][0]
	role, name, err := pki.Identity(c)
	if err != nil {
		return caller{}, err
	}
	return caller{secure: true, role: role, name: name, key: pki.Hash(c)}, nil
}

// requireRole checks that the caller of ctx holds role (over TLS).
func requireRole(ctx context.Context, role pki.Role) error {
	c, err := callerOf(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "a client certificate from the cluster CA is required")
	}
	if c.secure && c.role != role {
		return status.Errorf(codes.PermissionDenied, "certificate role %q may not call this service (want %q)", c.role, role)
	}
	return nil
}

// unauthenticated lists the methods callable without a certificate (on
// the workers' port: the controllers' requires one at the handshake).
var unauthenticated = map[string]bool{
	workerpb.Worker_Join_FullMethodName:  true,
	healthpb.Health_Check_FullMethodName: true,
	healthpb.Health_Watch_FullMethodName: true,
	healthpb.Health_List_FullMethodName:  true,
}

// authorize returns interceptors letting only holders of role call the
// service, except the unauthenticated methods.
func authorize(role pki.Role) []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !unauthenticated[info.FullMethod] {
			if err := requireRole(ctx, role); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !unauthenticated[info.FullMethod] {
			if err := requireRole(ss.Context(), role); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
	return []grpc.ServerOption{grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream)}
}
