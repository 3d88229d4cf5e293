package rest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/quota"
)

// newLimitsEnv is newSandboxEnv with default team limits, and one host
// with room for far more than the limits allow (so the limit, not the
// host, is what answers).
func newLimitsEnv(t *testing.T, l quota.Limits) (*sbEnv, *fakeAgent) {
	t.Helper()
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	env := newTestEnv(t, func(d *Deps) { d.Agents = fa; d.TeamLimits = l; d.Signup = SignupOpen })
	e := &sbEnv{testEnv: env, agents: fa, guest: startGuest(t), team: env.newTeam(t, "limits")}
	agent := e.addHost(t, func(h *hostSpec) { h.cpus, h.memory, h.available = 64, 256<<30, 256<<30 })
	return e, agent
}

// platformAdmin is a new user with platform rights and a session of theirs.
func (e *testEnv) platformAdmin(t *testing.T) string {
	t.Helper()
	admin := e.newTeam(t, "platform")
	if _, err := e.Pool.Exec(context.Background(), `UPDATE users SET platform_admin = true WHERE id = $1`, admin.UserID); err != nil {
		t.Fatalf("promote platform admin: %v", err)
	}
	// A fresh session, in case rights are fixed when a session starts.
	var sess struct {
		Token string `json:"token"`
	}
	e.doJSON(t, "POST", "/v1/auth/login", "", map[string]any{"email": admin.Email, "password": admin.Password}, http.StatusOK, &sess)
	if sess.Token == "" {
		t.Fatal("login gave no token")
	}
	return sess.Token
}

// wantQuota checks resp is 429 quota_exceeded naming the limit.
func wantQuota(t *testing.T, resp *http.Response, limit string) {
	t.Helper()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s %s: status %d, want 429; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, data)
	}
	var b errorBody
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("error body %q: %v", data, err)
	}
	if b.Error.Code != "quota_exceeded" || !strings.Contains(b.Error.Message, limit) {
		t.Fatalf("error %+v: want quota_exceeded naming %q", b.Error, limit)
	}
}

// TestQuotaLimitsCreate: each of the team's limits refuses the create that
// would pass it with 429 quota_exceeded naming the limit and its value;
// stopped sandboxes free their share. Without quotas every create here
// succeeded.
func TestQuotaLimitsCreate(t *testing.T) {
	env, _ := newLimitsEnv(t, quota.Limits{MaxSandboxes: 3, MaxVCPUs: 4, MaxMemoryMB: 3072, MaxDiskMB: 10240})
	key := env.team.Key

	a := env.create(t, map[string]any{"vcpus": 2, "memory_mb": 1024, "disk_mb": 4096})
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"vcpus": 3}), "max_vcpus (4)")
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"memory_mb": 2560}), "max_memory_mb (3072)")
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"disk_mb": 8192}), "max_disk_mb (10240)")
	env.create(t, map[string]any{"vcpus": 1, "memory_mb": 1024, "disk_mb": 2048})
	// A paused sandbox keeps its RAM and disk: it still counts.
	env.doJSON(t, "POST", "/v1/sandboxes/"+a.Id+"/pause", key, nil, http.StatusOK, nil)
	env.create(t, map[string]any{"vcpus": 1, "memory_mb": 512, "disk_mb": 1024})
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"memory_mb": 128, "disk_mb": 256}), "max_sandboxes (3)")

	// Deleting one frees its place.
	env.doJSON(t, "DELETE", "/v1/sandboxes/"+a.Id, key, nil, http.StatusNoContent, nil)
	env.create(t, map[string]any{"memory_mb": 128, "disk_mb": 256})
}

