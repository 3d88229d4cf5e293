package rest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"regexp"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// hostsEnv is the API with the host registry mounted as in wrenn-cp, and
// a registry client playing the agent.
type hostsEnv struct {
	*testEnv
	registry hostagentv1connect.HostRegistryServiceClient
}

func newHostsEnv(t *testing.T) *hostsEnv {
	t.Helper()
	e := newTestEnv(t, func(d *Deps) {
		ca, err := hostreg.LoadOrCreateCA(context.Background(), store.New(d.Pool), d.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		d.RegistryPath, d.Registry = hostreg.New(d.Pool, ca, d.Clock, d.Logger).Handler()
	})
	return &hostsEnv{testEnv: e, registry: hostagentv1connect.NewHostRegistryServiceClient(e.Srv.Client(), e.Srv.URL)}
}

// memberOf signs up a user and makes them a plain member of team; the
// returned credential and header act as them in that team.
func (e *testEnv) memberOf(t *testing.T, team testTeam) (string, http.Header) {
	t.Helper()
	m := e.newTeam(t, "member's own")
	e.doJSON(t, http.MethodPost, "/v1/teams/"+team.ID.String()+"/members", team.JWT,
		map[string]string{"email": m.Email, "role": "member"}, http.StatusCreated, nil)
	return m.JWT, http.Header{"X-Wrenn-Team": {team.ID.String()}}
}

func (e *testEnv) createHost(t *testing.T, cred, typ string) api.CreatedHost {
	t.Helper()
	var out api.CreatedHost
	e.doJSON(t, http.MethodPost, "/v1/hosts", cred, map[string]string{"type": typ}, http.StatusCreated, &out)
	return out
}

func (e *testEnv) addSandboxRow(t *testing.T, team testTeam, host uuid.UUID, id, state string) {
	t.Helper()
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO sandboxes
		(id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout)
		VALUES ($1, $2, $3, 'minimal', $4, 1, 512, 1024, 300, 'kill')`, id, team.ID, host, state); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) sandboxStateOf(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := e.Pool.QueryRow(context.Background(), "SELECT state FROM sandboxes WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// register plays the agent: it registers with tok and returns its
// credential.
func (e *hostsEnv) register(t *testing.T, tok string) (string, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.registry.Register(context.Background(), connect.NewRequest(&hostagentv1.RegisterRequest{
		RegistrationToken: tok, Address: "127.0.0.1:50051",
		Specs:  &hostagentv1.HostSpecs{Arch: "amd64", Cpus: 4, MemoryBytes: 8 << 30, Vmm: "qemu", AgentVersion: "test"},
		CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
	}))
	if err != nil {
		return "", err
	}
	return resp.Msg.HostToken, nil
}

func (e *hostsEnv) heartbeat(cred string) error {
	req := connect.NewRequest(&hostagentv1.HeartbeatRequest{})
	req.Header().Set("Authorization", "Bearer "+cred)
	_, err := e.registry.Heartbeat(context.Background(), req)
	return err
}

// auditActions lists the team's host audit entries as "action outcome".
func (e *testEnv) auditActions(t *testing.T, team uuid.UUID) []string {
	t.Helper()
	rows, err := e.Pool.Query(context.Background(),
		"SELECT action || ' ' || outcome FROM audit_logs WHERE team_id = $1 AND resource_type = 'host' ORDER BY id", team)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

var registrationTokenRE = regexp.MustCompile(`^wrr_[0-9a-f]{32}$`)

func TestHostsCreateListGet(t *testing.T) {
	e := newHostsEnv(t)
	a, _ := e.newPlatformAdmin(t, "a") // regular hosts need platform rights

	created := e.createHost(t, a.Key, "byoc")
	if !registrationTokenRE.MatchString(created.RegistrationToken) {
		t.Errorf("registration token %q: want wrr_ + 32 hex", created.RegistrationToken)
	}
	if want := e.Clock.Now().Add(time.Hour); !created.RegistrationExpiresAt.Equal(want) {
		t.Errorf("registration expires %v, want %v", created.RegistrationExpiresAt, want)
	}
	h := created.Host
	if h.Status != api.HostStatusPending || h.Type != api.HostTypeByoc || h.Address != nil || h.LastHeartbeatAt != nil {
		t.Errorf("new host %+v", h)
	}
	regular := e.createHost(t, a.JWT, "regular").Host // a platform admin's session may too

	var list struct{ Hosts []api.Host }
	e.doJSON(t, http.MethodGet, "/v1/hosts", a.Key, nil, http.StatusOK, &list)
	if len(list.Hosts) != 2 || list.Hosts[0].Id != h.Id || list.Hosts[1].Id != regular.Id {
		t.Fatalf("listing %+v, want the two hosts in creation order", list.Hosts)
	}

	// Registered, with a running and a paused sandbox.
	if _, err := e.register(t, created.RegistrationToken); err != nil {
		t.Fatal(err)
	}
	e.addSandboxRow(t, a, h.Id, "sb-run", "running")
	e.addSandboxRow(t, a, h.Id, "sb-paused", "paused")
	var got api.Host
	e.doJSON(t, http.MethodGet, "/v1/hosts/"+h.Id.String(), a.Key, nil, http.StatusOK, &got)
	if got.Status != api.HostStatusOnline || got.Address == nil || *got.Address != "127.0.0.1:50051" ||
		got.Cpus == nil || *got.Cpus != 4 || got.Vmm == nil || *got.Vmm != "qemu" || got.LastHeartbeatAt == nil {
		t.Errorf("registered host %+v", got)
	}
	if got.SandboxesRunning == nil || *got.SandboxesRunning != 1 {
		t.Errorf("sandboxes_running = %v, want 1", got.SandboxesRunning)
	}

	for _, tc := range []struct {
		name string
		body any
	}{
		{"unknown type", map[string]string{"type": "gpu"}},
		{"no type", map[string]string{}},
		{"unknown field", map[string]string{"type": "byoc", "name": "x"}},
		{"no body", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.do(t, http.MethodPost, "/v1/hosts", a.Key, tc.body), http.StatusBadRequest, "invalid_argument")
		})
	}
	wantError(t, e.do(t, http.MethodGet, "/v1/hosts/not-a-uuid", a.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodGet, "/v1/hosts/"+uuid.NewString(), a.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodGet, "/v1/hosts", "", nil), http.StatusUnauthorized, "unauthenticated")
}

func TestHostsMembersMayOnlyLook(t *testing.T) {
	e := newHostsEnv(t)
	a := e.newTeam(t, "a")
	h := e.createHost(t, a.Key, "byoc").Host
	member, hdr := e.memberOf(t, a)
	path := "/v1/hosts/" + h.Id.String()

	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/v1/hosts"},
		{http.MethodDelete, path},
		{http.MethodPost, path + "/token"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var body any
			if tc.path == "/v1/hosts" {
				body = map[string]string{"type": "byoc"}
			}
			wantError(t, e.doHeader(t, tc.method, tc.path, member, body, hdr), http.StatusForbidden, "permission_denied")
		})
	}
	if resp := e.doHeader(t, http.MethodGet, path, member, nil, hdr); resp.StatusCode != http.StatusOK {
		t.Errorf("member GET host: %d", resp.StatusCode)
	}
	if resp := e.doHeader(t, http.MethodGet, "/v1/hosts", member, nil, hdr); resp.StatusCode != http.StatusOK {
		t.Errorf("member GET hosts: %d", resp.StatusCode)
	}
	// Still there, refusals audited.
	e.doJSON(t, http.MethodGet, path, a.Key, nil, http.StatusOK, nil)
	want := []string{"create success", "create failure", "delete failure", "regenerate_token failure"}
	if got := e.auditActions(t, a.ID); !equalStrings(got, want) {
		t.Errorf("audit %q, want %q", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHostsOtherTeamSeesNothing(t *testing.T) {
	e := newHostsEnv(t)
	a, _ := e.newPlatformAdmin(t, "a")
	b := e.newTeam(t, "b")
	h := e.createHost(t, a.Key, "regular").Host
	path := "/v1/hosts/" + h.Id.String()

	wantError(t, e.do(t, http.MethodGet, path, b.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodDelete, path+"?force=true", b.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodPost, path+"/token", b.Key, nil), http.StatusNotFound, "not_found")
	var list struct{ Hosts []api.Host }
	e.doJSON(t, http.MethodGet, "/v1/hosts", b.Key, nil, http.StatusOK, &list)
	if len(list.Hosts) != 0 {
		t.Errorf("team b lists %+v", list.Hosts)
	}
	// A plain member of b is told "not found" too, not "forbidden", and
	// b's audit log never names a's host.
	member, hdr := e.memberOf(t, b)
	wantError(t, e.doHeader(t, http.MethodDelete, path, member, nil, hdr), http.StatusNotFound, "not_found")
	wantError(t, e.doHeader(t, http.MethodPost, path+"/token", member, nil, hdr), http.StatusNotFound, "not_found")
	if got := e.auditActions(t, b.ID); len(got) != 0 {
		t.Errorf("team b's audit log has host entries %q", got)
	}
	var got api.Host
	e.doJSON(t, http.MethodGet, path, a.Key, nil, http.StatusOK, &got)
	if got.Status != api.HostStatusPending {
		t.Errorf("team b changed team a's host: %+v", got)
	}
}

func TestHostDelete(t *testing.T) {
	e := newHostsEnv(t)
	a := e.newTeam(t, "a")
	created := e.createHost(t, a.Key, "byoc")
	h := created.Host
	cred, err := e.register(t, created.RegistrationToken)
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/hosts/" + h.Id.String()
	// Before the sandboxes exist: a heartbeat would reconcile them away.
	if err := e.heartbeat(cred); err != nil {
		t.Fatalf("heartbeat before delete: %v", err)
	}
	for id, state := range map[string]string{
		"sb-running": "running", "sb-paused": "paused", "sb-hibernated": "hibernated",
		"sb-missing": "missing", "sb-starting": "starting", "sb-stopped": "stopped", "sb-error": "error",
	} {
		e.addSandboxRow(t, a, h.Id, id, state)
	}

	wantError(t, e.do(t, http.MethodDelete, path, a.Key, nil), http.StatusConflict, "failed_precondition")
	wantError(t, e.do(t, http.MethodDelete, path+"?force=false", a.Key, nil), http.StatusConflict, "failed_precondition")
	wantError(t, e.do(t, http.MethodDelete, path+"?force=maybe", a.Key, nil), http.StatusBadRequest, "invalid_argument")
	if e.sandboxStateOf(t, "sb-running") != "running" {
		t.Fatal("a refused delete changed sandboxes")
	}

	if resp := e.do(t, http.MethodDelete, path+"?force=true", a.Key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("forced delete: %d", resp.StatusCode)
	}
	for id, want := range map[string]string{
		"sb-running": "stopped", "sb-paused": "stopped", "sb-hibernated": "stopped",
		"sb-missing": "stopped", "sb-starting": "stopped", "sb-stopped": "stopped", "sb-error": "error",
	} {
		if got := e.sandboxStateOf(t, id); got != want {
			t.Errorf("sandbox %s: %s, want %s", id, got, want)
		}
	}
	wantError(t, e.do(t, http.MethodGet, path, a.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodDelete, path, a.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, http.MethodPost, path+"/token", a.Key, nil), http.StatusNotFound, "not_found")
	var list struct{ Hosts []api.Host }
	e.doJSON(t, http.MethodGet, "/v1/hosts", a.Key, nil, http.StatusOK, &list)
	if len(list.Hosts) != 0 {
		t.Errorf("deleted host listed: %+v", list.Hosts)
	}
	// The agent learns it on its next heartbeat and stops serving.
	if err := e.heartbeat(cred); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("heartbeat of a deleted host: %v, want not_found", err)
	}

	// A host without active sandboxes needs no force.
	idle := e.createHost(t, a.Key, "byoc").Host
	e.addSandboxRow(t, a, idle.Id, "sb-idle-stopped", "stopped")
	if resp := e.do(t, http.MethodDelete, "/v1/hosts/"+idle.Id.String(), a.Key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete idle host: %d", resp.StatusCode)
	}

	// Refusals are audited; not-found answers are not (the id may be
	// another team's).
	want := []string{"create success", "delete failure", "delete failure", "delete failure", "delete success",
		"create success", "delete success"}
	if got := e.auditActions(t, a.ID); !equalStrings(got, want) {
		t.Errorf("audit %q, want %q", got, want)
	}
}

func TestHostTokenRegenerate(t *testing.T) {
	e := newHostsEnv(t)
	a := e.newTeam(t, "a")
	created := e.createHost(t, a.Key, "byoc")
	path := "/v1/hosts/" + created.Host.Id.String() + "/token"

	e.Clock.Advance(10 * time.Minute)
	var again api.CreatedHost
	e.doJSON(t, http.MethodPost, path, a.Key, nil, http.StatusCreated, &again)
	if !registrationTokenRE.MatchString(again.RegistrationToken) || again.RegistrationToken == created.RegistrationToken {
		t.Fatalf("regenerated token %q", again.RegistrationToken)
	}
	if want := e.Clock.Now().Add(time.Hour); !again.RegistrationExpiresAt.Equal(want) {
		t.Errorf("expires %v, want %v", again.RegistrationExpiresAt, want)
	}
	if again.Host.Id != created.Host.Id {
		t.Errorf("host %v, want %v", again.Host.Id, created.Host.Id)
	}
	if _, err := e.register(t, created.RegistrationToken); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("old token after regenerate: %v, want unauthenticated", err)
	}
	cred, err := e.register(t, again.RegistrationToken)
	if err != nil {
		t.Fatalf("new token: %v", err)
	}

	// A registered host can be re-enrolled: the new registration revokes
	// the credential it had.
	var third api.CreatedHost
	e.doJSON(t, http.MethodPost, path, a.Key, nil, http.StatusCreated, &third)
	if third.Host.Status != api.HostStatusOnline {
		t.Errorf("status %s: a new token must not take a registered host offline", third.Host.Status)
	}
	if err := e.heartbeat(cred); err != nil {
		t.Errorf("credential before re-registration: %v", err)
	}
	cred2, err := e.register(t, third.RegistrationToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.heartbeat(cred); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("credential after re-registration: %v, want unauthenticated", err)
	}
	if err := e.heartbeat(cred2); err != nil {
		t.Errorf("new credential: %v", err)
	}

	wantError(t, e.do(t, http.MethodPost, "/v1/hosts/"+uuid.NewString()+"/token", a.Key, nil), http.StatusNotFound, "not_found")
}
