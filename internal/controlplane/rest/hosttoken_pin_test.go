package rest

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

var pinnedTokenRE = regexp.MustCompile(`^wrr_[0-9a-f]{32}\.[0-9a-f]{64}$`)

// Registration tokens carry the cluster CA's fingerprint after a dot, as
// wrenn-cp wires it (Deps.CACertHash), both when a host is added and when
// its token is re-issued; the registry takes the whole string.
func TestRegistrationTokenCarriesCAFingerprint(t *testing.T) {
	var fingerprint string
	te := newTestEnv(t, func(d *Deps) {
		ca, err := hostreg.LoadOrCreateCA(context.Background(), store.New(d.Pool), d.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		d.RegistryPath, d.Registry = hostreg.New(d.Pool, ca, d.Clock, d.Logger).Handler()
		d.CACertHash = ca.Fingerprint()
		fingerprint = ca.Fingerprint()
	})
	e := &hostsEnv{testEnv: te, registry: hostagentv1connect.NewHostRegistryServiceClient(te.Srv.Client(), te.Srv.URL)}
	a := e.newTeam(t, "a")

	created := e.createHost(t, a.Key, "byoc")
	check := func(tok string) {
		t.Helper()
		if !pinnedTokenRE.MatchString(tok) {
			t.Fatalf("registration token %q: want wrr_<32 hex>.<64 hex>", tok)
		}
		if _, pin, err := capin.SplitToken(tok); err != nil || pin != fingerprint {
			t.Fatalf("token pin %q (%v), want the CA fingerprint %s", pin, err, fingerprint)
		}
	}
	check(created.RegistrationToken)

	var again api.CreatedHost
	e.doJSON(t, http.MethodPost, "/v1/hosts/"+created.Host.Id.String()+"/token", a.Key, nil, http.StatusCreated, &again)
	check(again.RegistrationToken)
	if strings.HasPrefix(again.RegistrationToken, strings.Split(created.RegistrationToken, ".")[0]) {
		t.Error("the re-issued token has the old secret")
	}
	if _, err := e.register(t, again.RegistrationToken); err != nil {
		t.Errorf("register with the whole pinned token: %v", err)
	}
}
