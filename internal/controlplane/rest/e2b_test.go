package rest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// e2bDo calls an E2B route with the team's key in X-API-KEY, as E2B's
// SDKs do, and decodes a wanted status's body into out.
func (e *sbEnv) e2bDo(t *testing.T, method, path string, body any, want int, out any) *http.Response {
	t.Helper()
	resp := e.doHeader(t, method, path, "", body, http.Header{"X-API-KEY": {e.team.Key}})
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp
}

// e2bErr calls an E2B route that must fail and checks E2B's error shape:
// code is the status as a number (the JS SDK tells 404 and 409 by it).
func (e *sbEnv) e2bErr(t *testing.T, method, path string, body any, want int) api.E2BError {
	t.Helper()
	var eb api.E2BError
	resp := e.e2bDo(t, method, path, body, want, &eb)
	if eb.Code != want || eb.Message == "" || eb.ErrorCode == nil || *eb.ErrorCode == "" {
		t.Fatalf("%s %s: error body %+v, want code %d, a message and an error_code", method, resp.Request.URL.Path, eb, want)
	}
	return eb
}

func TestE2BSandboxLifecycle(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)

	// The Python SDK always sends metadata and envVars; unknown fields
	// (a newer SDK's) are ignored.
	var sb api.E2BSandbox
	env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{
		"templateID": "base", "timeout": 120, "metadata": map[string]string{"app": "x y&z", "k": "v"},
		"envVars": map[string]string{"FOO": "bar"}, "secure": true, "someFutureField": 1,
	}, http.StatusCreated, &sb)
	if sb.SandboxID == "" || sb.TemplateID != "minimal" || sb.EnvdVersion != EnvdVersion || deref(sb.EnvdAccessToken) == "" ||
		sb.ClientID == "" || sb.Domain == nil || *sb.Domain != "wrenn.test" || sb.TrafficAccessToken != nil {
		t.Fatalf("created %+v", sb)
	}
	if !agent.Has(sb.SandboxID) {
		t.Fatal("the agent does not hold the sandbox")
	}
	// cpuCount (Python SDK 2.64) sizes a sandbox from a base image.
	var two api.E2BSandbox
	env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "base", "cpuCount": 2}, http.StatusCreated, &two)
	var twoD api.E2BSandboxDetail
	env.e2bDo(t, "GET", "/sandboxes/"+two.SandboxID, nil, http.StatusOK, &twoD)
	if twoD.CpuCount != 2 {
		t.Fatalf("cpuCount 2 gave %d vCPUs", twoD.CpuCount)
	}
	env.e2bDo(t, "DELETE", "/sandboxes/"+two.SandboxID, nil, http.StatusNoContent, nil)
	// Python's SDK requires these keys in the detail.
	var raw map[string]any
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &raw)
	for _, k := range []string{"templateID", "sandboxID", "clientID", "startedAt", "endAt", "envdVersion", "cpuCount", "memoryMB", "diskSizeMB", "state"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("detail lacks %q: %v", k, raw)
		}
	}
	var d api.E2BSandboxDetail
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &d)
	now := env.Clock.Now()
	if d.State != "running" || deref(d.Metadata)["app"] != "x y&z" || !d.EndAt.Equal(now.Add(120*time.Second)) ||
		deref(d.EnvdAccessToken) != deref(sb.EnvdAccessToken) || d.Lifecycle == nil || d.Lifecycle.OnTimeout != "kill" {
		t.Fatalf("detail %+v (now %v)", d, now)
	}

	// setTimeout is absolute: the deadline moves to now + timeout, even
	// when that shortens it.
	env.Clock.Advance(10 * time.Second)
	env.e2bDo(t, "POST", "/sandboxes/"+sb.SandboxID+"/timeout", map[string]any{"timeout": 30}, http.StatusNoContent, nil)
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &d)
	if want := env.Clock.Now().Add(30 * time.Second); !d.EndAt.Equal(want) {
		t.Fatalf("endAt %v after setTimeout(30), want %v", d.EndAt, want)
	}
	env.e2bErr(t, "POST", "/sandboxes/"+sb.SandboxID+"/timeout", map[string]any{"timeout": 0}, http.StatusBadRequest)
	env.e2bErr(t, "POST", "/sandboxes/"+sb.SandboxID+"/timeout", map[string]any{}, http.StatusBadRequest)

	// Pause twice: 204, then 409 with code 409 (the SDKs return false).
	env.e2bDo(t, "POST", "/sandboxes/"+sb.SandboxID+"/pause", map[string]any{}, http.StatusNoContent, nil)
	env.e2bErr(t, "POST", "/sandboxes/"+sb.SandboxID+"/pause", map[string]any{}, http.StatusConflict)
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &d)
	if d.State != "paused" || deref(d.PauseMode) != "full" {
		t.Fatalf("after pause: state %q pauseMode %q", d.State, deref(d.PauseMode))
	}
	// Connect resumes (201) and answers the same envd token; connecting
	// to a running sandbox answers 200.
	var conn api.E2BSandbox
	env.e2bDo(t, "POST", "/v2/sandboxes/"+sb.SandboxID+"/connect", map[string]any{"timeout": 60}, http.StatusCreated, &conn)
	if deref(conn.EnvdAccessToken) != deref(sb.EnvdAccessToken) || conn.SandboxID != sb.SandboxID {
		t.Fatalf("connect answered %+v, want the create's token", conn)
	}
	env.e2bDo(t, "POST", "/v2/sandboxes/"+sb.SandboxID+"/connect", map[string]any{}, http.StatusOK, &conn)
	env.e2bErr(t, "POST", "/sandboxes/"+sb.SandboxID+"/resume", map[string]any{}, http.StatusConflict)

	// Metrics: the agent's history, with every key Python requires, and
	// the range (unix seconds) passed on.
	var ms []map[string]any
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID+"/metrics", nil, http.StatusOK, &ms)
	if len(ms) != 2 || ms[1]["timestampUnix"] != float64(1_700_000_005) || ms[1]["cpuUsedPct"] != float64(20) {
		t.Fatalf("metrics %v", ms)
	}
	var later []api.E2BSandboxMetric
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID+"/metrics?start=1700000003", nil, http.StatusOK, &later)
	if len(later) != 1 || later[0].TimestampUnix != 1_700_000_005 || later[0].MemTotal != 512<<20 {
		t.Fatalf("metrics from 1700000003: %+v", later)
	}
	for _, k := range []string{"timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal", "memCache", "diskUsed", "diskTotal"} {
		if _, ok := ms[0][k]; !ok {
			t.Errorf("metric lacks %q: %v", k, ms[0])
		}
	}
	env.e2bErr(t, "GET", "/sandboxes/"+sb.SandboxID+"/metrics?start=yesterday", nil, http.StatusBadRequest)

	// Network: CIDRs and addresses; host names are a clear 400.
	env.e2bDo(t, "PUT", "/sandboxes/"+sb.SandboxID+"/network", map[string]any{"denyOut": []string{"10.0.0.0/8", "1.2.3.4"}, "allow_internet_access": true}, http.StatusNoContent, nil)
	agent.mu.Lock()
	pol := agent.sandboxes[sb.SandboxID].network
	agent.mu.Unlock()
	if got := strings.Join(pol.GetDenyOut(), ","); got != "10.0.0.0/8,1.2.3.4/32" || !pol.GetAllowInternet() {
		t.Fatalf("agent's policy %v", pol)
	}
	env.e2bErr(t, "PUT", "/sandboxes/"+sb.SandboxID+"/network", map[string]any{"allowOut": []string{"example.com"}}, http.StatusBadRequest)

	// A filesystem-only pause shows as such and resumes by connect.
	env.e2bDo(t, "POST", "/sandboxes/"+sb.SandboxID+"/pause", map[string]any{"memory": false}, http.StatusNoContent, nil)
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &d)
	if d.State != "paused" || deref(d.PauseMode) != "filesystem" {
		t.Fatalf("after a filesystem pause: state %q pauseMode %q", d.State, deref(d.PauseMode))
	}
	if !agent.droppedMemory(sb.SandboxID) {
		t.Fatal("the agent was not asked to drop the sandbox's memory")
	}
	env.e2bDo(t, "POST", "/sandboxes/"+sb.SandboxID+"/connect", map[string]any{}, http.StatusCreated, &conn)
	d = api.E2BSandboxDetail{}
	env.e2bDo(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusOK, &d)
	if d.State != "running" || d.PauseMode != nil {
		t.Fatalf("after resuming a filesystem pause: state %q pauseMode %q", d.State, deref(d.PauseMode))
	}

	// Kill: 204, then 404 with code 404 (the JS SDK returns false by it).
	env.e2bDo(t, "DELETE", "/sandboxes/"+sb.SandboxID, nil, http.StatusNoContent, nil)
	env.e2bErr(t, "DELETE", "/sandboxes/"+sb.SandboxID, nil, http.StatusNotFound)
	env.e2bErr(t, "GET", "/sandboxes/"+sb.SandboxID, nil, http.StatusNotFound)
	if agent.Has(sb.SandboxID) {
		t.Fatal("killed sandbox still on its agent")
	}
}

