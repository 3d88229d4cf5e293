package hostreg_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

const (
	agentRunning    = hostagentv1.SandboxState_SANDBOX_STATE_RUNNING
	agentPaused     = hostagentv1.SandboxState_SANDBOX_STATE_PAUSED
	agentHibernated = hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED
	agentStopped    = hostagentv1.SandboxState_SANDBOX_STATE_STOPPED
	agentError      = hostagentv1.SandboxState_SANDBOX_STATE_ERROR

	reasonRequested   = hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REQUESTED
	reasonReaperPause = hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_PAUSE
	reasonReaperKill  = hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_KILL
	reasonOOM         = hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_OOM
)

func event(id string, st hostagentv1.SandboxState, version int64, reason hostagentv1.SandboxEventReason) *hostagentv1.SandboxEvent {
	return &hostagentv1.SandboxEvent{SandboxId: id, State: st, Version: version, Reason: reason, AtUnixMs: time.Now().UnixMilli()}
}

func (e *env) report(t *testing.T, cred string, evs ...*hostagentv1.SandboxEvent) {
	t.Helper()
	if err := e.reportErr(cred, evs...); err != nil {
		t.Fatalf("report events: %v", err)
	}
}

func (e *env) reportErr(cred string, evs ...*hostagentv1.SandboxEvent) error {
	req := connect.NewRequest(&hostagentv1.ReportSandboxEventsRequest{Events: evs})
	req.Header().Set("Authorization", "Bearer "+cred)
	_, err := e.client.ReportSandboxEvents(context.Background(), req)
	return err
}

type row struct {
	state, errText string
	version        int64
	stoppedAt      *time.Time
	memoryDropped  bool
}

func (e *env) row(t *testing.T, id string) row {
	t.Helper()
	var r row
	err := e.pool.QueryRow(context.Background(),
		"SELECT state, error, agent_version, stopped_at, memory_dropped FROM sandboxes WHERE id = $1", id).
		Scan(&r.state, &r.errText, &r.version, &r.stoppedAt, &r.memoryDropped)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) wantRow(t *testing.T, id, state string, version int64) {
	t.Helper()
	if r := e.row(t, id); r.state != state || r.version != version {
		t.Errorf("sandbox %s: %s at version %d, want %s at version %d", id, r.state, r.version, state, version)
	}
}

// TestEventsApplyInVersionOrder: the reaper's pause, a resume, a kill
// arrive as events and move the row; an older event after a newer one,
// and a duplicate, change nothing; each applied event is logged with its
// reason.
func TestEventsApplyInVersionOrder(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	e.addSandbox(t, "sb", host, "running", e.clk.Now().Add(-time.Hour))

	e.report(t, cred, event("sb", agentPaused, 3, reasonReaperPause))
	e.wantRow(t, "sb", "paused", 3)
	if v, ok := e.logs.attr("sandbox event applied", "reason"); !ok || v.String() != "reaper_pause" {
		t.Errorf("applied event logged with reason %v (%v), want reaper_pause", v, ok)
	}

	// A late event from before the pause (say, the create's running) and a
	// duplicate of the pause are ignored.
	e.report(t, cred, event("sb", agentRunning, 2, reasonRequested), event("sb", agentPaused, 3, reasonReaperPause))
	e.wantRow(t, "sb", "paused", 3)

	e.report(t, cred, event("sb", agentRunning, 4, reasonRequested))
	e.wantRow(t, "sb", "running", 4)
	// An event older than the last applied one, arriving after it.
	e.report(t, cred, event("sb", agentPaused, 3, reasonReaperPause))
	e.wantRow(t, "sb", "running", 4)

	// Starting (a resume from disk under way) is not applied: its
	// outcome follows with a newer version.
	e.report(t, cred, event("sb", hostagentv1.SandboxState_SANDBOX_STATE_STARTING, 5, reasonRequested))
	e.wantRow(t, "sb", "running", 4)

	e.report(t, cred, event("sb", agentStopped, 6, reasonReaperKill))
	r := e.row(t, "sb")
	if r.state != "stopped" || r.stoppedAt == nil || !r.stoppedAt.Equal(e.clk.Now()) {
		t.Errorf("after a reaper kill: %+v, want stopped at %v", r, e.clk.Now())
	}
}