// TestQuotaLimitsRoutes: members read their team's limits and usage;
// another team cannot; only a platform admin sets them, and what it sets
// is in force at once.
func TestQuotaLimitsRoutes(t *testing.T) {
	env, _ := newLimitsEnv(t, quota.Limits{MaxSandboxes: 20, MaxVCPUs: 40, MaxMemoryMB: 65536, MaxDiskMB: 204800, MaxTemplates: 50})
	team := env.team
	path := "/v1/teams/" + team.ID.String() + "/limits"
	env.create(t, map[string]any{"vcpus": 2, "memory_mb": 1024, "disk_mb": 4096})

	var got teamLimitsJSON
	env.doJSON(t, "GET", path, team.Key, nil, http.StatusOK, &got)
	if got.TeamID != team.ID || got.Limits.MaxSandboxes != 20 || got.Limits.MaxMemoryMB != 65536 || got.Overrides.MaxSandboxes != nil {
		t.Errorf("limits %+v: want the defaults, no overrides", got)
	}
	if got.Usage != (quota.Amount{Sandboxes: 1, VCPUs: 2, MemoryMB: 1024, DiskMB: 4096}) {
		t.Errorf("usage %+v", got.Usage)
	}
	env.doJSON(t, "GET", path, team.JWT, nil, http.StatusOK, &got)

	other := env.newTeam(t, "other")
	wantError(t, env.do(t, "GET", path, other.Key, nil), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "GET", path, other.JWT, nil), http.StatusNotFound, "not_found")
	// A team cannot raise its own limits, owner or key; another team's
	// answer like a missing team.
	for _, cred := range []string{team.JWT, team.Key} {
		wantError(t, env.do(t, "PUT", path, cred, map[string]any{"max_sandboxes": 1000}), http.StatusForbidden, "permission_denied")
	}
	wantError(t, env.do(t, "PUT", path, other.JWT, map[string]any{"max_sandboxes": 1000}), http.StatusNotFound, "not_found")

	admin := env.platformAdmin(t)
	env.doJSON(t, "PUT", path, admin, map[string]any{"max_sandboxes": 1, "max_vcpus": 0}, http.StatusOK, &got)
	if got.Limits.MaxSandboxes != 1 || got.Limits.MaxVCPUs != 0 || got.Limits.MaxMemoryMB != 65536 ||
		got.Overrides.MaxSandboxes == nil || *got.Overrides.MaxSandboxes != 1 || got.Overrides.MaxMemoryMB != nil {
		t.Errorf("after PUT: %+v", got)
	}
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes", team.Key, nil), "max_sandboxes (1)")
	// The admin reads any team's limits.
	env.doJSON(t, "GET", path, admin, nil, http.StatusOK, &got)

	for _, body := range []map[string]any{{"max_vcpus": -1}, {"max_disk_mb": int64(1) << 50}, {"max_cpus": 3}} {
		wantError(t, env.do(t, "PUT", path, admin, body), http.StatusBadRequest, "invalid_argument")
	}
	wantError(t, env.do(t, "PUT", "/v1/teams/"+uuid.NewString()+"/limits", admin, map[string]any{}), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "PUT", "/v1/teams/nope/limits", admin, map[string]any{}), http.StatusBadRequest, "invalid_argument")

	// Back to the defaults: a PUT replaces every override.
	env.doJSON(t, "PUT", path, admin, map[string]any{}, http.StatusOK, &got)
	if got.Limits.MaxSandboxes != 20 || got.Overrides.MaxSandboxes != nil {
		t.Errorf("after reset: %+v", got)
	}
	env.create(t, nil)
}

// TestQuotaForkSnapshotResume: forks count their n sandboxes, a snapshot
// template counts against max_templates, and resuming a hibernated
// sandbox (which gave its vCPUs back) is checked like a create.
func TestQuotaForkSnapshotResume(t *testing.T) {
	env, agent := newLimitsEnv(t, quota.Limits{MaxSandboxes: 3, MaxVCPUs: 4, MaxTemplates: 1})
	key := env.team.Key
	src := env.create(t, map[string]any{"vcpus": 1})

	wantQuota(t, env.do(t, "POST", "/v1/sandboxes/"+src.Id+"/fork", key, map[string]any{"count": 3}), "max_sandboxes (3)")
	if n := agent.Calls("ForkSandbox"); n != 0 {
		t.Fatalf("a fork over the limit reached the agent (%d calls)", n)
	}
	var forks struct{ Sandboxes []api.Sandbox }
	env.doJSON(t, "POST", "/v1/sandboxes/"+src.Id+"/fork", key, map[string]any{"count": 2}, http.StatusCreated, &forks)
	if len(forks.Sandboxes) != 2 {
		t.Fatalf("%d forks", len(forks.Sandboxes))
	}
	var holds int
	if err := env.Pool.QueryRow(context.Background(), `SELECT count(*) FROM quota_holds`).Scan(&holds); err != nil || holds != 0 {
		t.Fatalf("%d quota holds left after the fork (err %v)", holds, err)
	}

	env.doJSON(t, "POST", "/v1/sandboxes/"+src.Id+"/snapshot", key, map[string]any{"name": "one"}, http.StatusCreated, nil)
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes/"+src.Id+"/snapshot", key, map[string]any{"name": "two"}), "max_templates (1)")

	// Hibernate src: its vCPU is given back...
	for _, f := range forks.Sandboxes {
		env.doJSON(t, "DELETE", "/v1/sandboxes/"+f.Id, key, nil, http.StatusNoContent, nil)
	}
	var hib api.Sandbox
	env.doJSON(t, "POST", "/v1/sandboxes/"+src.Id+"/hibernate", key, nil, http.StatusOK, &hib)
	if hib.State != api.SandboxStateHibernated {
		t.Fatalf("after hibernate: %s", hib.State)
	}
	// ...and taken by others, so resuming it would pass max_vcpus.
	env.create(t, map[string]any{"vcpus": 4})
	wantQuota(t, env.do(t, "POST", "/v1/sandboxes/"+src.Id+"/resume", key, nil), "max_vcpus (4)")
	if n := agent.Calls("ResumeSandbox"); n != 0 {
		t.Fatalf("a resume over the limit reached the agent (%d calls)", n)
	}
}

