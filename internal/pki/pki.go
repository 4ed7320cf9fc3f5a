// Package pki is rik's cluster certificate authority: it creates and loads
// the CA, issues certificates for the components (a role and a name in
// every certificate), signs certificate requests of joining nodes, and
// builds the TLS configurations the components serve and dial with.
//
// A certificate says who its holder is: the role in the subject's
// organization (rik:nodes, rik:controllers, rik:schedulers, rik:users) and
// the name in the common name (a node's hostname).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rik-org/rik/internal/atomicfile"
)

// Role is what a certificate allows its holder to be.
type Role string

const (
	RoleNode       Role = "rik:nodes"       // a riklet; the common name is its hostname
	RoleController Role = "rik:controllers" // a controller: client of the scheduler, HTTPS server
	RoleScheduler  Role = "rik:schedulers"  // the scheduler's serving certificate
)

// Lifetimes.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	CertLifetime = 365 * 24 * time.Hour // components' certificates
	NodeLifetime = 30 * 24 * time.Hour  // node certificates, renewed by the riklet
)

// Backdate is how far before its issue a certificate is valid from, for
// small clock skews between hosts.
const Backdate = 5 * time.Minute

// RenewAt is when a certificate should be renewed: once two thirds of its
// lifetime (from its issue, not its backdated start) have passed.
func RenewAt(c *x509.Certificate) time.Time {
	issued := c.NotBefore.Add(Backdate)
	if issued.After(c.NotAfter) {
		issued = c.NotBefore
	}
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3)
}

// DefaultDir is where the cluster CA lives unless told.
const DefaultDir = "/etc/rik/pki"

// File names in a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// ErrExists: a CA already exists where one was to be created.
var ErrExists = errors.New("a CA already exists")

// CA is a loaded certificate authority. Cert is always set; the key only
// when the CA was loaded with it (a component that only verifies has none).
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// Init creates a new CA in dir (made 0700 if missing): ca.crt and ca.key
// (0600). It refuses to replace an existing one (ErrExists).
func Init(dir, name string) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("creating CA in %s: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA dir: %w", err)
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = "rik cluster CA"
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"rik"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return Load(dir)
}

// Load loads the CA in dir with its key.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading CA key: %w", err)
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("loading CA: ca.key does not match ca.crt")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// LoadOrInit loads the CA in dir, creating it first if there is none. It
// reports whether it created one.
func LoadOrInit(dir, name string) (*CA, bool, error) {
	_, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		ca, err := Init(dir, name)
		return ca, err == nil, err
	}
	ca, err := Load(dir)
	return ca, false, err
}

// Hash is the CA's pin, as kubeadm prints it: "sha256:" and the hex SHA-256
// of the certificate's SubjectPublicKeyInfo.
func (ca *CA) Hash() string { return Hash(ca.Cert) }

// Hash is the pin of a certificate's public key.
func Hash(c *x509.Certificate) string {
	return hashSPKI(c.RawSubjectPublicKeyInfo)
}

// KeyHash is the pin of a public key, as Hash gives it for a certificate
// of that key: it tells whether two certificates (or a request and a
// certificate) share their key.
func KeyHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	return hashSPKI(der), nil
}

func hashSPKI(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ValidHash checks the form of a pin given by a user.
func ValidHash(h string) error {
	rest, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(rest) != 64 {
		return fmt.Errorf("CA hash %q: want sha256:<64 hex digits>", h)
	}
	if _, err := hex.DecodeString(rest); err != nil {
		return fmt.Errorf("CA hash %q: want sha256:<64 hex digits>", h)
	}
	return nil
}

// Template describes a certificate to issue.
type Template struct {
	Role     Role
	Name     string   // common name: a node's hostname, a component's name
	DNSNames []string // server certificates: names it serves
	IPs      []net.IP // server certificates: addresses it serves
	TTL      time.Duration
}

// AddNames adds the names a server certificate is for: IP addresses to
// IPs, others to DNSNames, each once; blank ones are skipped.
func (t *Template) AddNames(names ...string) {
	for _, n := range names {
		n = strings.TrimSpace(n)
		switch ip := net.ParseIP(n); {
		case n == "":
		case ip != nil:
			if !slices.ContainsFunc(t.IPs, ip.Equal) {
				t.IPs = append(t.IPs, ip)
			}
		case !slices.Contains(t.DNSNames, n):
			t.DNSNames = append(t.DNSNames, n)
		}
	}
}

// Names is a flag.Value collecting names for AddNames: comma-separated,
// repeatable.
type Names []string

func (n *Names) String() string { return strings.Join(*n, ",") }

// Set adds the comma-separated names of v.
func (n *Names) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*n = append(*n, s)
		}
	}
	return nil
}

