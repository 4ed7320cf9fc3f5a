package schedlink

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/riklet/backoff"
)

// Files of a node's PKI directory.
const (
	nodeName   = "node" // node.crt, node.key
	caCertFile = "ca.crt"
)

// Identity is the node's certificate and key, and the cluster CA. The
// certificate is swapped when renewed; connections made before keep theirs.
type Identity struct {
	dir   string
	name  string
	key   crypto.Signer
	ca    *x509.Certificate
	caPEM []byte
	cur   atomic.Pointer[tls.Certificate]
}

// errNoIdentity: the PKI directory holds no node certificate.
var errNoIdentity = errors.New("no node certificate")

// loadIdentity reads the node certificate of dir, for node name. A
// missing one is errNoIdentity; an expired one is returned with an error
// wrapping errExpired.
func loadIdentity(dir, name string, now time.Time) (*Identity, error) {
	pair, err := pki.ReadPair(dir, nodeName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoIdentity
	}
	if err != nil {
		return nil, fmt.Errorf("reading node certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, fmt.Errorf("reading cluster CA certificate: %w", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, caCertFile), err)
	}
	key, err := pki.ParseKey(pair.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, nodeName+".key"), err)
	}
	id := &Identity{dir: dir, name: name, key: key, ca: ca, caPEM: caPEM}
	if c, err := pki.ParseCert(pair.CertPEM); err == nil && !now.Before(c.NotAfter) {
		return nil, fmt.Errorf("%w on %s", errExpired, c.NotAfter.Format(time.RFC3339))
	}
	if err := id.use(pair.CertPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, nodeName+".crt"), err)
	}
	return id, nil
}

// errExpired: the node certificate expired.
var errExpired = errors.New("node certificate expired")

// use checks certPEM (issued by the CA, for the key and the node's name)
// and makes it the current certificate.
func (id *Identity) use(certPEM []byte) error {
	leaf, err := pki.CheckIssued(certPEM, id.key, id.ca, pki.RoleNode, id.name)
	if err != nil {
		return err
	}
	id.cur.Store(&tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: id.key, Leaf: leaf})
	return nil
}

// leaf is the current certificate.
func (id *Identity) leaf() *x509.Certificate { return id.cur.Load().Leaf }

// save writes the key (0600), the current certificate and the CA's.
func (id *Identity) save() error {
	keyPEM, err := pki.EncodeKey(id.key)
	if err != nil {
		return err
	}
	certPEM := pki.EncodeCert(id.leaf())
	if err := pki.WritePair(id.dir, nodeName, pki.Pair{CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		return fmt.Errorf("saving node certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(id.dir, caCertFile), id.caPEM, 0o644); err != nil {
		return fmt.Errorf("saving cluster CA certificate: %w", err)
	}
	return nil
}

// clientTLS dials the scheduler as this node: the scheduler's certificate
// must come from the cluster CA, and the current node certificate is
// presented (the one of the time of each handshake).
func (id *Identity) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(id.ca)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.cur.Load(), nil
		},
	}
}

// joinHint tells what to run to join.
const joinHint = "create a join token where the cluster CA is (`rik token create --ttl 24h`) and start the riklet with " +
	"--join-token <token> --ca-cert-hash <sha256:... printed by `rik ca init`>; or --insecure if the scheduler runs with --insecure"

// LoadIdentity finds the node's certificate in cfg.PKIDir, or says why
// the node must join (nil identity, nil error: Run joins) or cannot start.
// An Insecure node has none.
func LoadIdentity(cfg Config) (*Identity, error) {
	if cfg.Insecure {
		return nil, nil
	}
	id, err := loadIdentity(cfg.PKIDir, cfg.Hostname, time.Now())
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, errNoIdentity) && cfg.JoinToken == "":
		return nil, fmt.Errorf("no node certificate in %s and no join token: %s", cfg.PKIDir, joinHint)
	case errors.Is(err, errExpired) && cfg.JoinToken == "":
		return nil, fmt.Errorf("the node certificate in %s: %w: join again: %s", cfg.PKIDir, err, joinHint)
	case errors.Is(err, errNoIdentity), errors.Is(err, errExpired):
		return nil, nil // join
	}
	return nil, fmt.Errorf("the node certificate in %s cannot be used (remove %s.crt and %s.key there to join again): %w",
		cfg.PKIDir, nodeName, nodeName, err)
}

