package hostreg

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// Lifetimes of what the CA issues.
const (
	CAValidity = 10 * 365 * 24 * time.Hour
	// ServerCertTTL is a host certificate's lifetime; agents renew after
	// two thirds of it.
	ServerCertTTL = 30 * 24 * time.Hour
	// ClientCertTTL is the control plane's own client certificate's
	// lifetime; each replica issues itself a new one after two thirds.
	ClientCertTTL = 7 * 24 * time.Hour
	// ServingCertTTL is the lifetime of the HTTPS certificate a replica
	// issues itself under WRENN_TLS=self-signed; it re-issues after two
	// thirds.
	ServingCertTTL = 30 * 24 * time.Hour
	// backdate covers clock skew between the control plane and the hosts.
	backdate = 5 * time.Minute
)

// ControlPlaneCN is the common name of the certificate the control plane
// presents to agents; agents accept no other client.
const ControlPlaneCN = "wrenn-control-plane"

const caCN = "Wrenn cluster CA"

// maxCSR bounds a CSR's PEM; real ones are under 1 KiB.
const maxCSR = 16 << 10

// CA is the cluster's certificate authority: it signs the hosts' server
// certificates and the control plane's client certificates. One CA, kept in
// PostgreSQL (table cluster_ca), is shared by every control-plane replica.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	pool    *x509.CertPool
}

// LoadOrCreateCA reads the cluster's CA, creating it first if no replica
// has yet. Replicas starting together race on the insert; the loser reads
// the winner's CA.
func LoadOrCreateCA(ctx context.Context, q *store.Queries, now time.Time) (*CA, error) {
	row, err := q.GetClusterCA(ctx)
	if errors.Is(err, pgx.ErrNoRows) {
		certPEM, keyPEM, gerr := generateCA(now)
		if gerr != nil {
			return nil, gerr
		}
		if err := q.InsertClusterCA(ctx, store.InsertClusterCAParams{CertPem: string(certPEM), KeyPem: string(keyPEM)}); err != nil {
			return nil, fmt.Errorf("store cluster CA: %w", err)
		}
		row, err = q.GetClusterCA(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	return ParseCA([]byte(row.CertPem), []byte(row.KeyPem))
}

// NewCA returns a fresh CA that is not stored anywhere (tests, tools).
func NewCA(now time.Time) (*CA, error) {
	certPEM, keyPEM, err := generateCA(now)
	if err != nil {
		return nil, err
	}
	return ParseCA(certPEM, keyPEM)
}

func generateCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCN, Organization: []string{"Wrenn"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign CA: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// ParseCA loads a CA from its PEM certificate and EC private key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("parse cluster CA: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse cluster CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "EC PRIVATE KEY" {
		return nil, errors.New("parse cluster CA: no PEM EC private key")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse cluster CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("parse cluster CA: key does not match certificate")
	}
	if !cert.IsCA {
		return nil, errors.New("parse cluster CA: certificate is not a CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, certPEM: pem.EncodeToMemory(cb), pool: pool}, nil
}

// CertPEM is the CA certificate, PEM-encoded (agents trust it).
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Pool is a pool holding only the CA: the roots to verify agents with.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Fingerprint is the CA's pin, "sha256:<hex>" of its SubjectPublicKeyInfo:
// what registration tokens carry and agents check (see internal/capin).
func (ca *CA) Fingerprint() string { return capin.Hash(ca.cert) }

// IssueServing makes an HTTPS server certificate for the control plane
// itself, valid for names (DNS names or IP addresses), with a new key that
// exists only in this process. The chain carries the CA certificate after
// the leaf, so that a client holding only the CA's fingerprint (an agent
// registering with a pinned token) can find the CA in the handshake and
// verify the leaf against it.
func (ca *CA) IssueServing(names []string, now time.Time) (*tls.Certificate, error) {
	if len(names) == 0 {
		return nil, errors.New("serving certificate: no names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Wrenn control plane"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ServingCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign serving certificate for %v: %w", names, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ParseCSR decodes a PEM certificate signing request and checks its
// self-signature, so that the requester holds the key it asks to certify.
// Only the public key is used: the CA chooses every name in the certificate.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) == 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem is required")
	}
	if len(csrPEM) > maxCSR {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: over %d bytes", maxCSR)
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: want a PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: bad signature: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: RSA key of %d bits; want at least 2048", k.N.BitLen())
		}
	default:
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "csr_pem: unsupported key type %T", csr.PublicKey)
	}
	return csr, nil
}

// SignHost issues the server certificate of host hostID reached at address
// (host:port): CN is the host id, the only SAN is the address's host (an IP
// or a DNS name), usable only for TLS servers.
func (ca *CA) SignHost(csr *x509.CertificateRequest, hostID uuid.UUID, address string, now time.Time) (certPEM []byte, notAfter time.Time, err error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, time.Time{}, errdefs.New(errdefs.ErrInvalidArgument, "address %q: want host:port", address)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, err
	}
	notAfter = now.Add(ServerCertTTL)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostID.String(), Organization: []string{"Wrenn hosts"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     keyUsageFor(csr.PublicKey),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign certificate of host %s: %w", hostID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), notAfter, nil
}

// keyUsageFor: RSA keys also encipher keys (TLS 1.2 RSA key exchange).
func keyUsageFor(pub crypto.PublicKey) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

// issueClient makes a client certificate for the control plane with a new
// key that exists only in this process.
func (ca *CA) issueClient(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate control-plane client key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ControlPlaneCN, Organization: []string{"Wrenn"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ClientCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign control-plane client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse control-plane client certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ClientIdentity is the certificate this control-plane replica presents to
// agents. It is issued on first use and again once two thirds of its
// lifetime have passed; the private key never leaves memory.
type ClientIdentity struct {
	ca  *CA
	clk Clock

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
}

// NewClientIdentity returns the replica's client identity signed by ca.
func NewClientIdentity(ca *CA, clk Clock) *ClientIdentity {
	if clk == nil {
		clk = systemClock{}
	}
	return &ClientIdentity{ca: ca, clk: clk}
}

// Certificate returns the current client certificate, issuing a new one
// when due.
func (c *ClientIdentity) Certificate() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clk.Now()
	if c.cur != nil && now.Before(c.renewAt) {
		return c.cur, nil
	}
	cert, err := c.ca.issueClient(now)
	if err != nil {
		return nil, err
	}
	c.cur, c.renewAt = cert, now.Add(ClientCertTTL*2/3)
	return cert, nil
}

// GetClientCertificate fits tls.Config.GetClientCertificate.
func (c *ClientIdentity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.Certificate()
}

// Roots is the pool agents' certificates must chain to.
func (c *ClientIdentity) Roots() *x509.CertPool { return c.ca.Pool() }

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
