// Package cptest is a fake control plane for host agent tests: a CA shaped
// like the real one (ECDSA P-256; server certificates for agents, a client
// certificate with CommonName wrenn-control-plane) and an in-process
// HostRegistryService that registers, heartbeats, renews and revokes.
package cptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// ControlPlaneCN is the control plane's client certificate CommonName.
const ControlPlaneCN = "wrenn-control-plane"

// CA is a throwaway certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA makes a CA named cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool is a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SignCSR issues a server certificate for a PEM CSR as the control plane
// does: CommonName cn (the host id), the CSR's SANs, ServerAuth.
func (ca *CA) SignCSR(csrPEM []byte, cn string, validity time.Duration) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ServerCert issues a server certificate for 127.0.0.1 and localhost, as
// PEM certificate and PEM PKCS#8 key.
func (ca *CA) ServerCert(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ClientCert issues a client certificate (ClientAuth) with CommonName cn.
func (ca *CA) ClientCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ClientTLS is the TLS configuration of a control plane dialling an agent
// whose certificate this CA signed: it presents a client certificate with
// CommonName cn.
func (ca *CA) ClientTLS(t testing.TB, cn string) *tls.Config {
	return &tls.Config{
		RootCAs:      ca.Pool(),
		Certificates: []tls.Certificate{ca.ClientCert(t, cn)},
		MinVersion:   tls.VersionTLS12,
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Registry is a fake HostRegistryService.
type Registry struct {
	CA *CA

	mu sync.Mutex
	// registration tokens not used yet
	regTokens map[string]bool
	// host tokens in force, to host ids
	hostTokens map[string]string
	hosts      map[string]*Host
	renewAfter time.Time
	// destroy is what every heartbeat answer names in destroy_sandbox_ids.
	destroy  []string
	renewErr error
	nextID   int
	// received lists every registration token a Register call carried,
	// accepted or not: a test of pinning checks an impostor saw none.
	received []string
}

// Host is what the fake knows of one registered host.
type Host struct {
	ID         string
	Address    string
	Specs      *hostagentv1.HostSpecs
	CSRs       int
	Heartbeats []*hostagentv1.HeartbeatRequest
	// Events are the sandbox events reported, in arrival order.
	Events   []*hostagentv1.SandboxEvent
	Renewals int
	// Deleted hosts answer heartbeats with NotFound.
	Deleted bool
	// CertPEM is the last certificate issued.
	CertPEM []byte
}

// NewRegistry returns an empty fake with its own CA.
func NewRegistry(t testing.TB) *Registry {
	return &Registry{
		CA:         NewCA(t, "wrenn test CA"),
		regTokens:  map[string]bool{},
		hostTokens: map[string]string{},
		hosts:      map[string]*Host{},
	}
}

// Serve runs the fake on an httptest server (plain HTTP, like
// WRENN_CP_URL=http://...) and returns its URL.
func (r *Registry) Serve(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewHostRegistryServiceHandler(r))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// ServeTLS runs the fake on an HTTPS httptest server whose certificate
// (for 127.0.0.1 and localhost) is signed by r.CA, the chain carrying the
// CA after the leaf as wrenn-cp's WRENN_TLS=self-signed does, and returns
// its URL. Nothing but a pinned client trusts it.
func (r *Registry) ServeTLS(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewHostRegistryServiceHandler(r))
	srv := httptest.NewUnstartedServer(mux)
	certPEM, keyPEM := r.CA.ServerCert(t, "wrenn test control plane")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = append(cert.Certificate, r.CA.Cert.Raw)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// Fingerprint is the CA's pin, "sha256:<hex>" of its SubjectPublicKeyInfo.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewPinnedRegistrationToken returns a one-time registration token that
// carries r.CA's fingerprint, "<secret>.<sha256 hex>", as wrenn-cp issues
// them.
func (r *Registry) NewPinnedRegistrationToken() string {
	return r.NewRegistrationToken() + "." + strings.TrimPrefix(r.CA.Fingerprint(), "sha256:")
}

// AcceptToken makes the fake accept secret as a registration token: an
// impostor relaying a token it intercepted.
func (r *Registry) AcceptToken(secret string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regTokens[secret] = true
}

// ReceivedTokens returns every registration token Register was called with.
func (r *Registry) ReceivedTokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.received...)
}

// NewRegistrationToken returns a one-time registration token.
func (r *Registry) NewRegistrationToken() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	tok := "reg_" + randHex(8)
	r.regTokens[tok] = true
	return tok
}

// SetRenewAfter sets the renew_after every heartbeat answers with.
func (r *Registry) SetRenewAfter(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewAfter = t
}

// SetDestroy sets the sandboxes every heartbeat answer tells the agent
// to destroy.
func (r *Registry) SetDestroy(ids []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.destroy = append([]string(nil), ids...)
}

