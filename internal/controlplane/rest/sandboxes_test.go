package rest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// sbEnv is an API server with fake agents, a real envd behind them and one
// team.
type sbEnv struct {
	*testEnv
	agents *fakeAgents
	guest  *guestEnv
	team   testTeam
}

func newSandboxEnv(t testing.TB) *sbEnv {
	t.Helper()
	tt, ok := t.(*testing.T)
	if !ok {
		t.Fatal("newSandboxEnv needs a *testing.T")
	}
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	env := newTestEnv(tt, func(d *Deps) { d.Agents = fa })
	return &sbEnv{testEnv: env, agents: fa, guest: startGuest(t), team: env.newTeam(tt, "sandboxes")}
}

// hostSpec is a host row the tests insert directly (registration is the
// hosts routes' business).
type hostSpec struct {
	team      uuid.UUID
	typ       string
	status    string
	cpus      int
	memory    int64
	available int64
	images    []string
	snapshots []string
	// disk is WRENN_DIR's free space; guestMemory the guest-RAM tmpfs's
	// size and free space (0: not reported).
	disk        int64
	guestMemory int64
}

// addHost inserts an online host of the env's team and serves a fake
// agent for it.
func (e *sbEnv) addHost(t testing.TB, edit ...func(*hostSpec)) *fakeAgent {
	t.Helper()
	h := hostSpec{team: e.team.ID, typ: "regular", status: "online", cpus: 8, memory: 32 << 30, available: 30 << 30, images: []string{"minimal"}, disk: 500 << 30}
	for _, f := range edit {
		f(&h)
	}
	var id uuid.UUID
	err := e.Pool.QueryRow(context.Background(), `INSERT INTO hosts (team_id, type, status, address, cpus, memory_bytes,
		memory_available_bytes, images, snapshot_templates, last_heartbeat_at, disk_available_bytes,
		guest_memory_bytes, guest_memory_available_bytes)
		VALUES ($1, $2, $3, '127.0.0.1:1', $4, $5, $6, $7, $8, now(), $9, $10, $10) RETURNING id`,
		h.team, h.typ, h.status, h.cpus, h.memory, h.available, h.images, append([]string{}, h.snapshots...),
		h.disk, h.guestMemory).Scan(&id)
	if err != nil {
		t.Fatalf("insert host: %v", err)
	}
	a := e.guest.newFakeAgent(t, id)
	e.agents.mu.Lock()
	e.agents.agents[id] = a
	e.agents.mu.Unlock()
	return a
}

// create makes a sandbox through the API.
func (e *sbEnv) create(t *testing.T, body map[string]any) api.Sandbox {
	t.Helper()
	var sb api.Sandbox
	e.doJSON(t, "POST", "/v1/sandboxes", e.team.Key, body, http.StatusCreated, &sb)
	return sb
}

func (e *sbEnv) state(t *testing.T, id string) string {
	t.Helper()
	var st string
	if err := e.Pool.QueryRow(context.Background(), `SELECT state FROM sandboxes WHERE id = $1`, id).Scan(&st); err != nil {
		t.Fatalf("state of %s: %v", id, err)
	}
	return st
}

