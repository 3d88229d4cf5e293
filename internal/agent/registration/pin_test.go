package registration_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// newClient is a registry client trusting caPEM besides the system roots,
// as the agent builds for heartbeats and renewal after registering.
func newClient(t *testing.T, cpURL string, caPEM []byte) hostagentv1connect.HostRegistryServiceClient {
	t.Helper()
	c, err := registration.NewClient(cpURL, capin.Trust{CAPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startWith(t *testing.T, cpURL, token string, log *slog.Logger) (*registration.Store, registration.Credentials, error) {
	t.Helper()
	store := registration.NewStore(t.TempDir())
	c, err := registration.Start(context.Background(), registration.StartConfig{
		Store: store, Token: token, Address: "127.0.0.1:50051", CPURL: cpURL,
		Specs: &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 2}, Logger: log,
	})
	return store, c, err
}

// An agent registers over HTTPS with a control plane whose certificate no
// system root trusts, by the CA fingerprint its token carries, and keeps
// talking to it (heartbeat, renewal) by the CA it saved.
func TestRegisterOverTLSWithPinnedToken(t *testing.T) {
	cp := cptest.NewRegistry(t)
	url := cp.ServeTLS(t)
	tok := cp.NewPinnedRegistrationToken()
	secret, _, _ := strings.Cut(tok, ".")

	store, c, err := startWith(t, url, tok, nil)
	if err != nil {
		t.Fatalf("register over TLS with a pinned token: %v", err)
	}
	if got := cp.ReceivedTokens(); len(got) != 1 || got[0] != secret {
		t.Errorf("the control plane received %q, want only the secret %q (the pin is the agent's)", got, secret)
	}
	saved, err := os.ReadFile(filepath.Join(store.Dir(), registration.CAFile))
	if err != nil || !bytes.Equal(saved, cp.CA.PEM) {
		t.Errorf("ca.crt = %q (%v), want the pinned CA", saved, err)
	}

	id := &registration.Identity{}
	if err := id.Set(c); err != nil {
		t.Fatal(err)
	}
	cp.SetRenewAfter(time.Now().Add(-time.Minute))
	hb := registration.NewHeartbeater(registration.HeartbeatConfig{
		Client: newClient(t, url, c.CAPEM), Store: store, Identity: id, Status: fakeStatus{},
	})
	if err := hb.Beat(context.Background()); err != nil {
		t.Fatalf("heartbeat and renewal over TLS by the saved CA: %v", err)
	}
	if h, _ := cp.Host(c.HostID); len(h.Heartbeats) != 1 || h.Renewals != 1 {
		t.Errorf("heartbeats %d renewals %d, want 1 and 1", len(h.Heartbeats), h.Renewals)
	}

	// Without the saved CA (or a pin) nothing trusts this control plane.
	if err := registration.NewHeartbeater(registration.HeartbeatConfig{
		Client: newClient(t, url, nil), Store: store, Identity: id, Status: fakeStatus{},
	}).Beat(context.Background()); err == nil {
		t.Error("a client trusting only the system roots reached a self-signed control plane")
	}
}

// A man in the middle with a CA of its own, over HTTPS: the agent holding a
// token pinned to the real CA refuses the handshake, so the impostor never
// sees the token, and nothing is saved.
func TestRegisterOverTLSRefusesAnotherCA(t *testing.T) {
	real := cptest.NewRegistry(t)
	mitm := cptest.NewRegistry(t)
	mitmURL := mitm.ServeTLS(t)
	tok := real.NewPinnedRegistrationToken()
	secret, _, _ := strings.Cut(tok, ".")
	mitm.AcceptToken(secret) // it would accept (and relay) it if it got it

	store, _, err := startWith(t, mitmURL, tok, nil)
	if err == nil {
		t.Fatal("registered with a control plane whose CA is not the pinned one")
	}
	if !errors.Is(err, capin.ErrMismatch) || !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("err = %v, want capin.ErrMismatch and PermissionDenied", err)
	}
	if !strings.Contains(err.Error(), real.CA.Fingerprint()) {
		t.Errorf("err = %v, want it to name the pinned fingerprint %s", err, real.CA.Fingerprint())
	}
	if got := mitm.ReceivedTokens(); len(got) != 0 {
		t.Errorf("the impostor received the registration token: %q", got)
	}
	if _, err := store.Load(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a refused registration left credentials: %v", err)
	}
}

// Over plain HTTP nothing hides the token, but the agent still refuses to
// trust a CA other than the pinned one: a man in the middle answering with
// its own CA gets no host that admits it.
func TestRegisterOverHTTPRefusesAnotherCA(t *testing.T) {
	real := cptest.NewRegistry(t)
	mitm := cptest.NewRegistry(t)
	mitmURL := mitm.Serve(t)
	tok := real.NewPinnedRegistrationToken()
	secret, _, _ := strings.Cut(tok, ".")
	mitm.AcceptToken(secret)

	store, _, err := startWith(t, mitmURL, tok, nil)
	if !errors.Is(err, capin.ErrMismatch) || !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("err = %v, want capin.ErrMismatch and PermissionDenied", err)
	}
	if _, err := store.Load(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a refused registration left credentials: %v", err)
	}

	// The real control plane, over plain HTTP, passes the same check.
	if _, _, err := startWith(t, real.Serve(t), real.NewPinnedRegistrationToken(), nil); err != nil {
		t.Errorf("pinned registration over HTTP with the right CA: %v", err)
	}
}

