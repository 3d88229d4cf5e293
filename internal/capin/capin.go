// Package capin pins the cluster CA: its fingerprint (SHA-256 of the CA
// certificate's SubjectPublicKeyInfo, written "sha256:<hex>" as kubeadm's
// --discovery-token-ca-cert-hash is), registration tokens that carry it,
// and HTTP clients that accept a control plane only when its certificate
// is trusted by this machine or signed by the pinned CA.
//
// The control plane, the agent, the CLI and devstack share it, so there is
// one definition of the fingerprint and of the token format.
package capin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Scheme starts every fingerprint: the only hash used is SHA-256.
const Scheme = "sha256:"

// hexLen is the length of a SHA-256 digest in hex.
const hexLen = 2 * sha256.Size

// ErrMismatch is wrapped by every refusal of a CA that is not the pinned
// one: the wrong pin, or a man in the middle.
var ErrMismatch = errors.New("control plane CA does not match the pinned fingerprint")

// Hash is cert's fingerprint: "sha256:" and the lowercase hex SHA-256 of
// its DER SubjectPublicKeyInfo. Hashing the key rather than the whole
// certificate keeps the pin valid if the CA is re-issued with the same key.
func Hash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return Scheme + hex.EncodeToString(sum[:])
}

// ParseHash accepts "sha256:<64 hex>" or the bare 64 hex digits, any case,
// and returns the canonical "sha256:<lowercase hex>".
func ParseHash(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, Scheme)
	if len(h) != hexLen {
		return "", fmt.Errorf("CA fingerprint %q: want sha256:<%d hex digits>", s, hexLen)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("CA fingerprint %q: want sha256:<%d hex digits>", s, hexLen)
	}
	return Scheme + h, nil
}

// JoinToken is a registration token that carries the CA fingerprint:
// "<secret>.<64 lowercase hex>". pin empty returns secret unchanged.
func JoinToken(secret, pin string) string {
	if pin == "" {
		return secret
	}
	return secret + "." + strings.TrimPrefix(pin, Scheme)
}

// SplitToken splits a registration token into the secret sent to the
// control plane and the canonical pin ("" for a token without one, as the
// control planes before pinning issued). The secret never contains a dot.
func SplitToken(tok string) (secret, pin string, err error) {
	secret, rest, found := strings.Cut(strings.TrimSpace(tok), ".")
	if !found {
		return secret, "", nil
	}
	if secret == "" {
		return "", "", errors.New("registration token: empty secret before the CA fingerprint")
	}
	pin, err = ParseHash(rest)
	if err != nil {
		return "", "", fmt.Errorf("registration token: the part after the dot is not a CA fingerprint (want <secret>.<%d hex digits>)", hexLen)
	}
	return secret, pin, nil
}

// ParseCAPEM returns the first certificate of a PEM bundle, which must be
// a CA.
func ParseCAPEM(caPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(caPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("CA: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("CA: the certificate is not a CA")
	}
	return cert, nil
}

// Check verifies that caPEM is the CA pin names. It returns an error
// wrapping ErrMismatch when it is another.
func Check(caPEM []byte, pin string) error {
	cert, err := ParseCAPEM(caPEM)
	if err != nil {
		return err
	}
	if got := Hash(cert); got != pin {
		return fmt.Errorf("%w: got %s, pinned %s (wrong pin, or a man in the middle)", ErrMismatch, got, pin)
	}
	return nil
}

// Trust is what a client trusts the control plane by, besides the
// machine's own roots.
type Trust struct {
	// Pin, when set, admits a server whose presented chain holds a CA with
	// this fingerprint that signed its certificate for the dialled name.
	Pin string
	// CAPEM, when set, is added to the roots (the CA saved at registration,
	// or --ca-cert).
	CAPEM []byte
}

// Transport returns an HTTP transport (HTTP/2 over TLS, HTTP/1.1) whose
// TLS handshakes accept the server only if its certificate verifies for
// the dialled host against the system roots plus t.CAPEM, or against the
// CA in its chain whose fingerprint is t.Pin. The handshake fails before a
// single request byte (a token, a credential) is sent to anyone else.
func Transport(t Trust) (*http.Transport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(t.CAPEM) > 0 && !roots.AppendCertsFromPEM(t.CAPEM) {
		return nil, errors.New("CA certificate: no PEM certificate in it")
	}
	if t.Pin != "" {
		if t.Pin, err = ParseHash(t.Pin); err != nil {
			return nil, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: host,
			NextProtos: []string{"h2", "http/1.1"},
			// Verified below, with the host name this dial is for (the
			// connection state does not carry an IP address as SNI).
			InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies
			VerifyConnection:   func(cs tls.ConnectionState) error { return verify(cs.PeerCertificates, host, roots, t.Pin) },
		}
		d := &tls.Dialer{NetDialer: dialer, Config: cfg}
		return d.DialContext(ctx, network, addr)
	}
	return tr, nil
}

// verify accepts chain[0] for host if it chains to roots, or to a CA in
// the chain whose fingerprint is pin.
func verify(chain []*x509.Certificate, host string, roots *x509.CertPool, pin string) error {
	if len(chain) == 0 {
		return errors.New("the control plane presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	_, rootErr := chain[0].Verify(opts)
	if rootErr == nil {
		return nil
	}
	if pin == "" {
		return rootErr
	}
	for _, c := range chain {
		if !c.IsCA || Hash(c) != pin {
			continue
		}
		pinned := x509.NewCertPool()
		pinned.AddCert(c)
		opts.Roots, opts.Intermediates = pinned, x509.NewCertPool()
		if _, err := chain[0].Verify(opts); err != nil {
			return fmt.Errorf("control plane certificate is not valid for %s under the pinned CA %s: %w", host, pin, err)
		}
		return nil
	}
	return fmt.Errorf("%w: the control plane's certificate (issuer %q) is neither trusted by this machine nor signed by the pinned CA %s (wrong pin, or a man in the middle)",
		ErrMismatch, chain[0].Issuer.String(), pin)
}

// Client is an http.Client over Transport(t) with the given timeout.
func Client(t Trust, timeout time.Duration) (*http.Client, error) {
	tr, err := Transport(t)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}