func TestE2BCreateOptions(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)

	// No public traffic: a traffic token; autoPause: pause on timeout;
	// allow_internet_access false reaches the agent.
	var sb api.E2BSandbox
	env.e2bDo(t, "POST", "/sandboxes", map[string]any{
		"templateID": "minimal", "autoPause": true, "autoResume": map[string]bool{"enabled": true},
		"allow_internet_access": false, "network": map[string]any{"allowPublicTraffic": false, "allowOut": []string{"8.8.8.8/32"}},
	}, http.StatusCreated, &sb)
	if sb.TrafficAccessToken == nil || *sb.TrafficAccessToken == "" {
		t.Fatalf("no traffic token: %+v", sb)
	}
	var row struct {
		onTimeout          string
		autoResume, public bool
		trafficHash        []byte
		hasEnd             bool
	}
	if err := env.Pool.QueryRow(context.Background(), `SELECT on_timeout, auto_resume, public_traffic, traffic_token_hash, end_at IS NOT NULL FROM sandboxes WHERE id = $1`, sb.SandboxID).
		Scan(&row.onTimeout, &row.autoResume, &row.public, &row.trafficHash, &row.hasEnd); err != nil {
		t.Fatal(err)
	}
	if row.onTimeout != "pause" || !row.autoResume || row.public || string(row.trafficHash) != string(hashToken(*sb.TrafficAccessToken)) || !row.hasEnd {
		t.Fatalf("stored %+v", row)
	}
	agent.mu.Lock()
	pol := agent.sandboxes[sb.SandboxID].network
	agent.mu.Unlock()
	if pol.GetAllowInternet() || strings.Join(pol.GetAllowOut(), ",") != "8.8.8.8/32" {
		t.Fatalf("agent's policy %v", pol)
	}

	for name, body := range map[string]map[string]any{
		"unknown template":     {"templateID": "no-such-template"},
		"timeout too long":     {"templateID": "base", "timeout": 86401},
		"env name with =":      {"templateID": "base", "envVars": map[string]string{"A=B": "1"}},
		"volume mounts":        {"templateID": "base", "volumeMounts": []map[string]string{{"name": "v", "path": "/data"}}},
		"domain egress rule":   {"templateID": "base", "network": map[string]any{"denyOut": []string{"example.com"}}},
		"filesystem autopause": {"templateID": "base", "autoPause": true, "autoPauseMemory": false},
		"cpuCount 0":           {"templateID": "base", "cpuCount": 0},
		"cpuCount 17":          {"templateID": "base", "cpuCount": 17},
	} {
		t.Run(name, func(t *testing.T) {
			want := http.StatusBadRequest
			if name == "unknown template" {
				want = http.StatusNotFound
			}
			env.e2bErr(t, "POST", "/v2/sandboxes", body, want)
		})
	}
	// No key: 401 in E2B's shape.
	resp := env.doHeader(t, "GET", "/v2/sandboxes", "", nil, nil)
	var eb api.E2BError
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || resp.StatusCode != 401 || eb.Code != 401 || eb.Message == "" {
		t.Fatalf("no key: %d %+v %v", resp.StatusCode, eb, err)
	}
	resp.Body.Close()
}

