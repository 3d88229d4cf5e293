package rest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// pollFor waits (real time) until ok or the bound passes.
func pollFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInflightCreateKeepsItsLease: a create whose host is slow is not
// taken for abandoned while its control plane lives, however long the
// host takes: the replica renews the row's lease; the sweeper rolls back
// only creates whose lease ran out.
func TestInflightCreateKeepsItsLease(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	release := make(chan struct{})
	agent.mu.Lock()
	agent.failCreate = func(*hostagentv1.CreateSandboxRequest) error { <-release; return nil }
	agent.mu.Unlock()
	done := make(chan int, 1)
	go func() {
		res := env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{})
		res.Body.Close()
		done <- res.StatusCode
	}()
	var id string
	pollFor(t, "the create's row", 30*time.Second, func() bool {
		_ = env.Pool.QueryRow(context.Background(), `SELECT id FROM sandboxes WHERE team_id = $1 AND state = 'starting'`, env.team.ID).Scan(&id)
		return id != ""
	})
	// Past the lease as far as the store's clock goes...
	env.Clock.Advance(sandboxes.OpLease + time.Second)
	// ...but the replica renews it (every OpLease/5 of real time).
	pollFor(t, "a lease renewal", 2*sandboxes.OpLease, func() bool {
		var updated time.Time
		_ = env.Pool.QueryRow(context.Background(), `SELECT updated_at FROM sandboxes WHERE id = $1`, id).Scan(&updated)
		return !updated.Before(env.Clock.Now())
	})
	sw, err := env.Server.Sandboxes().Sweep(context.Background())
	if err != nil || len(sw.Abandoned) != 0 {
		t.Fatalf("sweep during a live create: %+v %v", sw, err)
	}
	close(release)
	if code := <-done; code != http.StatusCreated {
		t.Fatalf("create answered %d", code)
	}
	if st := env.state(t, id); st != "running" {
		t.Fatalf("after the create: %s", st)
	}
}

// TestSweepRollsBackDeadCreate: a create whose control plane died (its
// lease ran out) is failed and destroyed on its host, which had made it;
// a create that finished meanwhile is left alone.
func TestSweepRollsBackDeadCreate(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	sb := env.create(t, map[string]any{})
	ctx := context.Background()
	// The dead replica's create: its row starting, its VM on the host.
	if _, err := env.Pool.Exec(ctx, `INSERT INTO sandboxes (id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, updated_at)
		VALUES ('dead-create', $1, $2, 'minimal', 'starting', 1, 512, 2048, 300, 'kill', $3)`,
		env.team.ID, agent.HostID, env.Clock.Now().Add(-sandboxes.OpLease-time.Second)); err != nil {
		t.Fatal(err)
	}
	agent.mu.Lock()
	agent.sandboxes["dead-create"] = &fakeSandbox{state: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, token: "t"}
	agent.mu.Unlock()
	sw, err := env.Server.Sandboxes().Sweep(ctx)
	if err != nil || len(sw.Abandoned) != 1 || sw.Abandoned[0] != "dead-create" {
		t.Fatalf("sweep: %+v %v", sw, err)
	}
	if st := env.state(t, "dead-create"); st != "error" {
		t.Errorf("abandoned create is %s, want error", st)
	}
	if agent.Has("dead-create") {
		t.Error("the abandoned create's VM is still on its host")
	}
	if st := env.state(t, sb.Id); st != "running" || !agent.Has(sb.Id) {
		t.Errorf("a finished create was touched: %s, on host %v", st, agent.Has(sb.Id))
	}
}

// TestPendingTemplates: a snapshot template is pending until its host has
// made it; nothing is created from a pending one. One whose control
// plane died is completed by the sweeper when its host has it, removed
// when not; one still within its lease is left alone.
func TestPendingTemplates(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	src := env.create(t, map[string]any{})
	ctx := context.Background()
	var tmpl api.Template
	env.doJSON(t, "POST", "/v1/sandboxes/"+src.Id+"/snapshot", env.team.Key, map[string]any{"name": "made"}, http.StatusCreated, &tmpl)
	if tmpl.Status != api.TemplateStatusReady {
		t.Fatalf("a finished snapshot template is %q, want ready", tmpl.Status)
	}

	stale := env.Clock.Now().Add(-sandboxes.OpLease - time.Second)
	for _, row := range []struct {
		name, agentName string
		updated         time.Time
	}{
		{"host-has-it", "t-host-has-it", stale},
		{"host-lacks-it", "t-host-lacks-it", stale},
		{"in-flight", "t-in-flight", env.Clock.Now()},
	} {
		if _, err := env.Pool.Exec(ctx, `INSERT INTO templates (team_id, name, agent_name, host_id, snapshot, vcpus, memory_mb, status, updated_at)
			VALUES ($1, $2, $3, $4, true, 1, 512, 'pending', $5)`, env.team.ID, row.name, row.agentName, agent.HostID, row.updated); err != nil {
			t.Fatal(err)
		}
	}
	agent.mu.Lock()
	agent.templates["t-host-has-it"] = true
	agent.mu.Unlock()

	wantError(t, env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"template": "in-flight"}), http.StatusConflict, "failed_precondition")
	sw, err := env.Server.Sandboxes().Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := sw.Templates; len(got["ready"]) != 1 || got["ready"][0] != "host-has-it" || len(got["removed"]) != 1 || got["removed"][0] != "host-lacks-it" {
		t.Fatalf("sweep settled %v", got)
	}
	var list struct{ Templates []api.Template }
	env.doJSON(t, "GET", "/v1/templates", env.team.Key, nil, http.StatusOK, &list)
	status := map[string]api.TemplateStatus{}
	for _, tp := range list.Templates {
		status[tp.Name] = tp.Status
	}
	if status["host-has-it"] != api.TemplateStatusReady || status["in-flight"] != api.TemplateStatusPending || status["made"] != api.TemplateStatusReady {
		t.Errorf("templates after the sweep: %v", status)
	}
	if _, ok := status["host-lacks-it"]; ok {
		t.Error("a pending template its host never made is still listed")
	}
}
