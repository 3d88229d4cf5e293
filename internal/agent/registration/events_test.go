package registration_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	wagent "github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/agent/registration/cptest"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/capin"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// flakyReporter fails while down is set, then passes calls to the real
// (fake control plane's) client; it counts the attempts.
type flakyReporter struct {
	next registration.EventReporter

	mu       sync.Mutex
	down     bool
	attempts int
}

func (f *flakyReporter) ReportSandboxEvents(ctx context.Context, req *connect.Request[hostagentv1.ReportSandboxEventsRequest]) (*connect.Response[hostagentv1.ReportSandboxEventsResponse], error) {
	f.mu.Lock()
	f.attempts++
	down := f.down
	f.mu.Unlock()
	if down {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("control plane unreachable"))
	}
	return f.next.ReportSandboxEvents(ctx, req)
}

func (f *flakyReporter) set(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *flakyReporter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts
}

func ev(id string, st state.State, version int64, reason wagent.Reason) wagent.Event {
	return wagent.Event{ID: id, State: st, Reason: reason, Version: version, At: time.Now()}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventSenderCoalescesAndRetries: events queued before Run and while
// the control plane is unreachable are sent once it answers, one per
// sandbox (the newest), with the host's credential; the queue never
// blocks the caller and drops (counting) past its bound.
func TestEventSenderCoalescesAndRetries(t *testing.T) {
	cp := cptest.NewRegistry(t)
	url := cp.Serve(t)
	_, creds := register(t, cp, url, "127.0.0.1:50051")
	id := &registration.Identity{}
	if err := id.Set(creds); err != nil {
		t.Fatal(err)
	}
	client, err := registration.NewClient(url, capin.Trust{CAPEM: creds.CAPEM})
	if err != nil {
		t.Fatal(err)
	}
	rep := &flakyReporter{next: client, down: true}
	s := registration.NewEventSender(registration.EventSenderConfig{MaxPending: 3, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})

	// Before Run (recovery's reports): queued.
	s.SandboxEvent(ev("a", state.Running, 1, wagent.ReasonRecovered))
	s.SandboxEvent(ev("a", state.Paused, 2, wagent.ReasonReaperPause))
	s.SandboxEvent(ev("b", state.Stopping, 4, wagent.ReasonReaperKill))
	s.SandboxEvent(ev("b", state.Stopped, 5, wagent.ReasonReaperKill))
	s.SandboxEvent(ev("b", state.Stopping, 4, wagent.ReasonReaperKill)) // older than the queued one
	s.SandboxEvent(ev("legacy", state.Running, 0, wagent.ReasonRecovered))
	if n := s.Pending(); n != 2 {
		t.Fatalf("pending %d, want 2 (one per sandbox, unversioned dropped)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, rep, id); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Unreachable: retried with backoff, still queued, newer events
	// replace older ones meanwhile.
	waitFor(t, "three failed attempts", func() bool { return rep.count() >= 3 })
	s.SandboxEvent(ev("a", state.Running, 3, wagent.ReasonRequested))
	s.SandboxEvent(ev("c", state.Paused, 7, wagent.ReasonReaperPause))
	s.SandboxEvent(ev("d", state.Paused, 1, wagent.ReasonReaperPause)) // over MaxPending 3: dropped
	if n := s.Pending(); n != 3 {
		t.Fatalf("pending %d while unreachable, want 3", n)
	}

	rep.set(false)
	waitFor(t, "the queue to drain", func() bool { return s.Pending() == 0 })
	host, _ := cp.Host(creds.HostID)
	waitFor(t, "the events to arrive", func() bool { host, _ = cp.Host(creds.HostID); return len(host.Events) == 3 })
	got := map[string]*hostagentv1.SandboxEvent{}
	for _, e := range host.Events {
		if got[e.GetSandboxId()] != nil {
			t.Errorf("sandbox %s sent twice", e.GetSandboxId())
		}
		got[e.GetSandboxId()] = e
	}
	want := map[string]struct {
		st      hostagentv1.SandboxState
		version int64
		reason  hostagentv1.SandboxEventReason
	}{
		"a": {hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, 3, hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REQUESTED},
		"b": {hostagentv1.SandboxState_SANDBOX_STATE_STOPPED, 5, hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_KILL},
		"c": {hostagentv1.SandboxState_SANDBOX_STATE_PAUSED, 7, hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_PAUSE},
	}
	for id, w := range want {
		e := got[id]
		if e == nil || e.GetState() != w.st || e.GetVersion() != w.version || e.GetReason() != w.reason {
			t.Errorf("sandbox %s: sent %v, want %v v%d %v", id, e, w.st, w.version, w.reason)
		}
	}
	if got["d"] != nil {
		t.Error("the event past the queue's bound was sent")
	}

	// Reachable: a new event goes out at once.
	s.SandboxEvent(ev("a", state.Stopped, 4, wagent.ReasonReaperKill))
	waitFor(t, "a prompt send", func() bool { host, _ = cp.Host(creds.HostID); return len(host.Events) == 4 })
}