func TestCreateSandbox(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)

	sb := env.create(t, map[string]any{"metadata": map[string]string{"app": "x"}, "public_ports": []int{8080}})
	if sb.State != api.SandboxStateRunning || sb.AccessToken == nil || *sb.AccessToken == "" {
		t.Fatalf("created: %+v", sb)
	}
	if !templateNameRE.MatchString(sb.Id) || len(sb.Id) != 20 {
		t.Errorf("id %q: want 20 chars the agent accepts", sb.Id)
	}
	if sb.Template != "minimal" || sb.Vcpus != 1 || sb.MemoryMb != 512 || sb.DiskMb != 2048 || sb.TimeoutSec != 300 || sb.OnTimeout != api.Kill {
		t.Errorf("defaults not applied: %+v", sb)
	}
	if sb.Metadata["app"] != "x" || sb.PublicPorts == nil || (*sb.PublicPorts)[0] != 8080 {
		t.Errorf("metadata/public ports: %+v", sb)
	}
	if sb.HostId == nil || *sb.HostId != agent.HostID || !agent.Has(sb.Id) {
		t.Errorf("sandbox not on the agent: host %v", sb.HostId)
	}
	var hash []byte
	if err := env.Pool.QueryRow(context.Background(), `SELECT access_token_hash FROM sandboxes WHERE id = $1`, sb.Id).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte(*sb.AccessToken)); string(hash) != string(want[:]) {
		t.Errorf("stored token hash is not SHA-256 of the token")
	}

	var got api.Sandbox
	env.doJSON(t, "GET", "/v1/sandboxes/"+sb.Id, env.team.Key, nil, http.StatusOK, &got)
	if got.AccessToken != nil || got.Id != sb.Id || got.State != api.SandboxStateRunning {
		t.Errorf("GET shows %+v (the token must not reappear)", got)
	}
}

func TestCreateSandboxValidation(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	tests := []struct {
		name string
		body any
	}{
		{"vcpus zero", map[string]any{"vcpus": 0}},
		{"vcpus too many", map[string]any{"vcpus": 17}},
		{"memory too small", map[string]any{"memory_mb": 64}},
		{"disk too small", map[string]any{"disk_mb": 100}},
		{"timeout zero", map[string]any{"timeout_sec": 0}},
		{"timeout too long", map[string]any{"timeout_sec": 86401}},
		{"bad on_timeout", map[string]any{"on_timeout": "explode"}},
		{"bad template name", map[string]any{"template": "Bad_Name"}},
		{"unknown field", map[string]any{"cpus": 2}},
		{"wrong type", map[string]any{"vcpus": "two"}},
		{"env name with =", map[string]any{"env": map[string]string{"A=B": "c"}}},
		{"empty metadata key", map[string]any{"metadata": map[string]string{"": "c"}}},
		{"long metadata value", map[string]any{"metadata": map[string]string{"k": strings.Repeat("v", 513)}}},
		{"bad cidr", map[string]any{"network": map[string]any{"allow_out": []string{"nope"}}}},
		{"ipv6 cidr", map[string]any{"network": map[string]any{"deny_out": []string{"::1/128"}}}},
		{"envd port public", map[string]any{"public_ports": []int{49983}}},
		{"port zero public", map[string]any{"public_ports": []int{0}}},
		{"not json", []byte("{")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, tt.body), http.StatusBadRequest, "invalid_argument")
		})
	}
	if n := agent.Calls("CreateSandbox"); n != 0 {
		t.Errorf("invalid requests reached the agent %d times", n)
	}
	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"template": "nosuch"}), http.StatusNotFound, "not_found")
}

func TestCreateSandboxNoHost(t *testing.T) {
	env := newSandboxEnv(t)
	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{}), http.StatusNotFound, "not_found")

	// Hosts that exist but cannot take it: offline, another team's byoc,
	// too small.
	other := env.newTeam(t, "other")
	env.addHost(t, func(h *hostSpec) { h.status = "unreachable" })
	env.addHost(t, func(h *hostSpec) { h.typ = "byoc"; h.team = other.ID })
	env.addHost(t, func(h *hostSpec) { h.memory, h.available = 512<<20, 512<<20 })
	resp := env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"memory_mb": 4096})
	wantError(t, resp, http.StatusServiceUnavailable, "unavailable")

	// Reservations come from the store: a host full of sandboxes is full.
	a := env.addHost(t, func(h *hostSpec) { h.cpus, h.memory, h.available = 1, 2<<30, 2<<30 })
	first := env.create(t, map[string]any{"memory_mb": 1536})
	if *first.HostId != a.HostID {
		t.Fatalf("placed on %v, want the only host with room", first.HostId)
	}
	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"memory_mb": 1024}), http.StatusServiceUnavailable, "unavailable")
}