func (t Template) x509() (*x509.Certificate, error) {
	if t.Name == "" {
		return nil, errors.New("certificate name: required")
	}
	if t.TTL <= 0 {
		t.TTL = CertLifetime
	}
	now := time.Now()
	c := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: t.Name, Organization: []string{string(t.Role)}},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(t.TTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     t.DNSNames,
		IPAddresses:  t.IPs,
	}
	switch t.Role {
	case RoleNode:
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case RoleController:
		// A controller dials the scheduler and serves the REST API.
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	case RoleScheduler:
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		return nil, fmt.Errorf("certificate role %q: unknown", t.Role)
	}
	return c, nil
}

// Sign issues a certificate for pub as t says; it returns it in PEM.
func (ca *CA) Sign(pub crypto.PublicKey, t Template) ([]byte, error) {
	if ca.key == nil {
		return nil, errors.New("signing: CA loaded without its key")
	}
	tmpl, err := t.x509()
	if err != nil {
		return nil, err
	}
	if exp := ca.Cert.NotAfter; tmpl.NotAfter.After(exp) {
		tmpl.NotAfter = exp
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %s: %w", t.Name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SignCSR checks a certificate request (PEM) and issues a certificate for
// its key as t says. The request's own subject is ignored: t names the
// holder.
func (ca *CA) SignCSR(csrPEM []byte, t Template) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.Sign(csr.PublicKey, t)
}

// Issue creates a key and a certificate for it; both are returned in PEM.
func (ca *CA) Issue(t Template) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err = ca.Sign(key.Public(), t); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = EncodeKey(key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// Identity reads the role and name a verified certificate gives its holder.
func Identity(c *x509.Certificate) (Role, string, error) {
	if c == nil {
		return "", "", errors.New("no certificate")
	}
	if len(c.Subject.Organization) != 1 || c.Subject.CommonName == "" {
		return "", "", errors.New("certificate without a rik role and name")
	}
	return Role(c.Subject.Organization[0]), c.Subject.CommonName, nil
}

// NewKey creates an ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating key: %w", err)
	}
	return k, nil
}

// EncodeKey encodes a private key as PKCS #8 PEM.
func EncodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes a PKCS #8, EC or PKCS #1 private key in PEM.
func ParseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM key found")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("key cannot sign")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key")
}

// ParseCert decodes the first certificate of a PEM bundle.
func ParseCert(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate found")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return c, nil
}

// EncodeCert encodes a certificate in PEM.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// NewCSR makes a certificate request for key, named name, in PEM.
func NewCSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MaxCSRBytes bounds a certificate request.
const MaxCSRBytes = 16 << 10

// ParseCSR decodes a certificate request in PEM and checks its signature.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRBytes {
		return nil, errors.New("certificate request too large")
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request found")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// Pair is a certificate and its key, in PEM.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// WritePair writes dir/name.crt (0644) and dir/name.key (0600).
func WritePair(dir, name string, p Pair) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, name+".key"), p.KeyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name+".crt"), p.CertPEM, 0o644)
}

// ReadPair reads dir/name.crt and dir/name.key.
func ReadPair(dir, name string) (Pair, error) {
	return ReadPairFiles(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
}

// ReadPairFiles reads a certificate and a key file.
func ReadPairFiles(certFile, keyFile string) (Pair, error) {
	var p Pair
	var err error
	if p.CertPEM, err = os.ReadFile(certFile); err != nil {
		return p, err
	}
	if p.KeyPEM, err = os.ReadFile(keyFile); err != nil {
		return p, err
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand failed: " + err.Error()) // the OS has no randomness left
	}
	return n
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// CheckIssued checks a certificate issued for key (PEM): it verifies
// against ca for client authentication, is for key, and names role and
// name. A node checks what the scheduler gave it with this.
func CheckIssued(certPEM []byte, key crypto.Signer, ca *x509.Certificate, role Role, name string) (*x509.Certificate, error) {
	c, err := ParseCert(certPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate does not verify against the CA: %w", err)
	}
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		return nil, errors.New("certificate is not for this key")
	}
	r, n, err := Identity(c)
	if err != nil {
		return nil, err
	}
	if r != role || n != name {
		return nil, fmt.Errorf("certificate is for %s %q, want %s %q", r, n, role, name)
	}
	return c, nil
}
