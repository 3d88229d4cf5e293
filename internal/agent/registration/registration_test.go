package registration_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"github.com/wrenn/wrenn/internal/clocktest"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/agent/rpc"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

var allFiles = []string{registration.KeyFile, registration.CertFile, registration.CAFile,
	registration.TokenFile, registration.HostIDFile, registration.StateFile}

// register registers a fresh WRENN_DIR with the fake control plane.
func register(t *testing.T, cp *cptest.Registry, cpURL, address string) (*registration.Store, registration.Credentials) {
	t.Helper()
	store := registration.NewStore(t.TempDir())
	c, err := registration.Start(context.Background(), registration.StartConfig{
		Store: store, Token: cp.NewRegistrationToken(), Address: address, CPURL: cpURL,
		Specs: &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 2},
	})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return store, c
}

func leaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegister(t *testing.T) {
	cp := cptest.NewRegistry(t)
	url := cp.Serve(t)
	store, c := register(t, cp, url, "127.0.0.1:50051")

	for _, name := range allFiles {
		fi, err := os.Stat(filepath.Join(store.Dir(), name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, err := os.ReadDir(store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(allFiles) {
		t.Errorf("WRENN_DIR holds %d entries, want exactly the %d credential files (no temporary leftovers)", len(entries), len(allFiles))
	}

	h, ok := cp.Host(c.HostID)
	if !ok || h.Address != "127.0.0.1:50051" || h.Specs.GetArch() != "amd64" {
		t.Fatalf("control plane knows %+v", h)
	}
	cert := leaf(t, c.CertPEM)
	if cert.Subject.CommonName != c.HostID || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("certificate CN %q SANs %v, want the host id and 127.0.0.1", cert.Subject.CommonName, cert.IPAddresses)
	}
	token, _ := os.ReadFile(filepath.Join(store.Dir(), registration.TokenFile))
	if string(token) != c.Token+"\n" || c.Token == "" {
		t.Errorf("host-token = %q, want the issued token", token)
	}

	t.Run("DNS address", func(t *testing.T) {
		_, c := register(t, cp, url, "agent-7.internal:50051")
		if cert := leaf(t, c.CertPEM); len(cert.DNSNames) != 1 || cert.DNSNames[0] != "agent-7.internal" || len(cert.IPAddresses) != 0 {
			t.Errorf("SANs %v %v, want the DNS name only", cert.DNSNames, cert.IPAddresses)
		}
	})
	t.Run("token is one-time", func(t *testing.T) {
		tok := cp.NewRegistrationToken()
		cfg := registration.StartConfig{Store: registration.NewStore(t.TempDir()), Token: tok, Address: "127.0.0.1:1", CPURL: url}
		if _, err := registration.Start(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Store = registration.NewStore(t.TempDir())
		_, err := registration.Start(context.Background(), cfg)
		if !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("second use = %v, want Unauthenticated", err)
		}
		if _, err := cfg.Store.Load(); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("a failed registration left credentials: %v", err)
		}
	})
	t.Run("the same token again uses the saved credentials", func(t *testing.T) {
		// A unit restarted with the spent token still in its environment
		// file: no second registration (which the control plane refuses),
		// the saved host instead.
		tok := cp.NewRegistrationToken()
		cfg := registration.StartConfig{Store: registration.NewStore(t.TempDir()), Token: tok, Address: "127.0.0.1:1", CPURL: url}
		first, err := registration.Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := registration.Start(context.Background(), cfg)
		if err != nil {
			t.Fatalf("restart with the spent token: %v", err)
		}
		if again.HostID != first.HostID || again.Token != first.Token {
			t.Errorf("restart gave host %s, want the saved %s", again.HostID, first.HostID)
		}
		// Another (fresh) token still registers anew.
		cfg.Token = cp.NewRegistrationToken()
		other, err := registration.Start(context.Background(), cfg)
		if err != nil || other.HostID == first.HostID {
			t.Errorf("a new token: host %s, %v; want a new registration", other.HostID, err)
		}
	})
	t.Run("needs an address and a URL", func(t *testing.T) {
		_, err := registration.Start(context.Background(), registration.StartConfig{
			Store: registration.NewStore(t.TempDir()), Token: "x", CPURL: url})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("err = %v, want InvalidArgument", err)
		}
	})
}

func TestLaterStart(t *testing.T) {
	cp := cptest.NewRegistry(t)
	url := cp.Serve(t)
	store, first := register(t, cp, url, "127.0.0.1:50051")
	ctx := context.Background()

	got, err := registration.Start(ctx, registration.StartConfig{Store: store})
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if got.HostID != first.HostID || got.Token != first.Token || got.Address != first.Address || got.CPURL != url ||
		string(got.KeyPEM) != string(first.KeyPEM) || string(got.CertPEM) != string(first.CertPEM) || got.TokenExpiresAt.IsZero() {
		t.Errorf("loaded %+v\nwant   %+v", got, first)
	}

	t.Run("same address given again", func(t *testing.T) {
		if _, err := registration.Start(ctx, registration.StartConfig{Store: store, Address: "127.0.0.1:50051"}); err != nil {
			t.Error(err)
		}
	})
	t.Run("new control plane URL is saved", func(t *testing.T) {
		if _, err := registration.Start(ctx, registration.StartConfig{Store: store, CPURL: "http://cp.internal:8000"}); err != nil {
			t.Fatal(err)
		}
		c, err := store.Load()
		if err != nil || c.CPURL != "http://cp.internal:8000" || c.Token != first.Token {
			t.Errorf("after URL change: %+v, %v", c, err)
		}
	})
	t.Run("new address needs registering again", func(t *testing.T) {
		_, err := registration.Start(ctx, registration.StartConfig{Store: store, Address: "10.9.9.9:50051"})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("err = %v, want FailedPrecondition", err)
		}
	})
	t.Run("not registered", func(t *testing.T) {
		_, err := registration.Start(ctx, registration.StartConfig{Store: registration.NewStore(t.TempDir())})
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("err = %v, want NotFound", err)
		}
	})
	t.Run("incomplete set", func(t *testing.T) {
		dir := t.TempDir()
		for _, name := range allFiles {
			b, _ := os.ReadFile(filepath.Join(store.Dir(), name))
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		os.Remove(filepath.Join(dir, registration.KeyFile))
		_, err := registration.Start(ctx, registration.StartConfig{Store: registration.NewStore(dir)})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("err = %v, want FailedPrecondition", err)
		}
	})
}

