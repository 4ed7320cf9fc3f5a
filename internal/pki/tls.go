package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Pool is a certificate pool holding the CA certificate in caPEM.
func Pool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate found")
	}
	return pool, nil
}

// ServerTLS serves with pair and verifies client certificates against the
// CA in caPEM as auth says (tls.RequireAndVerifyClientCert for controller
// and node ports, tls.VerifyClientCertIfGiven where unauthenticated callers
// are also let in, e.g. to join).
func ServerTLS(pair Pair, caPEM []byte, auth tls.ClientAuthType) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	pool, err := Pool(caPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS dials servers whose certificate the CA in caPEM signed,
// presenting pair when it is not empty. serverName overrides the name
// checked in the server's certificate ("" checks the dialled host).
func ClientTLS(pair Pair, caPEM []byte, serverName string) (*tls.Config, error) {
	pool, err := Pool(caPEM)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	if len(pair.CertPEM) > 0 {
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// PinnedTLS dials a server not yet trusted, to join: it accepts the server
// only if the chain it presents holds a CA whose public key has the pin
// hash (as kubeadm's --discovery-token-ca-cert-hash) and its leaf verifies
// against that CA. The CA found is given to found.
func PinnedTLS(hash string, found func(*x509.Certificate)) (*tls.Config, error) {
	if err := ValidHash(hash); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is verified below against the pinned CA, not the
		// system roots.
		InsecureSkipVerify: true, //nolint:gosec // verified by VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			ca, err := verifyPinned(raw, hash)
			if err != nil {
				return err
			}
			if found != nil {
				found(ca)
			}
			return nil
		},
	}, nil
}

// verifyPinned finds the pinned CA in the presented chain and verifies the
// leaf against it.
func verifyPinned(raw [][]byte, hash string) (*x509.Certificate, error) {
	if len(raw) < 2 {
		return nil, errors.New("server presented no CA certificate to check against the pinned hash")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("parsing server certificate: %w", err)
		}
		certs = append(certs, c)
	}
	for _, c := range certs[1:] {
		if !c.IsCA || Hash(c) != hash {
			continue
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
		}
		return c, nil
	}
	return nil, errors.New("server's CA does not match the pinned CA hash")
}

// WithChain appends the CA certificate to a server pair, so clients that
// pin the CA by hash find it in the handshake.
func WithChain(p Pair, caPEM []byte) Pair {
	out := Pair{KeyPEM: p.KeyPEM, CertPEM: append(append([]byte{}, p.CertPEM...), caPEM...)}
	return out
}