func TestE2BListAndSnapshots(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	var ids []string
	for i, meta := range []map[string]string{{"user": "ann b", "n": "1"}, {"user": "ann b", "n": "2"}, {"user": "bob"}} {
		var sb api.E2BSandbox
		env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "base", "metadata": meta}, http.StatusCreated, &sb)
		ids = append(ids, sb.SandboxID)
		env.Clock.Advance(time.Duration(i+1) * time.Second)
	}
	env.e2bDo(t, "POST", "/sandboxes/"+ids[1]+"/pause", nil, http.StatusNoContent, nil)

	// The SDKs escape the filter's keys and values once more, then the
	// HTTP client encodes the whole value.
	filter := url.Values{"user": {url.QueryEscape("ann b")}}.Encode()
	var page []api.E2BSandboxDetail
	env.e2bDo(t, "GET", "/v2/sandboxes?metadata="+url.QueryEscape(filter), nil, http.StatusOK, &page)
	if len(page) != 2 || page[0].SandboxID != ids[1] || page[1].SandboxID != ids[0] {
		t.Fatalf("metadata filter: %+v", page)
	}
	env.e2bDo(t, "GET", "/v2/sandboxes?state=paused", nil, http.StatusOK, &page)
	if len(page) != 1 || page[0].SandboxID != ids[1] || page[0].State != "paused" {
		t.Fatalf("state=paused: %+v", page)
	}
	// Paging by x-next-token, oldest first.
	var seen []string
	path := "/v2/sandboxes?limit=2&order=asc"
	for range 3 {
		resp := env.e2bDo(t, "GET", path, nil, http.StatusOK, &page)
		for _, p := range page {
			seen = append(seen, p.SandboxID)
		}
		next := resp.Header.Get("X-Next-Token")
		if next == "" {
			break
		}
		path = "/v2/sandboxes?limit=2&order=asc&nextToken=" + url.QueryEscape(next)
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged %v, want %v", seen, ids)
	}
	// The item a token names may be killed before the next page: the
	// listing goes on from its position.
	resp := env.e2bDo(t, "GET", "/v2/sandboxes?limit=1", nil, http.StatusOK, &page)
	if len(page) != 1 || page[0].SandboxID != ids[2] {
		t.Fatalf("newest first, page 1: %+v", page)
	}
	env.e2bDo(t, "DELETE", "/sandboxes/"+ids[2], nil, http.StatusNoContent, nil)
	env.e2bDo(t, "GET", "/v2/sandboxes?limit=1&nextToken="+url.QueryEscape(resp.Header.Get("X-Next-Token")), nil, http.StatusOK, &page)
	if len(page) != 1 || page[0].SandboxID != ids[1] {
		t.Fatalf("page 2 after the first page's sandbox was killed: %+v, want %s", page, ids[1])
	}
	env.e2bErr(t, "GET", "/v2/sandboxes?nextToken=%25%25not-a-token", nil, http.StatusBadRequest)
	var running []api.E2BSandboxDetail
	env.e2bDo(t, "GET", "/sandboxes", nil, http.StatusOK, &running)
	if len(running) != 1 {
		t.Fatalf("GET /sandboxes (running only): %d", len(running))
	}
	env.e2bErr(t, "GET", "/v2/sandboxes?state=stopped", nil, http.StatusBadRequest)

	// Snapshots: create (named and not), list by sandbox, create a
	// sandbox from one, delete (404 the second time).
	var snap api.E2BSnapshot
	env.e2bDo(t, "POST", "/sandboxes/"+ids[0]+"/snapshots", map[string]any{"name": "my-snap"}, http.StatusCreated, &snap)
	if snap.SnapshotID != "my-snap" || len(snap.Names) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	var anon api.E2BSnapshot
	env.e2bDo(t, "POST", "/sandboxes/"+ids[1]+"/snapshots", map[string]any{}, http.StatusCreated, &anon)
	var snaps []api.E2BSnapshot
	// Paged by name: my-snap, then snap-….
	r1 := env.e2bDo(t, "GET", "/snapshots?limit=1", nil, http.StatusOK, &snaps)
	if len(snaps) != 1 || snaps[0].SnapshotID != "my-snap" || r1.Header.Get("X-Next-Token") == "" {
		t.Fatalf("snapshots page 1: %+v (next %q)", snaps, r1.Header.Get("X-Next-Token"))
	}
	r2 := env.e2bDo(t, "GET", "/snapshots?limit=1&nextToken="+url.QueryEscape(r1.Header.Get("X-Next-Token")), nil, http.StatusOK, &snaps)
	if len(snaps) != 1 || snaps[0].SnapshotID != anon.SnapshotID || r2.Header.Get("X-Next-Token") != "" {
		t.Fatalf("snapshots page 2: %+v (next %q)", snaps, r2.Header.Get("X-Next-Token"))
	}
	env.e2bDo(t, "GET", "/snapshots?sandboxID="+ids[0], nil, http.StatusOK, &snaps)
	if len(snaps) != 1 || snaps[0].SnapshotID != "my-snap" {
		t.Fatalf("snapshots of %s: %+v", ids[0], snaps)
	}
	var from api.E2BSandbox
	// A snapshot restores only in its own shape (1 vCPU here).
	env.e2bErr(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "my-snap", "cpuCount": 2}, http.StatusBadRequest)
	env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "my-snap", "cpuCount": 1}, http.StatusCreated, &from)
	if from.TemplateID != "my-snap" {
		t.Fatalf("from snapshot: %+v", from)
	}
	env.e2bDo(t, "DELETE", "/templates/"+url.PathEscape("my-snap"), nil, http.StatusNoContent, nil)
	env.e2bErr(t, "DELETE", "/templates/my-snap", nil, http.StatusNotFound)
	env.e2bErr(t, "DELETE", "/templates/minimal", nil, http.StatusForbidden)

	// Fork: one result per fork, each with its own token.
	var forks []api.E2BForkResult
	env.e2bDo(t, "POST", "/sandboxes/"+ids[0]+"/fork", map[string]any{"count": 2, "timeout": 50}, http.StatusCreated, &forks)
	if len(forks) != 2 || forks[0].Sandbox == nil || forks[1].Sandbox == nil || deref(forks[0].Sandbox.EnvdAccessToken) == deref(forks[1].Sandbox.EnvdAccessToken) {
		t.Fatalf("forks %+v", forks)
	}
	env.e2bErr(t, "POST", "/sandboxes/"+ids[0]+"/fork", map[string]any{"count": 21}, http.StatusBadRequest)
}

