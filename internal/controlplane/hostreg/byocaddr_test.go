package hostreg_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/clocktest"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/pgtest"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return f[host], nil
}

// TestRegisterRefusesInternalBYOCAddress is issue 11 hole 6: a tenant's
// (byoc) agent could register with a loopback, private or link-local
// address (or a name resolving to one) and so make the control plane dial
// the operator's network. Regular hosts, added by the platform admin, may
// be on private networks.
func TestRegisterRefusesInternalBYOCAddress(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	q := store.New(pool)
	clk := clocktest.New(time.Now().Truncate(time.Millisecond))
	ca, err := hostreg.LoadOrCreateCA(ctx, q, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	svc := hostreg.New(pool, ca, clk, slog.New(slog.DiscardHandler))
	svc.RefusePrivateBYOC(fakeResolver{
		"internal.example.com": {netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("10.0.0.8")},
		"public.example.com":   {netip.MustParseAddr("203.0.113.9")},
	})
	path, h := svc.Handler()
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := hostagentv1connect.NewHostRegistryServiceClient(srv.Client(), srv.URL)
	var team [16]byte
	if err := pool.QueryRow(ctx, "INSERT INTO teams (name) VALUES ('t') RETURNING id").Scan(&team); err != nil {
		t.Fatal(err)
	}
	newHost := func(typ string) string {
		tok, hash := hostreg.NewRegistrationToken()
		if _, err := q.CreateHost(ctx, store.CreateHostParams{
			TeamID: team, Type: typ, RegistrationTokenHash: hash, RegistrationExpiresAt: clk.Now().Add(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	register := func(tok, address string) error {
		csr, _ := newCSR(t)
		_, err := client.Register(ctx, connect.NewRequest(&hostagentv1.RegisterRequest{
			RegistrationToken: tok, Address: address, Specs: specs(), CsrPem: csr,
		}))
		return err
	}

	for _, addr := range []string{
		"127.0.0.1:50051", "[::1]:50051", "10.1.2.3:50051", "192.168.1.5:50051", "172.16.0.1:50051",
		"169.254.169.254:80", "[fe80::1]:50051", "100.64.0.1:50051", "[fd00::1]:50051",
		"[::ffff:127.0.0.1]:50051", "internal.example.com:50051",
	} {
		tok := newHost("byoc")
		if err := register(tok, addr); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("byoc host at %s: %v, want invalid_argument", addr, err)
		}
	}
	// The refused token is still usable with an acceptable address.
	tok := newHost("byoc")
	if err := register(tok, "10.0.0.1:50051"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("byoc at 10.0.0.1: %v", err)
	}
	if err := register(tok, "public.example.com:50051"); err != nil {
		t.Errorf("byoc host at a public name: %v", err)
	}
	if err := register(newHost("byoc"), "203.0.113.10:50051"); err != nil {
		t.Errorf("byoc host at a public address: %v", err)
	}
	if err := register(newHost("regular"), "10.1.2.3:50051"); err != nil {
		t.Errorf("regular host at a private address: %v", err)
	}
}
