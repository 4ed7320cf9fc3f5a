package scheduler

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
)

// errPlaintext answers the certificate calls of a scheduler serving
// plaintext.
var errPlaintext = status.Error(codes.FailedPrecondition, "this scheduler serves plaintext: nodes need no certificate")

// Join gives a node holding a valid join token a certificate for its
// hostname, for the key of its certificate request. A token refusal never
// says more than pki.ErrBadToken.
func (w *workerAPI) Join(_ context.Context, req *workerpb.JoinRequest) (*workerpb.NodeCertificate, error) {
	if w.sec == nil {
		return nil, errPlaintext
	}
	name := req.GetHostname()
	if err := checkNodeName(name); err != nil {
		return nil, err
	}
	tok, err := pki.CheckToken(w.sec.tokensDir, req.GetToken(), w.st.now())
	if err != nil {
		if !errors.Is(err, pki.ErrBadToken) {
			w.st.log.Error("checking a join token", "error", err)
		}
		w.st.metrics.joins.WithLabelValues(resultRefused).Inc()
		return nil, status.Error(codes.Unauthenticated, pki.ErrBadToken.Error())
	}
	csr, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	key, err := pki.KeyHash(csr.PublicKey)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	if err := w.st.mayJoin(name, key); err != nil {
		w.st.metrics.joins.WithLabelValues(resultRefused).Inc()
		return nil, grpcError(err)
	}
	out, err := w.sign(req.GetCsrPem(), name)
	if err != nil {
		return nil, err
	}
	w.st.log.Info("node joined", "node", name, "token", tok.ID, "key", key)
	w.st.metrics.joins.WithLabelValues(resultJoined).Inc()
	return out, nil
}

// RenewCertificate gives a node a new certificate for the key and the name
// of the one it calls with, unless another key holds that name live.
func (w *workerAPI) RenewCertificate(ctx context.Context, req *workerpb.RenewRequest) (*workerpb.NodeCertificate, error) {
	if w.sec == nil {
		return nil, errPlaintext
	}
	c, err := w.node(ctx)
	if err != nil {
		return nil, err
	}
	csr, err := pki.ParseCSR([]byte(req.GetCsrPem()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr_pem: %v", err)
	}
	if key, err := pki.KeyHash(csr.PublicKey); err != nil || key != c.key {
		return nil, status.Error(codes.InvalidArgument, "csr_pem: must be made with the key of the current certificate")
	}
	if err := w.st.mayJoin(c.name, c.key); err != nil {
		return nil, grpcError(err)
	}
	out, err := w.sign(req.GetCsrPem(), c.name)
	if err != nil {
		return nil, err
	}
	w.st.log.Info("node certificate renewed", "node", c.name)
	return out, nil
}

func (w *workerAPI) sign(csrPEM, name string) (*workerpb.NodeCertificate, error) {
	cert, err := w.sec.ca.SignCSR([]byte(csrPEM), pki.Template{Role: pki.RoleNode, Name: name, TTL: w.sec.nodeTTL})
	if err != nil {
		w.st.log.Error("signing a node certificate", "node", name, "error", err)
		return nil, status.Error(codes.Internal, "signing the node certificate failed")
	}
	return &workerpb.NodeCertificate{CertificatePem: string(cert), CaCertificatePem: string(w.sec.ca.CertPEM)}, nil
}

// checkNodeName checks a node name a certificate is to be issued for: a
// DNS-like name (letters, digits, '-', '_', '.').
func checkNodeName(name string) error {
	if err := checkHostname(name); err != nil {
		return err
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return status.Errorf(codes.InvalidArgument, "hostname %q: only letters, digits, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}
