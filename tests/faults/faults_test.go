package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/leakcheck"
	"github.com/wrenn/wrenn/internal/testenv"
)

// Bounds. convergeWithin is the "bounded time": after the killed
// daemon is healthy again, both sides must agree within it.
const (
	convergeWithin = 60 * time.Second
	hitWithin      = 3 * time.Minute
	healthyWithin  = 3 * time.Minute
	answerWithin   = 4 * time.Minute
)

// The operations.
const (
	opCreate    = "create"
	opFork      = "fork"
	opPause     = "pause"
	opResume    = "resume"
	opHibernate = "hibernate"
	opSnapshot  = "snapshot"
	opDestroy   = "destroy"
)

// scenario is one operation killed at one point.
type scenario struct {
	op, target, point string
}

// scenarios lists, for a target, each operation at each point that
// applies: the control plane's points when the control plane or
// PostgreSQL dies, the agent's when the agent dies.
func scenarios(target string) []scenario {
	var pts [][2]string
	if target == devstack.Agent {
		pts = [][2]string{
			{opCreate, faultpoint.AgentCreateBooted},
			{opFork, faultpoint.AgentForkRestored},
			{opPause, faultpoint.AgentPauseStopped},
			{opHibernate, faultpoint.AgentHibernateWritten},
			{opResume, faultpoint.AgentResumeRestored}, // of a hibernated sandbox
			{opSnapshot, faultpoint.AgentSnapshotWritten},
			{opDestroy, faultpoint.AgentDestroyStopping},
		}
	} else {
		pts = [][2]string{
			{opCreate, faultpoint.CPCreateRecorded},
			{opCreate, faultpoint.CPCreateStarted},
			{opFork, faultpoint.CPForkStarted},
			{opPause, faultpoint.CPTransitionDone},
			{opResume, faultpoint.CPTransitionDone},
			{opHibernate, faultpoint.CPTransitionDone},
			{opSnapshot, faultpoint.CPSnapshotStarted},
			{opDestroy, faultpoint.CPDeleteDestroyed},
		}
	}
	out := make([]scenario, len(pts))
	for i, p := range pts {
		out[i] = scenario{op: p[0], target: target, point: p[1]}
	}
	return out
}

// hibernateRoute is the REST route the hibernate rows need.
const hibernateRoute = "/v1/sandboxes/{sandboxID}/hibernate:"

// suite is the state shared by the scenarios: the stack, and the
// sandboxes reused across them.
type suite struct {
	env *stackEnv
	c   rest
	// main is the long-lived sandbox pause, resume, hibernate, fork and
	// snapshot act on; mainMarker the file content written into it.
	main, mainMarker string
	// spare is a running sandbox a destroy scenario may take (a create
	// scenario's survivor), so destroy needs no boot of its own.
	spare string
	// ignore holds ids (and "template:<name>") whose disagreement an
	// earlier scenario already reported, so it fails only that one.
	ignore map[string]bool
	// hibernate is whether this build has the hibernate route.
	hibernate bool
	tplN      int
}

// markerPath is the file each sandbox gets before the operations, and
// must still have after them.
const markerPath = "/home/user/fault-marker"