func TestCreateSandboxRetriesOnNextHost(t *testing.T) {
	env := newSandboxEnv(t)
	var attempts atomic.Int32
	failFirst := func(*hostagentv1.CreateSandboxRequest) error {
		if attempts.Add(1) == 1 {
			return errdefs.New(errdefs.ErrUnavailable, "out of slots")
		}
		return nil
	}
	a, b := env.addHost(t), env.addHost(t)
	a.failCreate, b.failCreate = failFirst, failFirst

	sb := env.create(t, map[string]any{})
	if attempts.Load() != 2 {
		t.Fatalf("%d create attempts, want 2", attempts.Load())
	}
	holder, failed := a, b
	if b.Has(sb.Id) {
		holder, failed = b, a
	}
	if !holder.Has(sb.Id) || failed.Has(sb.Id) || *sb.HostId != holder.HostID {
		t.Fatalf("sandbox on host %v; agent a has it %v, b %v", sb.HostId, a.Has(sb.Id), b.Has(sb.Id))
	}
	if failed.Calls("DestroySandbox") != 1 {
		t.Errorf("the failed host was not cleaned up (%d destroys)", failed.Calls("DestroySandbox"))
	}
	if st := env.state(t, sb.Id); st != "running" {
		t.Errorf("state %s, want running", st)
	}
}

func TestCreateSandboxAllHostsFail(t *testing.T) {
	env := newSandboxEnv(t)
	for range 4 {
		a := env.addHost(t)
		a.failCreate = func(*hostagentv1.CreateSandboxRequest) error {
			return errdefs.New(errdefs.ErrUnavailable, "boom")
		}
	}
	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{}), http.StatusServiceUnavailable, "unavailable")
	total := 0
	for _, a := range env.agents.agents {
		total += a.Calls("CreateSandbox")
	}
	if total != sandboxes.MaxCreateAttempts {
		t.Errorf("%d attempts, want %d", total, sandboxes.MaxCreateAttempts)
	}
	var page struct{ Sandboxes []api.Sandbox }
	env.doJSON(t, "GET", "/v1/sandboxes?state=starting,error", env.team.Key, nil, http.StatusOK, &page)
	if len(page.Sandboxes) != 1 || page.Sandboxes[0].State != api.SandboxStateError || page.Sandboxes[0].Error == nil {
		t.Fatalf("after failing everywhere: %+v (want one sandbox in error, none starting)", page.Sandboxes)
	}
}

func TestCreateSandboxBadRequestNotRetried(t *testing.T) {
	env := newSandboxEnv(t)
	bad := func(*hostagentv1.CreateSandboxRequest) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "disk smaller than the image")
	}
	a, b := env.addHost(t), env.addHost(t)
	a.failCreate, b.failCreate = bad, bad
	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{}), http.StatusBadRequest, "invalid_argument")
	if n := a.Calls("CreateSandbox") + b.Calls("CreateSandbox"); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