// SetCA makes the fake issue from ca (and return it) from now on: an
// impostor's CA at renewal.
func (r *Registry) SetCA(ca *CA) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.CA = ca
}

// FailRenewals makes Renew answer err (nil: succeed again).
func (r *Registry) FailRenewals(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.renewErr = err
}

// Delete marks a host deleted, as DELETE /v1/hosts/{id} would.
func (r *Registry) Delete(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[id]; h != nil {
		h.Deleted = true
	}
}

// Host returns a copy of what the fake knows of host id.
func (r *Registry) Host(id string) (Host, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[id]
	if !ok {
		return Host{}, false
	}
	c := *h
	c.Heartbeats = append([]*hostagentv1.HeartbeatRequest(nil), h.Heartbeats...)
	c.Events = append([]*hostagentv1.SandboxEvent(nil), h.Events...)
	return c, true
}

// Register implements HostRegistryService.
func (r *Registry) Register(_ context.Context, req *connect.Request[hostagentv1.RegisterRequest]) (*connect.Response[hostagentv1.RegisterResponse], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, req.Msg.GetRegistrationToken())
	if !r.regTokens[req.Msg.GetRegistrationToken()] {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or used registration token"))
	}
	delete(r.regTokens, req.Msg.GetRegistrationToken())
	r.nextID++
	h := &Host{ID: fmt.Sprintf("host-%d", r.nextID), Address: req.Msg.GetAddress(), Specs: req.Msg.GetSpecs(), CSRs: 1}
	cert, err := r.CA.SignCSR(req.Msg.GetCsrPem(), h.ID, 30*24*time.Hour)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	h.CertPEM = cert
	r.hosts[h.ID] = h
	tok := "wrh_" + randHex(16)
	r.hostTokens[tok] = h.ID
	return connect.NewResponse(&hostagentv1.RegisterResponse{
		HostId: h.ID, HostToken: tok, HostTokenExpiresAtUnixMs: time.Now().Add(90 * 24 * time.Hour).UnixMilli(),
		CertificatePem: cert, CaPem: r.CA.PEM,
	}), nil
}

// host authenticates a call by its bearer token; r.mu is held.
func (r *Registry) host(hdr http.Header) (*Host, string, error) {
	tok, ok := strings.CutPrefix(hdr.Get("Authorization"), "Bearer ")
	id, known := r.hostTokens[tok]
	if !ok || !known {
		return nil, "", connect.NewError(connect.CodeUnauthenticated, errors.New("bad host token"))
	}
	h := r.hosts[id]
	if h.Deleted {
		return nil, "", connect.NewError(connect.CodeNotFound, fmt.Errorf("host %s was deleted", id))
	}
	return h, tok, nil
}

// Heartbeat implements HostRegistryService.
func (r *Registry) Heartbeat(_ context.Context, req *connect.Request[hostagentv1.HeartbeatRequest]) (*connect.Response[hostagentv1.HeartbeatResponse], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, _, err := r.host(req.Header())
	if err != nil {
		return nil, err
	}
	h.Heartbeats = append(h.Heartbeats, req.Msg)
	var due int64
	if !r.renewAfter.IsZero() {
		due = r.renewAfter.UnixMilli()
	}
	return connect.NewResponse(&hostagentv1.HeartbeatResponse{RenewAfterUnixMs: due, DestroySandboxIds: r.destroy}), nil
}

// ReportSandboxEvents implements HostRegistryService: it records the
// events.
func (r *Registry) ReportSandboxEvents(_ context.Context, req *connect.Request[hostagentv1.ReportSandboxEventsRequest]) (*connect.Response[hostagentv1.ReportSandboxEventsResponse], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, _, err := r.host(req.Header())
	if err != nil {
		return nil, err
	}
	h.Events = append(h.Events, req.Msg.GetEvents()...)
	return connect.NewResponse(&hostagentv1.ReportSandboxEventsResponse{}), nil
}

// Renew implements HostRegistryService: a new certificate and token; the
// old token stops working.
func (r *Registry) Renew(_ context.Context, req *connect.Request[hostagentv1.RenewRequest]) (*connect.Response[hostagentv1.RenewResponse], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, old, err := r.host(req.Header())
	if err != nil {
		return nil, err
	}
	if r.renewErr != nil {
		return nil, r.renewErr
	}
	cert, err := r.CA.SignCSR(req.Msg.GetCsrPem(), h.ID, 30*24*time.Hour)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	h.CertPEM = cert
	h.Renewals++
	h.CSRs++
	delete(r.hostTokens, old)
	tok := "wrh_" + randHex(16)
	r.hostTokens[tok] = h.ID
	// Renewed: nothing is due until the test says so again.
	r.renewAfter = time.Time{}
	return connect.NewResponse(&hostagentv1.RenewResponse{
		HostToken: tok, HostTokenExpiresAtUnixMs: time.Now().Add(90 * 24 * time.Hour).UnixMilli(),
		CertificatePem: cert, CaPem: r.CA.PEM,
	}), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