// TestQuotaConcurrentCreates: many creates of one team at once never take
// it past max_sandboxes: the check and the new row share a transaction
// under the team's lock. (Without the lock every create read the usage
// before any row was written, and all were admitted.)
func TestQuotaConcurrentCreates(t *testing.T) {
	const limit, n = 3, 10
	env, _ := newLimitsEnv(t, quota.Limits{MaxSandboxes: limit})
	// Widen the window between the check and the insert.
	env.Server.sandboxes.SetPlacementHook(func() { time.Sleep(30 * time.Millisecond) })

	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			resp := env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"memory_mb": 128})
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusTooManyRequests:
		default:
			t.Errorf("create answered %d, want 201 or 429", c)
		}
	}
	if created != limit {
		t.Fatalf("%d of %d concurrent creates succeeded with max_sandboxes %d (codes %v)", created, n, limit, codes)
	}
}

// TestQuotaConcurrentForks: concurrent forks hold their room until their
// rows exist, so together they never pass the limit.
func TestQuotaConcurrentForks(t *testing.T) {
	const limit = 4
	env, _ := newLimitsEnv(t, quota.Limits{MaxSandboxes: limit})
	src := env.create(t, map[string]any{"memory_mb": 128})
	env.Server.sandboxes.SetPlacementHook(func() { time.Sleep(30 * time.Millisecond) })

	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Go(func() {
			resp := env.do(t, "POST", "/v1/sandboxes/"+src.Id+"/fork", env.team.Key, map[string]any{"count": 2})
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	var live int
	if err := env.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM sandboxes WHERE team_id = $1 AND state NOT IN ('stopped', 'error')`, env.team.ID).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live > limit {
		t.Fatalf("%d live sandboxes with max_sandboxes %d (fork codes %v)", live, limit, codes)
	}
	if live != 3 { // the source and one fork of two; a second would make 5
		t.Errorf("%d live sandboxes, want 3 (codes %v)", live, codes)
	}
}

// TestPlacementAdmitsDiskAndGuestMemory: a create is placed only where the
// host's disk (free less what live sandboxes may still write) and its
// guest-memory tmpfs have room, whatever the host's RAM: before, a 20 GiB
// disk went onto a host with 10 GiB free and 2 GiB of guest RAM into a
// 1 GiB tmpfs (ENOSPC and SIGBUS later, for every tenant of the host).
func TestPlacementAdmitsDiskAndGuestMemory(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t, func(h *hostSpec) { h.disk, h.guestMemory = 10<<30, 3<<30 })
	key := env.team.Key

	wantError(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"disk_mb": 20480}), http.StatusServiceUnavailable, "unavailable")
	wantError(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"memory_mb": 4096}), http.StatusServiceUnavailable, "unavailable")
	if n := agent.Calls("CreateSandbox"); n != 0 {
		t.Fatalf("%d creates reached a host without room", n)
	}
	// 6 GiB of disk and 2 GiB of RAM fit; then the host has 4 GiB of disk
	// (less the 2 GiB headroom) and 1 GiB of tmpfs left to promise.
	sb := env.create(t, map[string]any{"disk_mb": 6144, "memory_mb": 2048})
	wantError(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"disk_mb": 4096, "memory_mb": 512}), http.StatusServiceUnavailable, "unavailable")
	wantError(t, env.do(t, "POST", "/v1/sandboxes", key, map[string]any{"disk_mb": 1024, "memory_mb": 2048}), http.StatusServiceUnavailable, "unavailable")
	// A fork of it needs another 6 GiB and 2 GiB: no room on its host.
	wantError(t, env.do(t, "POST", "/v1/sandboxes/"+sb.Id+"/fork", key, nil), http.StatusServiceUnavailable, "unavailable")
	env.create(t, map[string]any{"disk_mb": 1024, "memory_mb": 512})
}
