package rest

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"github.com/wrenn/wrenn/api"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// templateNames lists GET /v1/templates for key: name -> built in.
func templateNames(t *testing.T, env *sbEnv, key string) map[string]bool {
	t.Helper()
	var list struct{ Templates []api.Template }
	env.doJSON(t, "GET", "/v1/templates", key, nil, http.StatusOK, &list)
	out := map[string]bool{}
	for _, tp := range list.Templates {
		out[tp.Name] = tp.Builtin
	}
	return out
}

// TestSnapshotTemplateNeverBuiltin: a team's snapshot template is the
// team's alone even when a host reports its name among the base images
// (as agents did before the fix, and as an old or lying agent still
// could). Before, GET /v1/templates listed its t-... name to every team as
// a built-in and another team could create a sandbox from it, restoring
// the first team's memory and disk.
func TestSnapshotTemplateNeverBuiltin(t *testing.T) {
	env := newSandboxEnv(t)
	home := env.addHost(t)
	ctx := context.Background()
	a := env.team
	sb := env.create(t, map[string]any{})
	env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/snapshot", a.Key, map[string]any{"name": "secret-app"}, http.StatusCreated, nil)
	var agentName string
	if err := env.Pool.QueryRow(ctx, `SELECT agent_name FROM templates WHERE team_id = $1 AND name = 'secret-app'`, a.ID).Scan(&agentName); err != nil {
		t.Fatal(err)
	}
	// What the heartbeat of an unfixed agent stored: the snapshot among
	// the images. A second host reports a snapshot whose row is gone.
	if _, err := env.Pool.Exec(ctx, `UPDATE hosts SET images = images || $2::text, templates = ARRAY[$2::text, 'minimal'] WHERE id = $1`, home.HostID, agentName); err != nil {
		t.Fatal(err)
	}
	env.addHost(t, func(h *hostSpec) {
		h.images = []string{"minimal", "t-orphan"}
		h.snapshots = []string{"t-orphan"}
	})

	b := env.newTeam(t, "team-b")
	for _, key := range []string{a.Key, b.Key} {
		names := templateNames(t, env, key)
		if builtin, ok := names["minimal"]; !ok || !builtin {
			t.Errorf("templates %v: want minimal built in", names)
		}
		for _, n := range []string{agentName, "t-orphan"} {
			if _, ok := names[n]; ok {
				t.Errorf("templates %v list the snapshot template %s", names, n)
			}
		}
	}
	if builtin, ok := templateNames(t, env, a.Key)["secret-app"]; !ok || builtin {
		t.Errorf("team A does not list its own template as its own")
	}
	if _, ok := templateNames(t, env, b.Key)["secret-app"]; ok {
		t.Errorf("team B lists team A's template")
	}

	// A team's own name for a template never hides a base image from the
	// others (a template named before the operator added the image).
	if _, err := env.Pool.Exec(ctx, `INSERT INTO templates (team_id, name, agent_name, host_id, snapshot)
		VALUES ($1, 'python', 't-squat', $2, true)`, a.ID, home.HostID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Pool.Exec(ctx, `UPDATE hosts SET images = images || 'python'::text WHERE id = $1`, home.HostID); err != nil {
		t.Fatal(err)
	}
	if builtin, ok := templateNames(t, env, b.Key)["python"]; !ok || !builtin {
		t.Errorf("team A's template named python hides the base image python from team B")
	}

	creates := home.Calls("CreateSandbox")
	for _, n := range []string{agentName, "t-orphan", "secret-app"} {
		wantError(t, env.do(t, "GET", "/v1/templates/"+n, b.Key, nil), http.StatusNotFound, "not_found")
		wantError(t, env.do(t, "POST", "/v1/sandboxes", b.Key, map[string]any{"template": n}), http.StatusNotFound, "not_found")
		wantError(t, env.do(t, "DELETE", "/v1/templates/"+n, b.Key, nil), http.StatusNotFound, "not_found")
	}
	// Nor by its host name from team A: only by the name it gave it.
	wantError(t, env.do(t, "POST", "/v1/sandboxes", a.Key, map[string]any{"template": agentName}), http.StatusNotFound, "not_found")
	if n := home.Calls("CreateSandbox"); n != creates {
		t.Errorf("refused creates reached the agent (%d calls)", n-creates)
	}
}

// TestAgentCallsCarryTeam: every agent call that creates from a template,
// snapshots, forks, resumes or deletes a template names the team, so the
// agent can refuse another team's template or sandbox (the fake agent
// refuses a create from a template snapshotted for another team, as the
// real one does).
func TestAgentCallsCarryTeam(t *testing.T) {
	env := newSandboxEnv(t)
	home := env.addHost(t)
	key, team := env.team.Key, env.team.ID.String()
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	env.doJSON(t, "POST", path+"/snapshot", key, map[string]any{"name": "app"}, http.StatusCreated, nil)
	env.create(t, map[string]any{"template": "app"})
	env.doJSON(t, "POST", path+"/fork", key, map[string]any{"count": 1}, http.StatusCreated, nil)
	env.doJSON(t, "POST", path+"/pause", key, nil, http.StatusOK, nil)
	env.doJSON(t, "POST", path+"/resume", key, nil, http.StatusOK, nil)
	if resp := env.do(t, "DELETE", "/v1/templates/app", key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete template: %d", resp.StatusCode)
	}
	for _, m := range []string{"CreateSandbox", "SnapshotTemplate", "ForkSandbox", "ResumeSandbox", "DeleteTemplate"} {
		if got := home.Team(m); got != team {
			t.Errorf("%s carried team %q, want %q", m, got, team)
		}
	}
}

// TestForkIDsFromAgentChecked: the control plane names the forks and
// records them before the host makes them; of what a host reports, only
// the forks asked for are recorded. Others it made (well-formed ids) are
// destroyed again, and malformed ids never leave the control plane. A
// host that makes fewer forks than asked fails the fork as a whole: what
// it made is destroyed and the rows are stopped.
func TestForkIDsFromAgentChecked(t *testing.T) {
	env := newSandboxEnv(t)
	home := env.addHost(t)
	sb := env.create(t, map[string]any{})
	other := env.create(t, map[string]any{})
	fork := func(id string) *hostagentv1.Sandbox {
		return &hostagentv1.Sandbox{Id: id, State: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, AccessToken: "tok-" + id}
	}
	var asked []string
	home.mu.Lock()
	home.forkAnswer = func(req *hostagentv1.ForkSandboxRequest) []*hostagentv1.Sandbox {
		asked = req.GetIds()
		out := []*hostagentv1.Sandbox{fork("../../etc/passwd"), fork("UPPER"), fork(""), fork("x\x00y"), fork(sb.Id), fork("fork-three")}
		for _, id := range req.GetIds() {
			out = append(out, fork(id))
		}
		return append(out, fork("fork-four"))
	}
	home.mu.Unlock()

	var out struct{ Sandboxes []api.Sandbox }
	env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/fork", env.team.Key, map[string]any{"count": 2}, http.StatusCreated, &out)
	var got []string
	for _, f := range out.Sandboxes {
		got = append(got, f.Id)
	}
	if len(asked) != 2 || !slices.Equal(got, asked) {
		t.Errorf("forks = %q, want the two the control plane asked for (%q)", got, asked)
	}
	rows, err := env.Pool.Query(context.Background(), `SELECT id FROM sandboxes WHERE team_id = $1 ORDER BY id`, env.team.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := collectStrings(rows)
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(asked), sb.Id, other.Id)
	slices.Sort(want)
	if !slices.Equal(stored, want) {
		t.Errorf("store holds %q, want %q", stored, want)
	}
	for _, id := range []string{"fork-three", "fork-four"} {
		if home.Has(id) {
			t.Errorf("a fork not asked for (%s) left running on the host", id)
		}
	}
	for _, id := range []string{"../../etc/passwd", "UPPER", "x\x00y", sb.Id} {
		if !home.Has(id) {
			t.Errorf("the control plane sent the id %q back to the agent", id)
		}
	}
	if st := env.state(t, sb.Id); st != "running" {
		t.Errorf("source is %s", st)
	}

	// A host that makes one fork of two: the fork fails, nothing is kept.
	home.mu.Lock()
	home.forkAnswer = func(req *hostagentv1.ForkSandboxRequest) []*hostagentv1.Sandbox {
		asked = req.GetIds()
		return []*hostagentv1.Sandbox{fork(req.GetIds()[0])}
	}
	home.mu.Unlock()
	env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/fork", env.team.Key, map[string]any{"count": 2}, http.StatusServiceUnavailable, nil)
	for _, id := range asked {
		if home.Has(id) {
			t.Errorf("fork %s of a failed fork left on the host", id)
		}
		if st := env.state(t, id); st != "stopped" {
			t.Errorf("fork %s of a failed fork is %s, want stopped", id, st)
		}
	}
}

// collectStrings reads one text column.
func collectStrings(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close()
}) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