// TestFaults is the suite: for each target (control plane, agent,
// PostgreSQL), each operation at each point; after each target, every
// sandbox and template is deleted through the API and the host must hold
// nothing of them.
func TestFaults(t *testing.T) {
	images := testenv.RequireVM(t)
	suiteStart := time.Now()
	env, stop := startStack(t, images)
	defer stop()
	s := &suite{env: env, ignore: map[string]bool{},
		c:         rest{base: env.st.URL, key: env.st.Admin.APIKey, hc: &http.Client{Timeout: answerWithin}},
		hibernate: bytes.Contains(api.OpenAPI, []byte(hibernateRoute))}
	t.Logf("stack up in %s", time.Since(suiteStart).Round(time.Millisecond))
	if !s.hibernate {
		t.Logf("this build has no POST /v1/sandboxes/{id}/hibernate: the hibernate rows, and the agent's resume row (it resumes a hibernated sandbox), skip")
	}

	var timings []string
	for _, target := range []string{devstack.CP, devstack.Agent, devstack.Postgres} {
		t.Run(target, func(t *testing.T) {
			for _, sc := range scenarios(target) {
				t.Run(sc.op+"@"+sc.point, func(t *testing.T) {
					if (sc.op == opHibernate || (sc.op == opResume && target == devstack.Agent)) && !s.hibernate {
						t.Skip("needs POST /v1/sandboxes/{id}/hibernate, which this build's API does not have")
					}
					start := time.Now()
					s.run(t, sc)
					timings = append(timings, fmt.Sprintf("%-9s %-6s %-24s %6.1fs %s", target, sc.op, sc.point,
						time.Since(start).Seconds(), map[bool]string{true: "FAIL", false: "ok"}[t.Failed()]))
				})
			}
			start := time.Now()
			s.deleteAllAndCheckLeaks(t)
			timings = append(timings, fmt.Sprintf("%-9s %-6s %-24s %6.1fs", target, "delete all + leak check", "", time.Since(start).Seconds()))
		})
	}
	s.reapOrphans(t)
	t.Logf("fault suite took %s:\n%s", time.Since(suiteStart).Round(time.Second), strings.Join(timings, "\n"))
}

// run drives one scenario.
func (s *suite) run(t *testing.T, sc scenario) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := s.env.st

	// What the operation acts on, set up without faults.
	var (
		op      func(context.Context) reply
		subject string
		tpl     string
	)
	switch sc.op {
	case opCreate:
		op = func(ctx context.Context) reply {
			return s.c.call(ctx, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 3600,
				"metadata": map[string]string{"fault": sc.target + "-" + sc.point}})
		}
	case opFork, opPause, opSnapshot:
		s.ensureMain(ctx, t, api.SandboxStateRunning)
	case opResume:
		want := api.SandboxStatePaused
		if sc.target == devstack.Agent {
			want = api.SandboxStateHibernated
		}
		s.ensureMain(ctx, t, want)
	case opHibernate:
		s.ensureMain(ctx, t, api.SandboxStatePaused)
	case opDestroy:
		s.ensureSpare(ctx, t)
		subject = s.spare
	}
	if subject == "" && sc.op != opCreate {
		subject = s.main
	}
	path := "/v1/sandboxes/" + subject
	switch sc.op {
	case opFork:
		op = func(ctx context.Context) reply {
			return s.c.call(ctx, "POST", path+"/fork", map[string]any{"count": 1})
		}
	case opPause, opResume, opHibernate:
		op = func(ctx context.Context) reply { return s.c.call(ctx, "POST", path+"/"+sc.op, nil) }
	case opSnapshot:
		s.tplN++
		tpl = fmt.Sprintf("ft-%d-%s", s.tplN, randHex(3))
		op = func(ctx context.Context) reply {
			return s.c.call(ctx, "POST", path+"/snapshot", map[string]any{"name": tpl})
		}
	case opDestroy:
		op = func(ctx context.Context) reply { return s.c.call(ctx, "DELETE", path, nil) }
	}
	before, err := s.knownIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Arm, start the operation, wait for the daemon to stop at the point.
	dir := s.env.faults
	if err := faultpoint.Arm(dir, sc.point); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = faultpoint.Disarm(dir, sc.point) }()
	answered := make(chan reply, 1)
	go func() { answered <- op(ctx) }()
	// Wait for the hit, or stop waiting as soon as the operation
	// answers without reaching the point (it failed before it).
	hctx, hcancel := context.WithTimeout(ctx, hitWithin)
	var (
		early    reply
		answerIn = make(chan bool, 1)
	)
	go func() {
		select {
		case early = <-answered:
			hcancel()
			answerIn <- true
		case <-hctx.Done():
			answerIn <- false
		}
	}()
	pid, err := faultpoint.WaitHit(hctx, dir, sc.point)
	hcancel()
	answeredEarly := <-answerIn
	if err != nil {
		if answeredEarly {
			t.Fatalf("the operation never reached %s; it answered %s", sc.point, early)
		}
		t.Fatalf("%v (the operation has not answered)", err)
	}
	if answeredEarly {
		answered <- early // stopped at the point, yet it answered: reported below
	}
	restarts := st.Restarts(sc.target)
	if sc.target == devstack.Postgres {
		pgPID := st.PID(devstack.Postgres)
		if pgPID == 0 {
			t.Fatal("no postmaster to kill")
		}
		if err := syscall.Kill(pgPID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill postgresql (pid %d): %v", pgPID, err)
		}
		// The control plane goes on into a dead database.
		if err := faultpoint.Release(dir, sc.point); err != nil {
			t.Fatal(err)
		}
		t.Logf("stopped wrenn-cp (pid %d) at %s, killed the postmaster (pid %d), released", pid, sc.point, pgPID)
	} else {
		if cur := st.PID(sc.target); cur != pid {
			t.Fatalf("%s stopped in pid %d, but the stack's %s is pid %d", sc.point, pid, sc.target, cur)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s (pid %d): %v", sc.target, pid, err)
		}
		// The hit is cleared without a release file, which nobody would
		// consume and which would let the next hit of the point through.
		if err := os.Remove(filepath.Join(dir, sc.point+".hit")); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed %s (pid %d) at %s", sc.target, pid, sc.point)
	}
	killed := time.Now()

	var r reply
	select {
	case r = <-answered:
	case <-time.After(answerWithin + 10*time.Second):
		t.Fatalf("%s: no answer within %s of the kill", sc.op, answerWithin)
	}
	t.Logf("%s answered: %s", sc.op, r)
	if err := s.waitHealthy(ctx, sc.target, restarts, killed); err != nil {
		t.Fatal(err)
	}
	t.Logf("stack healthy again %s after the kill", time.Since(killed).Round(10*time.Millisecond))

	took, ds, bad, err := converge(ctx, s.c, s.env, convergeWithin, s.ignore)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) > 0 {
		for _, id := range bad {
			s.ignore[id] = true
		}
		t.Errorf("control plane and agent still disagree %s after the restart (%s answered %s):\n  %s",
			took.Round(time.Millisecond), sc.op, r, strings.Join(ds, "\n  "))
	} else {
		t.Logf("control plane and agent agree (%s after the stack was healthy)", took.Round(time.Millisecond))
	}

	// Usable, or cleanly gone as the API said.
	switch sc.op {
	case opCreate:
		s.checkNew(ctx, t, before, r, "", true)
	case opFork:
		s.checkNew(ctx, t, before, r, s.mainMarker, false)
		s.settleMain(ctx, t, r, "", true)
	case opPause:
		s.settleMain(ctx, t, r, api.SandboxStatePaused, true)
	case opResume:
		s.settleMain(ctx, t, r, api.SandboxStateRunning, true)
	case opHibernate:
		s.settleMain(ctx, t, r, api.SandboxStateHibernated, true)
	case opSnapshot:
		s.checkTemplate(ctx, t, tpl, r)
		s.settleMain(ctx, t, r, "", true)
	case opDestroy:
		s.checkDestroyed(ctx, t, subject, r)
	}
}