// fakeStatus is a fixed host reading.
type fakeStatus struct{}

func (fakeStatus) Collect(context.Context) (hostinfo.Status, error) {
	return hostinfo.Status{
		Specs:      &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 4},
		Usage:      &hostagentv1.HostUsage{SandboxesRunning: 2},
		Templates:  []*hostagentv1.Template{{Name: "minimal"}},
		SandboxIDs: []string{"sb1", "sb2"},
	}, nil
}

// fakeClock moves only when the test says so.
type fakeClock = clocktest.Clock

// agent is a registered agent serving TLS with its identity, with a
// heartbeater that closes the server when revoked.
type agent struct {
	store    *registration.Store
	identity *registration.Identity
	hb       *registration.Heartbeater
	url      string
	revoked  chan error
	cp       *cptest.Registry
	clock    *fakeClock
	// cpTLS is the control plane's client TLS.
	cpTLS *tls.Config
	// destroyed records the heartbeater's Destroy calls; destroyErr is
	// what they return for an id.
	mu         sync.Mutex
	destroyed  []string
	destroyErr map[string]error
}

func startAgent(t *testing.T) *agent {
	t.Helper()
	cp := cptest.NewRegistry(t)
	cpURL := cp.Serve(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	store, c := register(t, cp, cpURL, ln.Addr().String())
	a := &agent{store: store, identity: &registration.Identity{}, url: "https://" + ln.Addr().String(),
		revoked: make(chan error, 1), cp: cp, clock: clocktest.New(time.Now()), cpTLS: cp.CA.ClientTLS(t, rpc.ControlPlaneCN)}
	if err := a.identity.Set(c); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv := rpc.NewServer(h, rpc.ServerTLSConfig(a.identity), log)
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	a.hb = registration.NewHeartbeater(registration.HeartbeatConfig{
		Client: newClient(t, cpURL, c.CAPEM), Store: store, Identity: a.identity, Status: fakeStatus{},
		Interval: time.Millisecond, Clock: a.clock, Logger: log,
		OnRevoked: func(reason error) {
			_ = srv.Close()
			a.revoked <- reason
		},
		Destroy: func(_ context.Context, id string) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.destroyed = append(a.destroyed, id)
			return a.destroyErr[id]
		},
	})
	return a
}

// call reaches the agent as the control plane does and returns the
// serving certificate.
func (a *agent) call() (*x509.Certificate, error) {
	tr := &http.Transport{TLSClientConfig: a.cpTLS, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(a.url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	return res.TLS.PeerCertificates[0], nil
}

func TestHeartbeat(t *testing.T) {
	a := startAgent(t)
	c, _ := a.identity.Credentials()
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Fatalf("beat: %v", err)
	}
	h, _ := a.cp.Host(c.HostID)
	if len(h.Heartbeats) != 1 {
		t.Fatalf("control plane saw %d heartbeats", len(h.Heartbeats))
	}
	hb := h.Heartbeats[0]
	if hb.GetSpecs().GetCpus() != 4 || hb.GetUsage().GetSandboxesRunning() != 2 || len(hb.GetSandboxIds()) != 2 || hb.GetTemplates()[0].GetName() != "minimal" {
		t.Errorf("heartbeat = %v", hb)
	}
	if h.Renewals != 0 {
		t.Error("renewed although nothing was due")
	}
}

// TestHeartbeatDestroysOrphans: the sandboxes a heartbeat answer names
// are destroyed, each once per answer, and a failure (or one already
// gone) neither fails the heartbeat nor stops the others.
func TestHeartbeatDestroysOrphans(t *testing.T) {
	a := startAgent(t)
	a.cp.SetDestroy([]string{"gone-1", "already-gone", "fails", "gone-2"})
	a.destroyErr = map[string]error{
		"already-gone": errdefs.New(errdefs.ErrNotFound, "no sandbox already-gone"),
		"fails":        errors.New("disk on fire"),
	}
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Fatalf("beat: %v", err)
	}
	a.mu.Lock()
	got := slices.Clone(a.destroyed)
	a.mu.Unlock()
	if want := []string{"gone-1", "already-gone", "fails", "gone-2"}; !slices.Equal(got, want) {
		t.Fatalf("destroyed %v, want %v", got, want)
	}
	a.cp.SetDestroy(nil)
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Fatalf("beat: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.destroyed) != 4 {
		t.Fatalf("an answer naming nothing destroyed %v", a.destroyed[4:])
	}
}