// TestE2BDeadlines: the sweeper applies on_timeout when the absolute
// deadline passes, however active the sandbox was.
func TestE2BDeadlines(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	var killed, paused api.E2BSandbox
	env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "base", "timeout": 30}, http.StatusCreated, &killed)
	env.e2bDo(t, "POST", "/v2/sandboxes", map[string]any{"templateID": "base", "timeout": 60, "autoPause": true}, http.StatusCreated, &paused)
	svc := env.Server.Sandboxes()
	ctx := context.Background()

	env.Clock.Advance(29 * time.Second)
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Expired) != 0 {
		t.Fatalf("sweep before any deadline: %+v %v", sw, err)
	}
	env.Clock.Advance(2 * time.Second)
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Expired) != 1 || sw.Expired[0] != killed.SandboxID {
		t.Fatalf("sweep at 31 s: %+v %v", sw, err)
	}
	if env.state(t, killed.SandboxID) != "stopped" || agent.Has(killed.SandboxID) {
		t.Fatal("expired sandbox not killed")
	}
	env.Clock.Advance(30 * time.Second)
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Expired) != 1 || sw.Expired[0] != paused.SandboxID {
		t.Fatalf("sweep at 61 s: %+v %v", sw, err)
	}
	agent.mu.Lock()
	st := agent.sandboxes[paused.SandboxID].state
	agent.mu.Unlock()
	if env.state(t, paused.SandboxID) != "paused" || st != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED {
		t.Fatalf("autoPause sandbox: store %s, agent %v", env.state(t, paused.SandboxID), st)
	}
	// Paused, its deadline no longer applies; a later sweep leaves it.
	env.Clock.Advance(time.Hour)
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Expired) != 0 {
		t.Fatalf("sweep of a paused sandbox: %+v %v", sw, err)
	}
	// Resumed (here by traffic's auto-resume hook would do the same), it
	// gets a fresh deadline of its timeout from now, and is paused again
	// when that passes.
	if _, err := svc.Resume(ctx, env.team.ID, paused.SandboxID); err != nil {
		t.Fatal(err)
	}
	var d api.E2BSandboxDetail
	env.e2bDo(t, "GET", "/sandboxes/"+paused.SandboxID, nil, http.StatusOK, &d)
	if want := env.Clock.Now().Add(60 * time.Second); !d.EndAt.Equal(want) || d.State != "running" {
		t.Fatalf("after resume: %s, endAt %v, want running until %v", d.State, d.EndAt, want)
	}
	env.Clock.Advance(61 * time.Second)
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Expired) != 1 {
		t.Fatalf("sweep after the resumed sandbox's deadline: %+v %v", sw, err)
	}

	// A create left starting by a control plane that died is failed.
	if _, err := env.Pool.Exec(ctx, `INSERT INTO sandboxes (id, team_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, updated_at)
		VALUES ('stuck-create', $1, 'minimal', 'starting', 1, 512, 2048, 300, 'kill', $2)`, env.team.ID, env.Clock.Now().Add(-5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if sw, err := svc.Sweep(ctx); err != nil || len(sw.Abandoned) != 1 {
		t.Fatalf("sweep of a stuck create: %+v %v", sw, err)
	}
	if st := env.state(t, "stuck-create"); st != "error" {
		t.Fatalf("stuck create is %s", st)
	}
}