// waitHealthy waits until target was restarted (devstack counts a restart
// once the daemon is healthy: the agent's host online), the API works and
// the host has heartbeated since the kill: only a new agent can have, and
// an agent serves (and heartbeats) only after its recovery. Devstack's own
// check accepts a heartbeat up to a second old, which with a 1 s interval
// can be the killed agent's last.
func (s *suite) waitHealthy(ctx context.Context, target string, restartsBefore int, killed time.Time) error {
	deadline := time.Now().Add(healthyWithin)
	for {
		if s.env.st.Restarts(target) > restartsBefore {
			var host api.Host
			if s.c.decode(ctx, "GET", "/v1/me", nil, nil) == nil &&
				s.c.decode(ctx, "GET", "/v1/hosts/"+s.env.st.HostID, nil, &host) == nil && host.Status == "online" &&
				host.LastHeartbeatAt != nil && host.LastHeartbeatAt.After(killed) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not restarted and healthy within %s (restarts %d, before %d)",
				target, healthyWithin, s.env.st.Restarts(target), restartsBefore)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// knownIDs is every sandbox id either side knows.
func (s *suite) knownIDs(ctx context.Context) (map[string]bool, error) {
	cp, err := s.c.cpView(ctx)
	if err != nil {
		return nil, err
	}
	ag, err := readAgent(ctx, s.env)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for id := range cp {
		ids[id] = true
	}
	for id := range ag.states {
		ids[id] = true
	}
	return ids, nil
}

// state is a sandbox's state through the API ("" when it has none).
func (s *suite) state(ctx context.Context, id string) (api.SandboxState, error) {
	var sb api.Sandbox
	r := s.c.call(ctx, "GET", "/v1/sandboxes/"+id, nil)
	if r.err == nil && r.status == http.StatusNotFound {
		return "", nil
	}
	if !r.ok() {
		return "", fmt.Errorf("get sandbox %s: %s", id, r)
	}
	if err := json.Unmarshal(r.body, &sb); err != nil {
		return "", err
	}
	return sb.State, nil
}

// create boots a sandbox and writes its marker file.
func (s *suite) create(ctx context.Context, tag string) (id, marker string, err error) {
	var sb api.Sandbox
	if err := s.c.decode(ctx, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 3600,
		"metadata": map[string]string{"fault": tag}}, &sb); err != nil {
		return "", "", err
	}
	marker = randHex(8)
	if err := s.c.decode(ctx, "PUT", "/v1/sandboxes/"+sb.Id+"/files?path="+markerPath, []byte(marker), nil); err != nil {
		return sb.Id, "", fmt.Errorf("write marker: %w", err)
	}
	return sb.Id, marker, nil
}

// usable checks a running sandbox: a command runs and, when marker is
// set, the marker file written before the operation is intact.
func (s *suite) usable(ctx context.Context, id, marker string) error {
	var res api.ExecResult
	if err := s.c.decode(ctx, "POST", "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": "echo alive"}, &res); err != nil {
		return err
	}
	if res.ExitCode == nil || *res.ExitCode != 0 || res.Stdout == nil || *res.Stdout != "alive\n" {
		return fmt.Errorf("exec echo in %s: %+v", id, res)
	}
	if marker == "" {
		return nil
	}
	r := s.c.call(ctx, "GET", "/v1/sandboxes/"+id+"/files?path="+markerPath, nil)
	if !r.ok() || string(r.body) != marker {
		return fmt.Errorf("marker file in %s: %s, want %q", id, r, marker)
	}
	return nil
}