// A token from a control plane before pinning still registers (over HTTP),
// with a warning; over HTTPS to a self-signed control plane it cannot, and
// the error says what to do.
func TestRegisterWithoutPin(t *testing.T) {
	cp := cptest.NewRegistry(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if _, _, err := startWith(t, cp.Serve(t), cp.NewRegistrationToken(), log); err != nil {
		t.Fatalf("unpinned token over HTTP: %v", err)
	}
	if !strings.Contains(logs.String(), "no CA fingerprint") {
		t.Errorf("no warning about the missing pin in %q", logs.String())
	}
	// Plain HTTP to this machine crosses no network: no warning; to
	// another, a warning (the registration itself fails here: nothing
	// listens at 192.0.2.1).
	if strings.Contains(logs.String(), "plain HTTP") {
		t.Errorf("warned about plain HTTP on loopback: %q", logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _ = registration.Start(ctx, registration.StartConfig{
		Store: registration.NewStore(t.TempDir()), Token: cp.NewPinnedRegistrationToken(), Address: "127.0.0.1:50051",
		CPURL: "http://192.0.2.1:8000", Logger: log,
	})
	if !strings.Contains(logs.String(), "plain HTTP") {
		t.Errorf("no warning about plain HTTP beyond loopback in %q", logs.String())
	}

	tlsURL := cp.ServeTLS(t)
	before := len(cp.ReceivedTokens())
	_, _, err := startWith(t, tlsURL, cp.NewRegistrationToken(), nil)
	if err == nil || !strings.Contains(err.Error(), "CA fingerprint") {
		t.Errorf("unpinned token over HTTPS to a self-signed control plane: %v, want a refusal naming the CA fingerprint", err)
	}
	if len(cp.ReceivedTokens()) != before {
		t.Error("the token was sent to a server nothing verified")
	}
}

// Renewal cannot change the CA the agent trusts: an answer carrying
// another CA (a man in the middle of plain HTTP) is refused and the old
// credentials stay in force and on disk.
func TestRenewRefusesAnotherCA(t *testing.T) {
	a := startAgent(t)
	old, _ := a.identity.Credentials()
	a.cp.SetCA(cptest.NewCA(t, "impostor CA"))
	a.cp.SetRenewAfter(a.clock.Now().Add(-time.Second))
	err := a.hb.Beat(context.Background())
	if !errors.Is(err, capin.ErrMismatch) || !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("renewal with another CA: %v, want capin.ErrMismatch and PermissionDenied", err)
	}
	if c, _ := a.identity.Credentials(); !bytes.Equal(c.CAPEM, old.CAPEM) || c.Token != old.Token {
		t.Error("the credentials in force changed")
	}
	if c, err := a.store.Load(); err != nil || !bytes.Equal(c.CAPEM, old.CAPEM) {
		t.Errorf("the credentials on disk changed (%v)", err)
	}
}

func TestRegisterRefusesMalformedPin(t *testing.T) {
	cp := cptest.NewRegistry(t)
	for _, tok := range []string{cp.NewRegistrationToken() + ".abc", cp.NewRegistrationToken() + ".", ".0123"} {
		if _, _, err := startWith(t, cp.Serve(t), tok, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("token %q: err = %v, want InvalidArgument", tok, err)
		}
	}
	if got := cp.ReceivedTokens(); len(got) != 0 {
		t.Errorf("malformed tokens were sent: %q", got)
	}
}