// join asks the scheduler for a node certificate with the join token,
// trusting it only if its CA has the pinned hash, and saves it. It retries
// while the scheduler is unreachable or a live node holds the name; a
// refused token or a CA that does not match the pin end it.
func (l *Link) join(ctx context.Context) (*Identity, error) {
	cfg := l.cfg
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, cfg.Hostname)
	if err != nil {
		return nil, err
	}
	pin := &pinCheck{}
	tlsCfg, err := pki.PinnedTLS(cfg.CACertHash, nil)
	if err != nil {
		return nil, fmt.Errorf("--ca-cert-hash: %w", err)
	}
	verify := tlsCfg.VerifyPeerCertificate
	tlsCfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		return pin.record(verify(raw, chains))
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), l.connectParams())
	if err != nil {
		return nil, fmt.Errorf("dialing scheduler %s: %w", cfg.Addr, err)
	}
	defer conn.Close()
	client := workerpb.NewWorkerClient(conn)
	req := &workerpb.JoinRequest{Token: cfg.JoinToken, Hostname: cfg.Hostname, CsrPem: string(csr)}
	var got *workerpb.NodeCertificate
	var final error
	l.retryLoop(ctx, "joining the cluster, retrying", func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, joinTimeout)
		defer cancel()
		got, err = client.Join(cctx, req)
		if err == nil {
			return nil
		}
		if perr := pin.err(); perr != nil {
			final = fmt.Errorf("joining: the scheduler's CA does not match --ca-cert-hash: %w", perr)
			return final
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.AlreadyExists:
			return fmt.Errorf("joining: %w", err)
		}
		final = fmt.Errorf("joining: the scheduler refused: %s", status.Convert(err).Message())
		return final
	}, func(err error) bool { return err == nil || final != nil })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if final != nil {
		return nil, final
	}
	return l.adopt(key, got)
}

// joinTimeout bounds one Join call.
const joinTimeout = 10 * time.Second

// adopt checks what Join returned against the pinned CA and the key, and
// saves it.
func (l *Link) adopt(key crypto.Signer, got *workerpb.NodeCertificate) (*Identity, error) {
	caPEM := []byte(got.GetCaCertificatePem())
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("joining: CA certificate: %w", err)
	}
	if pki.Hash(ca) != l.cfg.CACertHash {
		return nil, errors.New("joining: the scheduler returned a CA certificate that does not match --ca-cert-hash")
	}
	id := &Identity{dir: l.cfg.PKIDir, name: l.cfg.Hostname, key: key, ca: ca, caPEM: caPEM}
	if err := id.use([]byte(got.GetCertificatePem())); err != nil {
		return nil, fmt.Errorf("joining: node certificate: %w", err)
	}
	if err := id.save(); err != nil {
		return nil, err
	}
	l.log.Info("joined the cluster", "node", id.name, "expires", id.leaf().NotAfter, "pki_dir", id.dir)
	return id, nil
}

// pinCheck remembers the last verdict of the pinned CA check, to tell a
// wrong pin (final) from a scheduler that is down (retried).
type pinCheck struct {
	mu   sync.Mutex
	last error
}

func (p *pinCheck) record(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = err
	return err
}

func (p *pinCheck) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// renewLoop renews the node certificate once two thirds of its lifetime
// passed, over the node's authenticated connection, until ctx is done. A
// failed renewal is retried; the certificate in use stays until replaced.
func (l *Link) renewLoop(ctx context.Context, client workerpb.WorkerClient) {
	id := l.id
	b := backoff.Jittered{Min: l.cfg.ConnMin, Max: l.cfg.RenewRetryMax}
	for {
		if !backoff.Sleep(ctx, time.Until(pki.RenewAt(id.leaf()))) {
			return
		}
		err := l.renew(ctx, client, id)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			b.Reset()
			continue
		}
		d := b.Next()
		level := slog.LevelWarn
		if time.Until(id.leaf().NotAfter) < d {
			level = slog.LevelError
		}
		l.log.Log(ctx, level, "renewing the node certificate, retrying", "error", err, "in", d.Round(time.Millisecond), "expires", id.leaf().NotAfter)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// renew gets a new certificate for the node's key and makes it current.
func (l *Link) renew(ctx context.Context, client workerpb.WorkerClient, id *Identity) error {
	csr, err := pki.NewCSR(id.key, id.name)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	got, err := client.RenewCertificate(cctx, &workerpb.RenewRequest{CsrPem: string(csr)})
	if err != nil {
		return err
	}
	if got.GetCaCertificatePem() != string(id.caPEM) {
		return errors.New("the scheduler returned another CA certificate")
	}
	if err := id.use([]byte(got.GetCertificatePem())); err != nil {
		return err
	}
	if err := id.save(); err != nil {
		return err
	}
	l.log.Info("node certificate renewed", "expires", id.leaf().NotAfter)
	return nil
}