// bringUp resumes a paused or hibernated sandbox and checks it is usable.
func (s *suite) bringUp(ctx context.Context, id, marker string, st api.SandboxState) error {
	if st == api.SandboxStatePaused || st == api.SandboxStateHibernated {
		if err := s.c.decode(ctx, "POST", "/v1/sandboxes/"+id+"/resume", nil, nil); err != nil {
			return fmt.Errorf("resume the %s sandbox: %w", st, err)
		}
	}
	return s.usable(ctx, id, marker)
}

// ensureMain makes the main sandbox exist (a new one if the last is gone)
// and be in want, through the API.
func (s *suite) ensureMain(ctx context.Context, t *testing.T, want api.SandboxState) {
	t.Helper()
	cur := api.SandboxState("")
	if s.main != "" {
		var err error
		if cur, err = s.state(ctx, s.main); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Contains([]api.SandboxState{api.SandboxStateRunning, api.SandboxStatePaused, api.SandboxStateHibernated}, cur) {
		if s.main != "" {
			t.Logf("main sandbox %s is %q: making a new one", s.main, cur)
		}
		id, marker, err := s.create(ctx, "main")
		if err != nil {
			t.Fatalf("create the main sandbox: %v", err)
		}
		s.main, s.mainMarker, cur = id, marker, api.SandboxStateRunning
	}
	path := "/v1/sandboxes/" + s.main
	step := func(op string) {
		if err := s.c.decode(ctx, "POST", path+"/"+op, nil, nil); err != nil {
			t.Fatalf("prepare main sandbox (%s -> %s): %v", cur, want, err)
		}
	}
	for cur != want {
		switch {
		case cur == api.SandboxStateRunning:
			step("pause")
			cur = api.SandboxStatePaused
		case cur == api.SandboxStatePaused && want == api.SandboxStateHibernated:
			step("hibernate")
			cur = api.SandboxStateHibernated
		default: // paused or hibernated, want running or paused
			step("resume")
			cur = api.SandboxStateRunning
		}
	}
}

// ensureSpare makes a running sandbox for a destroy scenario.
func (s *suite) ensureSpare(ctx context.Context, t *testing.T) {
	t.Helper()
	if s.spare != "" {
		if st, err := s.state(ctx, s.spare); err == nil && st == api.SandboxStateRunning {
			return
		}
	}
	id, _, err := s.create(ctx, "spare")
	if err != nil {
		t.Fatalf("create a sandbox to destroy: %v", err)
	}
	s.spare = id
}

// settleMain checks the main sandbox after an operation on it: in want
// when the API said the operation succeeded; usable (after a resume if it
// is paused or hibernated) unless gone, and gone only if the API never
// answered or said it was not found. It is left running.
func (s *suite) settleMain(ctx context.Context, t *testing.T, r reply, want api.SandboxState, mustSurvive bool) {
	t.Helper()
	st, err := s.state(ctx, s.main)
	if err != nil {
		t.Error(err)
		return
	}
	if r.ok() && want != "" && st != want {
		t.Errorf("the API answered %s, but sandbox %s is %q, want %s", r, s.main, st, want)
	}
	switch st {
	case api.SandboxStateRunning, api.SandboxStatePaused, api.SandboxStateHibernated:
		if err := s.bringUp(ctx, s.main, s.mainMarker, st); err != nil {
			t.Errorf("sandbox %s (%s after the restart) is not usable: %v", s.main, st, err)
		} else {
			t.Logf("sandbox %s was %s after the restart and is usable, marker intact", s.main, st)
		}
	default:
		if mustSurvive && r.err == nil && r.status != http.StatusNotFound {
			t.Errorf("the API answered %s, yet sandbox %s is gone (%q): an operation on it must not lose it", r, s.main, st)
		} else {
			t.Logf("sandbox %s is gone (%q); the API answered %s", s.main, st, r)
		}
	}
}

// checkNew checks the sandboxes a create or fork made (ids neither side
// knew before): each usable (marker intact, for forks) or cleanly gone;
// all usable when the API said so. They are deleted afterwards, except
// one kept as the next destroy scenario's subject.
func (s *suite) checkNew(ctx context.Context, t *testing.T, before map[string]bool, r reply, marker string, keepSpare bool) {
	t.Helper()
	now, err := s.knownIDs(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	ag, err := readAgent(ctx, s.env)
	if err != nil {
		t.Error(err)
		return
	}
	var answeredIDs []string
	if r.ok() {
		var one api.Sandbox
		var many struct {
			Sandboxes []api.Sandbox `json:"sandboxes"`
		}
		if json.Unmarshal(r.body, &many) == nil && len(many.Sandboxes) > 0 {
			for _, sb := range many.Sandboxes {
				answeredIDs = append(answeredIDs, sb.Id)
			}
		} else if json.Unmarshal(r.body, &one) == nil && one.Id != "" {
			answeredIDs = append(answeredIDs, one.Id)
		}
	}
	for _, id := range answeredIDs {
		now[id] = true
	}
	n := 0
	for id := range now {
		if before[id] || id == s.main {
			continue
		}
		n++
		st, err := s.state(ctx, id)
		if err != nil {
			t.Error(err)
			continue
		}
		promised := slices.Contains(answeredIDs, id)
		switch st {
		case api.SandboxStateRunning, api.SandboxStatePaused, api.SandboxStateHibernated:
			if err := s.bringUp(ctx, id, marker, st); err != nil {
				t.Errorf("new sandbox %s (%s) is not usable: %v", id, st, err)
				break
			}
			t.Logf("new sandbox %s is %s and usable", id, st)
			if keepSpare && s.spare == "" {
				s.spare = id
				continue
			}
		case "", api.SandboxStateStopped, api.SandboxStateError:
			if a, held := ag.states[id]; held {
				t.Errorf("new sandbox %s: the API says %q, but the agent still holds it (%q)", id, st, a)
			} else if promised {
				t.Errorf("the API answered %s with sandbox %s, which is now %q", r, id, st)
			} else {
				t.Logf("new sandbox %s is cleanly gone (%q); the API answered %s", id, st, r)
			}
		default:
			t.Errorf("new sandbox %s is %q: neither usable nor gone", id, st)
		}
		if st != api.SandboxStateStopped {
			if d := s.c.call(ctx, "DELETE", "/v1/sandboxes/"+id, nil); !d.ok() && d.status != http.StatusNotFound {
				t.Errorf("delete new sandbox %s (%s): %s", id, st, d)
			}
		}
	}
	if r.ok() && len(answeredIDs) == 0 {
		t.Errorf("the API answered %s without naming the new sandbox", r)
	}
	if n == 0 {
		t.Logf("no new sandbox survived on either side; the API answered %s", r)
	}
}

// checkTemplate checks a snapshot-as-template: the template exists (in
// the control plane and on the host: converge checked both agree) when
// the API said so; if it exists, a sandbox made from it is usable with
// the main sandbox's marker. It is deleted afterwards.
func (s *suite) checkTemplate(ctx context.Context, t *testing.T, name string, r reply) {
	t.Helper()
	tpls, err := s.c.cpTemplates(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	if _, ok := tpls[name]; !ok {
		if r.ok() {
			t.Errorf("the API answered %s, but template %s does not exist", r, name)
		} else {
			t.Logf("template %s was not made; the API answered %s", name, r)
		}
		return
	}
	var sb api.Sandbox
	if err := s.c.decode(ctx, "POST", "/v1/sandboxes", map[string]any{"template": name, "timeout_sec": 600}, &sb); err != nil {
		t.Errorf("create from template %s: %v", name, err)
	} else {
		if err := s.usable(ctx, sb.Id, s.mainMarker); err != nil {
			t.Errorf("sandbox %s from template %s: %v", sb.Id, name, err)
		} else {
			t.Logf("template %s exists and a sandbox made from it is usable", name)
		}
		if d := s.c.call(ctx, "DELETE", "/v1/sandboxes/"+sb.Id, nil); !d.ok() {
			t.Errorf("delete sandbox %s: %s", sb.Id, d)
		}
	}
	if d := s.c.call(ctx, "DELETE", "/v1/templates/"+name, nil); !d.ok() {
		t.Errorf("delete template %s: %s", name, d)
	}
}

// checkDestroyed checks a destroy: gone when the API said so; otherwise
// gone, or usable and then destroyable.
func (s *suite) checkDestroyed(ctx context.Context, t *testing.T, id string, r reply) {
	t.Helper()
	s.spare = ""
	st, err := s.state(ctx, id)
	if err != nil {
		t.Error(err)
		return
	}
	switch st {
	case "", api.SandboxStateStopped:
		t.Logf("sandbox %s is gone (%q); the API answered %s", id, st, r)
		return
	}
	if r.ok() {
		t.Errorf("the API answered %s to the delete, but sandbox %s is %s", r, id, st)
	}
	if st == api.SandboxStateRunning {
		if err := s.usable(ctx, id, ""); err != nil {
			t.Errorf("undestroyed sandbox %s: %v", id, err)
		}
	}
	if d := s.c.call(ctx, "DELETE", "/v1/sandboxes/"+id, nil); !d.ok() {
		t.Errorf("delete sandbox %s again (it was %s): %s", id, st, d)
	}
}

// deleteAllAndCheckLeaks deletes every sandbox and template through the
// API, then expects the host to hold nothing of them within
// convergeWithin (templates the control plane still lists excepted).
func (s *suite) deleteAllAndCheckLeaks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s.main, s.mainMarker, s.spare = "", "", ""
	cp, err := s.c.cpView(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, sb := range cp {
		if sb.State == api.SandboxStateStopped {
			continue
		}
		if d := s.c.call(ctx, "DELETE", "/v1/sandboxes/"+id, nil); !d.ok() && d.status != http.StatusNotFound {
			t.Errorf("delete sandbox %s (%s): %s", id, sb.State, d)
		}
	}
	tpls, err := s.c.cpTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range tpls {
		if d := s.c.call(ctx, "DELETE", "/v1/templates/"+name, nil); !d.ok() {
			t.Errorf("delete template %s: %s", name, d)
		}
	}
	start := time.Now()
	var leaks, known []leakcheck.Resource
	for {
		rs, err := leakcheck.List(ctx, s.env.scope)
		if err != nil {
			t.Fatal(err)
		}
		tpls, err := s.c.cpTemplates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leaks, known = nil, nil
		slots := s.ignoredSlots()
		for _, r := range leakcheck.Leaks(rs, true) {
			if s.ignore[r.SandboxID] || ((r.Kind == leakcheck.KindNetNS || r.Kind == leakcheck.KindLink) && slots[r.Name]) {
				known = append(known, r)
			} else {
				leaks = append(leaks, r)
			}
		}
		// Templates: the host names them by internal names, so only the
		// count can be held against the control plane's list.
		var hostTpls []leakcheck.Resource
		for _, r := range rs {
			if r.Kind != leakcheck.KindTemplate {
				continue
			}
			if s.ignore["template:"+filepath.Base(r.Name)] {
				known = append(known, r)
			} else {
				hostTpls = append(hostTpls, r)
			}
		}
		if len(hostTpls) > len(tpls) {
			leaks = append(leaks, hostTpls...)
		}
		if len(leaks) == 0 || time.Since(start) > convergeWithin {
			break
		}
		time.Sleep(time.Second)
	}
	if len(known) > 0 {
		t.Logf("left on the host by sandboxes an earlier scenario already failed for:\n%s", leakcheck.Format(known))
	}
	if len(leaks) > 0 {
		t.Errorf("after deleting everything through the API, the host still holds (%s later):\n%s",
			convergeWithin, leakcheck.Format(leaks))
	} else {
		t.Logf("nothing left on the host %s after deleting everything", time.Since(start).Round(time.Millisecond))
	}
}

// ignoredSlots names the network slots (netns and host link names) of
// the sandboxes an earlier scenario already failed for, from their
// records: a slot's names carry no sandbox id.
func (s *suite) ignoredSlots() map[string]bool {
	out := map[string]bool{}
	for id := range s.ignore {
		b, err := os.ReadFile(filepath.Join(s.env.dir, "sandboxes", id, "sandbox.json"))
		if err != nil {
			continue
		}
		var rec struct {
			Slot int `json:"slot"`
		}
		if json.Unmarshal(b, &rec) == nil {
			out[fmt.Sprintf("%s-%d", agentName, rec.Slot)] = true
		}
	}
	return out
}

// reapOrphans removes what the failed scenarios left on the host, so the
// suite leaves no VM behind: it kills the VMMs left over, then the agent,
// whose restart cleans up after dead VMMs (Recover).
func (s *suite) reapOrphans(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rs, err := leakcheck.List(ctx, s.env.scope)
	if err != nil {
		t.Logf("reap orphans: %v", err)
		return
	}
	n := 0
	for _, r := range rs {
		if r.Kind != leakcheck.KindVMMProcess {
			continue
		}
		f := strings.Fields(r.Name) // "pid N ..."
		if len(f) < 2 {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSuffix(f[1], ":")); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	if len(leakcheck.Leaks(rs, true)) == 0 {
		return
	}
	t.Logf("cleaning up after the failed scenarios: killed %d leftover VMMs; restarting the agent to remove the rest", n)
	before := s.env.st.Restarts(devstack.Agent)
	if pid := s.env.st.PID(devstack.Agent); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if err := s.waitHealthy(ctx, devstack.Agent, before, time.Now()); err != nil {
			t.Logf("reap orphans: %v", err)
		}
	}
	// The restarted agent cleans up before it serves, but the host may
	// be shown online before that: poll.
	var left []leakcheck.Resource
	for start := time.Now(); time.Since(start) < convergeWithin; time.Sleep(time.Second) {
		rs, err := leakcheck.List(ctx, s.env.scope)
		if err != nil {
			t.Logf("reap orphans: %v", err)
			return
		}
		if left = leakcheck.Leaks(rs, true); len(left) == 0 {
			t.Logf("clean-up done: nothing left on the host")
			return
		}
	}
	t.Logf("still on the host after the clean-up:\n%s", leakcheck.Format(left))
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
