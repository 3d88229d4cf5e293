package registration

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Identity is the host's credentials in force: the certificate the TLS
// server presents, the CA it trusts clients by, and the token heartbeats
// carry. Renewal swaps all three at once; each new TLS handshake sees the
// swap. Safe for concurrent use; the zero value holds nothing.
type Identity struct {
	cur atomic.Pointer[parsed]
}

type parsed struct {
	creds Credentials
	cert  *tls.Certificate
	pool  *x509.CertPool
}

// Set checks c (the certificate matches the key, is for server auth and
// chains to the CA) and puts it in force.
func (i *Identity) Set(c Credentials) error {
	p, err := parse(c)
	if err != nil {
		return err
	}
	i.cur.Store(p)
	return nil
}

// Clear drops the credentials: handshakes fail from now on.
func (i *Identity) Clear() { i.cur.Store(nil) }

// Credentials returns the credentials in force, if any.
func (i *Identity) Credentials() (Credentials, bool) {
	p := i.cur.Load()
	if p == nil {
		return Credentials{}, false
	}
	return p.creds, true
}

// Certificate implements rpc.CertSource.
func (i *Identity) Certificate() *tls.Certificate {
	if p := i.cur.Load(); p != nil {
		return p.cert
	}
	return nil
}

// ClientCAs implements rpc.CertSource.
func (i *Identity) ClientCAs() *x509.CertPool {
	if p := i.cur.Load(); p != nil {
		return p.pool
	}
	return nil
}

// parse validates credentials as a whole, so a bad certificate from the
// control plane is refused before it replaces a good one.
func parse(c Credentials) (*parsed, error) {
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "host certificate does not match the host key: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM) {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "control plane CA: no PEM certificate")
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "host certificate is not a server certificate of the control plane CA: %v", err)
	}
	if c.Token == "" {
		return nil, errors.New("host token is empty")
	}
	return &parsed{creds: c, cert: &cert, pool: pool}, nil
}

// describeCert names a certificate for logs.
func describeCert(c Credentials) string {
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil || cert.Leaf == nil {
		return "unparsable"
	}
	return fmt.Sprintf("CN=%s serial=%s not_after=%s", cert.Leaf.Subject.CommonName, cert.Leaf.SerialNumber, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}
