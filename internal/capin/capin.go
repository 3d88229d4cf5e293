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
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
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

// TLSConfig returns the client TLS configuration for reaching the control
// plane at host (a DNS name or an IP address, no port). The server is
// accepted only if its certificate verifies for host against the system
// roots plus t.CAPEM, or against the CA in its presented chain whose
// fingerprint is t.Pin. The handshake fails before a single request byte (a
// token, a credential) is sent to anyone else.
//
// The name is fixed rather than taken from each dial because a handshake
// with an IP address carries no server name to check against; a client
// built here talks to that one control plane.
func TLSConfig(t Trust, host string) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(t.CAPEM) > 0 && !roots.AppendCertsFromPEM(t.CAPEM) {
		return nil, errors.New("CA certificate: no PEM certificate in it")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if t.Pin == "" {
		return cfg, nil
	}
	pin, err := ParseHash(t.Pin)
	if err != nil {
		return nil, err
	}
	host = strings.Trim(host, "[]")
	cfg.ServerName = host
	// Verified by VerifyConnection instead, which also knows the pin.
	cfg.InsecureSkipVerify = true //nolint:gosec // VerifyConnection verifies
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verify(cs.PeerCertificates, host, roots, pin) }
	return cfg, nil
}

// Transport is an HTTP transport (HTTP/2 over TLS, HTTP/1.1 for upgrades)
// to the control plane at host, trusting it by TLSConfig.
func Transport(t Trust, host string) (*http.Transport, error) {
	cfg, err := TLSConfig(t, host)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.ForceAttemptHTTP2 = true
	return tr, nil
}

// Client is an http.Client for the control plane at baseURL over
// Transport, with the given timeout (0: none, for streams).
func Client(t Trust, baseURL string, timeout time.Duration) (*http.Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("control plane URL %q: want an absolute URL", baseURL)
	}
	tr, err := Transport(t, u.Hostname())
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
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