// TestEventsStayOnTheirHost: an event about another host's sandbox, an
// unknown one or an unversioned one changes nothing; a bad credential is
// refused.
func TestEventsStayOnTheirHost(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	other, otherTok := e.newHost(t)
	e.register(t, otherTok, "127.0.0.1:50052")
	e.addSandbox(t, "mine", host, "running", e.clk.Now())
	e.addSandbox(t, "theirs", other, "running", e.clk.Now())

	e.report(t, cred, event("theirs", agentStopped, 9, reasonReaperKill), event("nobody", agentPaused, 1, reasonReaperPause),
		event("mine", agentPaused, 0, reasonReaperPause))
	e.wantRow(t, "theirs", "running", 0)
	e.wantRow(t, "mine", "running", 0)

	wantCode(t, e.reportErr("wrn_host_"+"bogus", event("mine", agentPaused, 1, reasonReaperPause)), connect.CodeUnauthenticated)
	e.wantRow(t, "mine", "running", 0)
}

// TestEventsNeverResurrect: a stopped row stays stopped whatever the
// agent says, and a row still starting is the create's to finish.
func TestEventsNeverResurrect(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	e.addSandbox(t, "gone", host, "stopped", e.clk.Now())
	e.addSandbox(t, "new", host, "starting", e.clk.Now())

	e.report(t, cred, event("gone", agentRunning, 10, reasonRequested), event("new", agentRunning, 2, reasonRequested))
	e.wantRow(t, "gone", "stopped", 0)
	e.wantRow(t, "new", "starting", 0)

	_, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds:      []string{"gone", "new"},
		SandboxStates:   map[string]hostagentv1.SandboxState{"gone": agentPaused, "new": agentRunning},
		SandboxVersions: map[string]int64{"gone": 11, "new": 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.wantRow(t, "gone", "stopped", 0)
	e.wantRow(t, "new", "starting", 0)
}

// TestEventErrorKeepsReason: a VMM killed for its memory puts the row in
// error with the agent's message.
func TestEventErrorKeepsReason(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	e.addSandbox(t, "oom", host, "running", e.clk.Now())
	ev := event("oom", agentError, 5, reasonOOM)
	ev.Message = "the sandbox's VMM was killed for exceeding its memory limit"
	e.report(t, cred, ev)
	if r := e.row(t, "oom"); r.state != "error" || r.errText != ev.Message || r.version != 5 {
		t.Errorf("after an OOM event: %+v", r)
	}
	// The host still holds it (until it is deleted): no stray.
	_, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds:      []string{"oom"},
		SandboxStates:   map[string]hostagentv1.SandboxState{"oom": agentError},
		SandboxVersions: map[string]int64{"oom": 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.logs.has("host holds sandboxes the database does not place on it") {
		t.Error("a sandbox in error its host holds was logged as a stray")
	}
	e.wantRow(t, "oom", "error", 5)
}

// TestHeartbeatRepairsMissedEvent: a pause and a kill whose events were
// lost are repaired by the next heartbeat (the version it carries is newer
// than the row's); a heartbeat older than an event already applied
// changes nothing.
func TestHeartbeatRepairsMissedEvent(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	old := e.clk.Now().Add(-time.Hour)
	for _, id := range []string{"paused-by-reaper", "hibernated", "killed", "ahead", "no-version"} {
		e.addSandbox(t, id, host, "running", old)
	}
	// An event newer than the heartbeat below already arrived for "ahead".
	e.report(t, cred, event("ahead", agentPaused, 7, reasonReaperPause))

	_, err := e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds: []string{"paused-by-reaper", "hibernated", "ahead", "no-version"},
		SandboxStates: map[string]hostagentv1.SandboxState{
			"paused-by-reaper": agentPaused, "hibernated": agentHibernated, "ahead": agentRunning, "no-version": agentPaused,
		},
		SandboxVersions: map[string]int64{"paused-by-reaper": 3, "hibernated": 5, "ahead": 6},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.wantRow(t, "paused-by-reaper", "paused", 3)
	e.wantRow(t, "hibernated", "hibernated", 5)
	e.wantRow(t, "ahead", "paused", 7)
	// An older agent (no versions): the state of a present sandbox is
	// left alone, as before.
	e.wantRow(t, "no-version", "running", 0)
	// Killed while its event was lost: the host no longer holds it.
	if r := e.row(t, "killed"); r.state != "stopped" || r.stoppedAt == nil {
		t.Errorf("vanished sandbox: %+v, want stopped", r)
	}
	if v, ok := e.logs.attr("sandbox state repaired from heartbeat", "sandbox_id"); !ok || v.String() == "" {
		t.Error("repair not logged")
	}

	// A paused sandbox the host no longer holds stops too.
	_, err = e.heartbeat(cred, &hostagentv1.HeartbeatRequest{
		SandboxIds:      []string{"hibernated", "ahead", "no-version"},
		SandboxStates:   map[string]hostagentv1.SandboxState{"hibernated": agentHibernated, "ahead": agentPaused, "no-version": agentPaused},
		SandboxVersions: map[string]int64{"hibernated": 5, "ahead": 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.row(t, "paused-by-reaper"); r.state != "stopped" {
		t.Errorf("vanished paused sandbox: %s, want stopped", r.state)
	}
}

// TestTransitionRacingEvent: the control plane's own transition (the
// sandbox service's guarded TransitionSandbox) and the agent's event of
// the same change end in the same state in either order; an event of a
// later change wins over the transition's, and the transition after it
// finds the row moved.
func TestTransitionRacingEvent(t *testing.T) {
	e := newEnv(t)
	host, tok := e.newHost(t)
	cred := e.register(t, tok, "127.0.0.1:50051").HostToken
	ctx := context.Background()
	transition := func(id string, from []string, to string) bool {
		t.Helper()
		_, err := e.q.TransitionSandbox(ctx, store.TransitionSandboxParams{ID: id, TeamID: e.teamID, FromStates: from, ToState: to, Now: e.clk.Now()})
		if store.IsNoRows(err) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	e.addSandbox(t, "event-first", host, "running", e.clk.Now())
	e.addSandbox(t, "cp-first", host, "running", e.clk.Now())

	// Event first: the transition finds the row already paused (which
	// sandboxes.transitionRow counts as success).
	e.report(t, cred, event("event-first", agentPaused, 3, reasonRequested))
	if transition("event-first", []string{"running"}, "paused") {
		t.Error("transition moved a row the event had moved already")
	}
	e.wantRow(t, "event-first", "paused", 3)

	// Transition first: the event then agrees with it.
	if !transition("cp-first", []string{"running"}, "paused") {
		t.Fatal("transition refused")
	}
	e.report(t, cred, event("cp-first", agentPaused, 3, reasonRequested))
	e.wantRow(t, "cp-first", "paused", 3)

	// The control plane resumes (running) while the reaper's pause of the
	// resumed sandbox is already on its way: the reaper's event is newer
	// (version 5) than the resume's (4), whichever lands first.
	if !transition("cp-first", []string{"paused"}, "running") {
		t.Fatal("resume refused")
	}
	e.report(t, cred, event("cp-first", agentPaused, 5, reasonReaperPause), event("cp-first", agentRunning, 4, reasonRequested))
	e.wantRow(t, "cp-first", "paused", 5)
}