func TestHeartbeatRuns(t *testing.T) {
	a := startAgent(t)
	c, _ := a.identity.Credentials()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.hb.Run(ctx) }()
	for {
		if h, _ := a.cp.Host(c.HostID); len(h.Heartbeats) >= 3 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v, want nil after cancel", err)
	}
}

func TestRenew(t *testing.T) {
	a := startAgent(t)
	old, _ := a.identity.Credentials()
	before, err := a.call()
	if err != nil {
		t.Fatalf("call before renewal: %v", err)
	}

	// Due in the future: nothing happens.
	a.cp.SetRenewAfter(a.clock.Now().Add(time.Hour))
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.cp.Host(old.HostID); h.Renewals != 0 {
		t.Fatal("renewed before due")
	}

	t.Run("failed renewal keeps the old credentials", func(t *testing.T) {
		a.cp.SetRenewAfter(a.clock.Now().Add(-time.Second))
		a.cp.FailRenewals(connect.NewError(connect.CodeUnavailable, errors.New("database down")))
		defer a.cp.FailRenewals(nil)
		if err := a.hb.Beat(context.Background()); err == nil {
			t.Fatal("beat hid the failed renewal")
		}
		if c, err := a.store.Load(); err != nil || c.Token != old.Token {
			t.Errorf("credentials on disk changed: %v", err)
		}
		if c, _ := a.identity.Credentials(); c.Token != old.Token {
			t.Error("credentials in force changed")
		}
	})

	a.cp.SetRenewAfter(a.clock.Now().Add(-time.Second))
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Fatalf("beat with renewal due: %v", err)
	}
	h, _ := a.cp.Host(old.HostID)
	if h.Renewals != 1 {
		t.Fatalf("renewals = %d, want 1", h.Renewals)
	}
	renewed, err := a.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Token == old.Token || string(renewed.CertPEM) != string(h.CertPEM) || string(renewed.KeyPEM) != string(old.KeyPEM) {
		t.Error("disk does not hold the new token and certificate for the same key")
	}
	after, err := a.call()
	if err != nil {
		t.Fatalf("call after renewal: %v", err)
	}
	if after.SerialNumber.Cmp(before.SerialNumber) == 0 || after.SerialNumber.Cmp(leaf(t, h.CertPEM).SerialNumber) != 0 {
		t.Errorf("server presents serial %v, want the renewed %v (was %v)", after.SerialNumber, leaf(t, h.CertPEM).SerialNumber, before.SerialNumber)
	}
	// The old token is retired at the control plane; heartbeats go on with
	// the new one.
	if err := a.hb.Beat(context.Background()); err != nil {
		t.Errorf("beat after renewal: %v", err)
	}
}

func TestRevoked(t *testing.T) {
	a := startAgent(t)
	c, _ := a.identity.Credentials()
	if _, err := a.call(); err != nil {
		t.Fatalf("call before deletion: %v", err)
	}
	a.cp.Delete(c.HostID)

	err := a.hb.Run(context.Background())
	if !errors.Is(err, registration.ErrRevoked) {
		t.Fatalf("run = %v, want ErrRevoked", err)
	}
	if reason := <-a.revoked; !errors.Is(reason, registration.ErrRevoked) {
		t.Errorf("OnRevoked got %v", reason)
	}
	for _, name := range allFiles {
		if _, err := os.Stat(filepath.Join(a.store.Dir(), name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", name, err)
		}
	}
	if _, ok := a.identity.Credentials(); ok {
		t.Error("identity still in force")
	}
	if _, err := a.call(); err == nil {
		t.Error("agent still serves after revocation")
	}
	if _, err := registration.Start(context.Background(), registration.StartConfig{Store: a.store}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("next start = %v, want not registered", err)
	}
}

func TestHeartbeatRejectedToken(t *testing.T) {
	a := startAgent(t)
	c, _ := a.identity.Credentials()
	c.Token = "wrh_forged"
	if err := a.identity.Set(c); err != nil {
		t.Fatal(err)
	}
	err := a.hb.Beat(context.Background())
	if err == nil || errors.Is(err, registration.ErrRevoked) {
		t.Fatalf("beat = %v, want a retryable error", err)
	}
	if _, err := a.store.Load(); err != nil {
		t.Errorf("credentials were dropped on an authentication error: %v", err)
	}
}