func TestSandboxLifecycle(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	key := env.team.Key

	var got api.Sandbox
	env.doJSON(t, "POST", path+"/pause", key, nil, http.StatusOK, &got)
	if got.State != api.SandboxStatePaused {
		t.Fatalf("after pause: %s", got.State)
	}
	wantError(t, env.do(t, "POST", path+"/pause", key, nil), http.StatusConflict, "failed_precondition")
	wantError(t, env.do(t, "POST", path+"/exec", key, map[string]any{"cmd": "true"}), http.StatusConflict, "failed_precondition")
	env.doJSON(t, "POST", path+"/resume", key, nil, http.StatusOK, &got)
	if got.State != api.SandboxStateRunning {
		t.Fatalf("after resume: %s", got.State)
	}
	wantError(t, env.do(t, "POST", path+"/resume", key, nil), http.StatusConflict, "failed_precondition")
	// A pause that keeps only the disk asks the agent to drop the memory.
	env.doJSON(t, "POST", path+"/pause", key, map[string]any{"keep_memory": false}, http.StatusOK, &got)
	if got.State != api.SandboxStatePaused || !agent.droppedMemory(sb.Id) {
		t.Fatalf("after a disk-only pause: %s, dropped %v", got.State, agent.droppedMemory(sb.Id))
	}
	// ...and so has nothing to hibernate.
	wantError(t, env.do(t, "POST", path+"/hibernate", key, nil), http.StatusConflict, "failed_precondition")
	env.doJSON(t, "POST", path+"/resume", key, nil, http.StatusOK, &got)
	wantError(t, env.do(t, "POST", path+"/pause", key, map[string]any{"keep_memory": "no"}), http.StatusBadRequest, "invalid_argument")

	// Hibernate from running (paused first on the host) and from paused;
	// resume from hibernated.
	for _, paused := range []bool{false, true} {
		if paused {
			env.doJSON(t, "POST", path+"/pause", key, nil, http.StatusOK, &got)
		}
		env.doJSON(t, "POST", path+"/hibernate", key, nil, http.StatusOK, &got)
		if got.State != api.SandboxStateHibernated || agent.State(sb.Id) != hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED {
			t.Fatalf("after hibernate (paused first: %v): %s, host %s", paused, got.State, agent.State(sb.Id))
		}
		wantError(t, env.do(t, "POST", path+"/hibernate", key, nil), http.StatusConflict, "failed_precondition")
		env.doJSON(t, "POST", path+"/resume", key, nil, http.StatusOK, &got)
		if got.State != api.SandboxStateRunning {
			t.Fatalf("after resuming a hibernated sandbox: %s", got.State)
		}
	}

	env.doJSON(t, "POST", path+"/timeout", key, map[string]any{"timeout_sec": 900, "on_timeout": "pause"}, http.StatusOK, &got)
	if got.TimeoutSec != 900 || got.OnTimeout != api.Pause {
		t.Errorf("after timeout: %+v", got)
	}
	wantError(t, env.do(t, "POST", path+"/timeout", key, map[string]any{"timeout_sec": 0}), http.StatusBadRequest, "invalid_argument")
	wantError(t, env.do(t, "POST", path+"/timeout", key, map[string]any{}), http.StatusBadRequest, "invalid_argument")

	env.doJSON(t, "PUT", path+"/network", key, map[string]any{"allow_internet": false, "allow_out": []string{"10.0.0.0/8"}}, http.StatusOK, &got)
	if got.Network == nil || got.Network.AllowInternet == nil || *got.Network.AllowInternet || (*got.Network.AllowOut)[0] != "10.0.0.0/8" {
		t.Errorf("after network: %+v", got.Network)
	}
	if agent.sandboxes[sb.Id].network.GetAllowInternet() {
		t.Errorf("agent still allows the internet")
	}
	wantError(t, env.do(t, "PUT", path+"/network", key, map[string]any{"deny_out": []string{"300.0.0.0/8"}}), http.StatusBadRequest, "invalid_argument")

	var m api.SandboxMetrics
	env.doJSON(t, "GET", path+"/metrics", key, nil, http.StatusOK, &m)
	if m.VmmMemoryBytes == nil || *m.VmmMemoryBytes != 123<<20 || m.Samples == nil || len(*m.Samples) != 2 {
		t.Errorf("metrics: %+v", m)
	}
	env.doJSON(t, "GET", path+"/metrics?since=2023-11-14T22:13:22Z", key, nil, http.StatusOK, &m)
	if m.Samples == nil || len(*m.Samples) != 1 || (*m.Samples)[0].CpuUsedPct != 20 {
		t.Errorf("metrics since the second sample: %+v", m.Samples)
	}
	wantError(t, env.do(t, "GET", path+"/metrics?since=yesterday", key, nil), http.StatusBadRequest, "invalid_argument")
	resp := env.do(t, "GET", path+"/logs?tail_bytes=100", key, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || string(body) != "console of "+sb.Id {
		t.Errorf("logs: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	wantError(t, env.do(t, "GET", path+"/logs?tail_bytes=0", key, nil), http.StatusBadRequest, "invalid_argument")

	if resp := env.do(t, "DELETE", path, key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if agent.Has(sb.Id) {
		t.Errorf("agent still holds the deleted sandbox")
	}
	env.doJSON(t, "GET", path, key, nil, http.StatusOK, &got)
	if got.State != api.SandboxStateStopped {
		t.Errorf("after delete: %s", got.State)
	}
	if resp := env.do(t, "DELETE", path, key, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("second delete: %d, want 204", resp.StatusCode)
	}
	wantError(t, env.do(t, "POST", path+"/resume", key, nil), http.StatusConflict, "failed_precondition")
	wantError(t, env.do(t, "POST", path+"/fork", key, nil), http.StatusConflict, "failed_precondition")
	wantError(t, env.do(t, "GET", path+"/metrics", key, nil), http.StatusConflict, "failed_precondition")
}

func TestDeleteSandboxGoneFromAgent(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	sb := env.create(t, map[string]any{})
	agent.mu.Lock()
	delete(agent.sandboxes, sb.Id)
	agent.mu.Unlock()
	if resp := env.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, env.team.Key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete of a sandbox its agent lost: %d, want 204", resp.StatusCode)
	}
	if st := env.state(t, sb.Id); st != "stopped" {
		t.Errorf("state %s, want stopped", st)
	}
}

func TestSandboxOfAnotherTeam(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	other := env.newTeam(t, "other")
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/sandboxes/" + sb.Id},
		{"DELETE", "/v1/sandboxes/" + sb.Id},
		{"POST", "/v1/sandboxes/" + sb.Id + "/pause"},
		{"GET", "/v1/sandboxes/nosuchsandbox"},
	} {
		resp := env.do(t, c.method, c.path, other.Key, nil)
		data, _ := io.ReadAll(resp.Body)
		var b errorBody
		_ = json.Unmarshal(data, &b)
		if resp.StatusCode != http.StatusNotFound || b.Error.Code != "not_found" {
			t.Errorf("%s %s as another team: %d %s", c.method, c.path, resp.StatusCode, data)
		}
		if strings.Contains(c.path, sb.Id) && !strings.Contains(b.Error.Message, sb.Id) {
			t.Errorf("message %q differs from a missing sandbox's", b.Error.Message)
		}
	}
	if st := env.state(t, sb.Id); st != "running" {
		t.Errorf("another team's calls changed the state to %s", st)
	}
	var page struct{ Sandboxes []api.Sandbox }
	env.doJSON(t, "GET", "/v1/sandboxes", other.Key, nil, http.StatusOK, &page)
	if len(page.Sandboxes) != 0 {
		t.Errorf("another team lists %d sandboxes", len(page.Sandboxes))
	}
}

func TestForkSandbox(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	sb := env.create(t, map[string]any{"metadata": map[string]string{"k": "v"}})
	path := "/v1/sandboxes/" + sb.Id

	var out struct{ Sandboxes []api.Sandbox }
	env.doJSON(t, "POST", path+"/fork", env.team.Key, map[string]any{"count": 3}, http.StatusCreated, &out)
	if len(out.Sandboxes) != 3 {
		t.Fatalf("%d forks, want 3", len(out.Sandboxes))
	}
	for _, f := range out.Sandboxes {
		if f.ForkedFrom == nil || *f.ForkedFrom != sb.Id || f.AccessToken == nil || f.State != api.SandboxStateRunning ||
			f.Metadata["k"] != "v" || *f.HostId != agent.HostID || !agent.Has(f.Id) {
			t.Errorf("fork %+v", f)
		}
	}
	env.doJSON(t, "POST", path+"/fork", env.team.Key, nil, http.StatusCreated, &out)
	if len(out.Sandboxes) != 1 {
		t.Errorf("default fork count gave %d", len(out.Sandboxes))
	}
	for _, n := range []int{0, 21} {
		wantError(t, env.do(t, "POST", path+"/fork", env.team.Key, map[string]any{"count": n}), http.StatusBadRequest, "invalid_argument")
	}
	// Forks run on the source's host, which must have room.
	wantError(t, env.do(t, "POST", path+"/fork", env.team.Key, map[string]any{"count": 20, "x": 1}), http.StatusBadRequest, "invalid_argument")
	if _, err := env.Pool.Exec(context.Background(), `UPDATE hosts SET memory_bytes = 4 << 30, memory_available_bytes = 4 << 30 WHERE id = $1`, agent.HostID); err != nil {
		t.Fatal(err)
	}
	wantError(t, env.do(t, "POST", path+"/fork", env.team.Key, map[string]any{"count": 20}), http.StatusServiceUnavailable, "unavailable")
}

func TestSnapshotAndTemplates(t *testing.T) {
	env := newSandboxEnv(t)
	home := env.addHost(t)
	sb := env.create(t, map[string]any{"vcpus": 2})
	path := "/v1/sandboxes/" + sb.Id
	key := env.team.Key

	var tmpl api.Template
	env.doJSON(t, "POST", path+"/snapshot", key, map[string]any{"name": "my-app"}, http.StatusCreated, &tmpl)
	if tmpl.Name != "my-app" || !tmpl.Snapshot || tmpl.Builtin || tmpl.SourceSandboxId == nil || *tmpl.SourceSandboxId != sb.Id {
		t.Fatalf("template: %+v", tmpl)
	}
	wantError(t, env.do(t, "POST", path+"/snapshot", key, map[string]any{"name": "my-app"}), http.StatusConflict, "already_exists")
	wantError(t, env.do(t, "POST", path+"/snapshot", key, map[string]any{"name": "minimal"}), http.StatusConflict, "already_exists")
	wantError(t, env.do(t, "POST", path+"/snapshot", key, map[string]any{"name": "My App"}), http.StatusBadRequest, "invalid_argument")
	wantError(t, env.do(t, "POST", path+"/snapshot", key, map[string]any{}), http.StatusBadRequest, "invalid_argument")

	var list struct{ Templates []api.Template }
	env.doJSON(t, "GET", "/v1/templates", key, nil, http.StatusOK, &list)
	names := map[string]bool{}
	for _, tp := range list.Templates {
		names[tp.Name] = tp.Builtin
	}
	if b, ok := names["minimal"]; !ok || !b {
		t.Errorf("templates %+v: want minimal as built in", list.Templates)
	}
	if b, ok := names["my-app"]; !ok || b {
		t.Errorf("templates %+v: want my-app as the team's", list.Templates)
	}
	env.doJSON(t, "GET", "/v1/templates/my-app", key, nil, http.StatusOK, &tmpl)
	env.doJSON(t, "GET", "/v1/templates/minimal", key, nil, http.StatusOK, &tmpl)
	if !tmpl.Builtin {
		t.Errorf("minimal: %+v", tmpl)
	}

	// Another team neither sees nor can use it.
	other := env.newTeam(t, "other")
	wantError(t, env.do(t, "GET", "/v1/templates/my-app", other.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "POST", "/v1/sandboxes", other.Key, map[string]any{"template": "my-app"}), http.StatusNotFound, "not_found")

	// A snapshot template runs only on the host holding its files, even
	// before a heartbeat lists it there.
	for range 3 {
		env.addHost(t)
	}
	for range 3 {
		from := env.create(t, map[string]any{"template": "my-app"})
		if *from.HostId != home.HostID {
			t.Fatalf("sandbox from the snapshot placed on %v, want its home %v", from.HostId, home.HostID)
		}
	}

	wantError(t, env.do(t, "DELETE", "/v1/templates/minimal", key, nil), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "DELETE", "/v1/templates/nosuch", key, nil), http.StatusNotFound, "not_found")
	if resp := env.do(t, "DELETE", "/v1/templates/my-app", key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete template: %d", resp.StatusCode)
	}
	if home.Calls("DeleteTemplate") != 1 || len(home.templates) != 0 {
		t.Errorf("template files not deleted on the host")
	}
	wantError(t, env.do(t, "GET", "/v1/templates/my-app", key, nil), http.StatusNotFound, "not_found")
}

// insertSandboxes adds n rows for the listing tests, newest last.
func insertSandboxes(t testing.TB, env *sbEnv, team uuid.UUID, n int, state func(i int) string, meta func(i int) string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("list-%04d", i)
	}
	_, err := env.Pool.Exec(context.Background(), `INSERT INTO sandboxes (id, team_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, metadata, created_at)
		SELECT id, $2, 'minimal', st, 1, 512, 2048, 300, 'kill', md::jsonb, '2030-01-01'::timestamptz + (ord || ' seconds')::interval / 2
		FROM unnest($1::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(id, st, md, ord)`,
		ids, team, mapN(n, state), mapN(n, meta))
	if err != nil {
		t.Fatalf("insert sandboxes: %v", err)
	}
	return ids
}

