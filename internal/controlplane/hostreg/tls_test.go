package hostreg_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/controlplane/servetls"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// serveTLS serves the registry over HTTPS with a WRENN_TLS=self-signed
// certificate issued by ca (the cluster's, or an impostor's).
func (e *env) serveTLS(t *testing.T, ca *hostreg.CA) string {
	t.Helper()
	cfg, err := servetls.Config(servetls.Options{Mode: servetls.ModeSelfSigned, Names: servetls.DefaultNames("", "127.0.0.1:0")}, ca, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	path, h := hostreg.New(e.pool, e.ca, e.clk, nil).Handler()
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewUnstartedServer(mux)
	// httptest puts its own certificate in Certificates when that is empty,
	// which would shadow GetCertificate for clients sending no SNI.
	cert, err := cfg.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{*cert}
	srv.TLS = cfg
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// The real agent registration against the real registry served with
// WRENN_TLS=self-signed: a token carrying the cluster CA's fingerprint
// registers; the same token offered to an impostor (another CA in front
// of the very same registry, relaying) is refused before it is sent, so
// it is still unused afterwards.
func TestRegisterOverSelfSignedTLSWithPin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, secret := e.newHost(t)
	tok := capin.JoinToken(secret, e.ca.Fingerprint())
	other, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	start := func(cpURL string) (registration.Credentials, error) {
		return registration.Start(ctx, registration.StartConfig{
			Store: registration.NewStore(t.TempDir()), Token: tok, Address: "192.0.2.10:50051", CPURL: cpURL, Specs: specs(),
		})
	}

	_, err = start(e.serveTLS(t, other))
	if !errors.Is(err, capin.ErrMismatch) {
		t.Fatalf("registration through an impostor's TLS: %v, want capin.ErrMismatch", err)
	}
	if s := e.hostStatus(t, id); s == "online" {
		t.Fatal("the impostor relayed the token: the host registered")
	}

	cpURL := e.serveTLS(t, e.ca)
	c, err := start(cpURL)
	if err != nil {
		t.Fatalf("registration over self-signed TLS with the pinned token: %v", err)
	}
	if c.HostID != id.String() || e.hostStatus(t, id) != "online" {
		t.Errorf("registered host %s (status %s), want %s online", c.HostID, e.hostStatus(t, id), id)
	}
	if err := capin.Check(c.CAPEM, e.ca.Fingerprint()); err != nil {
		t.Errorf("saved CA: %v", err)
	}

	// Later calls trust the saved CA.
	client, err := registration.NewClient(cpURL, capin.Trust{CAPEM: c.CAPEM})
	if err != nil {
		t.Fatal(err)
	}
	req := connect.NewRequest(&hostagentv1.HeartbeatRequest{Specs: specs()})
	req.Header().Set("Authorization", "Bearer "+c.Token)
	if _, err := client.Heartbeat(ctx, req); err != nil {
		t.Errorf("heartbeat over TLS by the saved CA: %v", err)
	}
}

// Agents from before pinning send the whole token; the registry takes the
// secret before the dot and ignores the pin. A malformed pin is a bad token.
func TestRegisterAcceptsTokenCarryingPin(t *testing.T) {
	e := newEnv(t)
	_, secret := e.newHost(t)
	e.register(t, capin.JoinToken(secret, e.ca.Fingerprint()), "192.0.2.11:50051")

	_, secret = e.newHost(t)
	csr, _ := newCSR(t)
	_, err := e.client.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: secret + ".nothex", Address: "192.0.2.12:50051", Specs: specs(), CsrPem: csr,
	}))
	wantCode(t, err, connect.CodeUnauthenticated)
}

func TestFingerprintAndServingCertificate(t *testing.T) {
	ca, err := hostreg.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := capin.Check(ca.CertPEM(), ca.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueServing([]string{"cp.example.com", "10.0.0.5"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || capin.Hash(ca.Certificate()) != ca.Fingerprint() {
		t.Fatalf("chain of %d certificates, want leaf and CA", len(c.Certificate))
	}
	if err := c.Leaf.VerifyHostname("cp.example.com"); err != nil {
		t.Error(err)
	}
	if err := c.Leaf.VerifyHostname("10.0.0.5"); err != nil {
		t.Error(err)
	}
	if c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) > hostreg.ServingCertTTL+time.Hour {
		t.Errorf("serving certificate valid %v", c.Leaf.NotAfter.Sub(c.Leaf.NotBefore))
	}
}