func mapN(n int, f func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func TestListSandboxes(t *testing.T) {
	env := newSandboxEnv(t)
	states := []string{"running", "paused", "stopped", "error"}
	ids := insertSandboxes(t, env, env.team.ID, 40,
		func(i int) string { return states[i%4] },
		func(i int) string { return fmt.Sprintf(`{"parity":"%d","tens":"%d"}`, i%2, i/10) })
	key := env.team.Key

	type page struct {
		Sandboxes  []api.Sandbox
		NextCursor string `json:"next_cursor"`
	}
	collect := func(query string, limit int) []string {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("pagination does not end")
			}
			q := fmt.Sprintf("/v1/sandboxes?limit=%d%s", limit, query)
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			var p page
			env.doJSON(t, "GET", q, key, nil, http.StatusOK, &p)
			if len(p.Sandboxes) > limit {
				t.Fatalf("page of %d, limit %d", len(p.Sandboxes), limit)
			}
			for _, sb := range p.Sandboxes {
				got = append(got, sb.Id)
			}
			if p.NextCursor == "" {
				return got
			}
			cursor = p.NextCursor
		}
	}
	want := func(keep func(i int) bool) []string {
		var out []string
		for i := len(ids) - 1; i >= 0; i-- {
			if keep(i) {
				out = append(out, ids[i])
			}
		}
		return out
	}
	tests := []struct {
		name  string
		query string
		keep  func(i int) bool
	}{
		{"default hides stopped", "", func(i int) bool { return i%4 != 2 }},
		{"one state", "&state=running", func(i int) bool { return i%4 == 0 }},
		{"several states", "&state=stopped,error", func(i int) bool { return i%4 >= 2 }},
		{"metadata", "&state=running,paused,stopped,error&metadata=parity=1", func(i int) bool { return i%2 == 1 }},
		{"two metadata keys", "&state=running,paused,stopped,error&metadata=parity=0&metadata=tens=2", func(i int) bool { return i%2 == 0 && i/10 == 2 }},
		{"metadata and state", "&state=paused&metadata=tens=3", func(i int) bool { return i%4 == 1 && i/10 == 3 }},
		{"no match", "&metadata=parity=7", func(int) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, limit := range []int{1, 7, 100} {
				got := collect(tt.query, limit)
				if w := want(tt.keep); !slices.Equal(got, w) {
					t.Fatalf("limit %d: got %v, want %v", limit, got, w)
				}
			}
		})
	}
	for _, bad := range []string{"?state=bogus", "?limit=0", "?limit=1001", "?limit=x", "?cursor=!!", "?cursor=YWJj", "?metadata=novalue", "?metadata==v"} {
		wantError(t, env.do(t, "GET", "/v1/sandboxes"+bad, key, nil), http.StatusBadRequest, "invalid_argument")
	}
}
