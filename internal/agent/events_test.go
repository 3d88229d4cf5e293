//go:build linux

package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/clocktest"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmtest"
)

// eventLog is an EventSink that keeps every event.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) SandboxEvent(ev Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, ev)
}

func (l *eventLog) of(id string) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, ev := range l.evs {
		if ev.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

// fakeManager is a Manager over fake VMMs (no network, cgroup or envd):
// enough for the reaper, destroy and the VMM watcher.
func fakeManager(t *testing.T, clock Clock) (*Manager, *eventLog, *vmmtest.Fake) {
	t.Helper()
	evs := &eventLog{}
	m := &Manager{
		cfg: Config{Dir: t.TempDir(), MemoryDir: t.TempDir(), Clock: clock, Events: evs},
		log: slog.New(slog.DiscardHandler), sandboxes: map[string]*sandbox{},
	}
	m.watchCtx, m.stopWatch = context.WithCancel(context.Background())
	t.Cleanup(m.stopWatchers)
	return m, evs, vmmtest.NewFake()
}

// addRunning adds a running sandbox on a fake VMM, last used at used.
func (m *Manager) addRunning(t *testing.T, drv *vmmtest.Fake, id string, timeout time.Duration, on OnTimeout, used time.Time) *sandbox {
	t.Helper()
	dir := m.sandboxDir(id)
	if err := os.MkdirAll(vmDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	mach, err := drv.Boot(context.Background(), vmm.Spec{ID: id, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sb := &sandbox{owner: m, dir: dir, machine: mach,
		rec: &record{ID: id, State: state.Running, Version: 2, Timeout: timeout, OnTimeout: on}}
	sb.touch(used)
	if err := writeRecord(dir, sb.rec); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.sandboxes[id] = sb
	m.mu.Unlock()
	return sb
}

func wantEvents(t *testing.T, got []Event, want ...Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.State != w.State || g.Version != w.Version || g.Reason != w.Reason {
			t.Errorf("event %d: %s v%d %s, want %s v%d %s", i, g.State, g.Version, g.Reason, w.State, w.Version, w.Reason)
		}
	}
}

// TestReaperEmitsEvents: the reaper's pause and kill are reported as
// REAPER_PAUSE and REAPER_KILL with versions past the sandbox's last, the
// pause's version is persisted, and a later requested change carries on
// the count as REQUESTED.
func TestReaperEmitsEvents(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := clocktest.New(start)
	m, evs, drv := fakeManager(t, clock)
	m.addRunning(t, drv, "pauseme", time.Minute, OnTimeoutPause, start)
	m.addRunning(t, drv, "killme", time.Minute, OnTimeoutKill, start)
	m.addRunning(t, drv, "busy", time.Hour, OnTimeoutKill, start)

	ctx := context.Background()
	clock.Advance(30 * time.Second)
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if len(evs.of("pauseme"))+len(evs.of("killme")) != 0 {
		t.Fatal("events before any timeout passed")
	}

	clock.Advance(time.Minute)
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs.of("pauseme"), Event{State: state.Paused, Version: 3, Reason: ReasonReaperPause})
	wantEvents(t, evs.of("killme"),
		Event{State: state.Stopping, Version: 3, Reason: ReasonReaperKill},
		Event{State: state.Stopped, Version: 4, Reason: ReasonReaperKill})
	wantEvents(t, evs.of("busy"))
	if at := evs.of("pauseme")[0].At; !at.Equal(clock.Now()) {
		t.Errorf("event time %v, want the clock's %v", at, clock.Now())
	}
	rec, err := readRecord(m.sandboxDir("pauseme"))
	if err != nil || rec.Version != 3 || rec.State != state.Paused {
		t.Fatalf("persisted record %+v (%v), want paused at version 3", rec, err)
	}
	if info, _ := m.Get(ctx, "pauseme"); info.Version != 3 {
		t.Errorf("Info.Version %d, want 3", info.Version)
	}

	// A destroy the control plane asks for: REQUESTED, the count going on;
	// the reaper's cause does not leak into it.
	if err := m.Destroy(ctx, "pauseme"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, evs.of("pauseme")[1:],
		Event{State: state.Stopping, Version: 4, Reason: ReasonRequested},
		Event{State: state.Stopped, Version: 5, Reason: ReasonRequested})
}

// TestVMMExitEmitsEvent: a VMM that exits on its own puts its sandbox in
// error with VMM_EXITED, or GUEST_POWEROFF when the console says the
// guest powered off; a VMM the agent stops itself is no such event.
func TestVMMExitEmitsEvent(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m, evs, drv := fakeManager(t, clocktest.New(start))
	ctx := context.Background()
	watch := func(sb *sandbox) {
		sb.mu.Lock()
		m.watchMachine(sb)
		sb.mu.Unlock()
	}
	crash := m.addRunning(t, drv, "crash", time.Hour, OnTimeoutKill, start)
	poweroff := m.addRunning(t, drv, "poweroff", time.Hour, OnTimeoutKill, start)
	stopped := m.addRunning(t, drv, "stopped", time.Hour, OnTimeoutKill, start)
	for _, sb := range []*sandbox{crash, poweroff, stopped} {
		watch(sb)
	}
	console := "[    1.0] reboot: Power down\n"
	if err := os.WriteFile(filepath.Join(vmDir(poweroff.dir), "console.log"), []byte(console), 0o600); err != nil {
		t.Fatal(err)
	}

	// The VMMs die behind the agent's back.
	for _, sb := range []*sandbox{crash, poweroff} {
		if err := sb.machine.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The agent stops this one itself.
	if err := m.Destroy(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for len(evs.of("crash")) == 0 || len(evs.of("poweroff")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no event for a dead VMM: crash %+v, poweroff %+v", evs.of("crash"), evs.of("poweroff"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantEvents(t, evs.of("crash"), Event{State: state.Error, Version: 3, Reason: ReasonVMMExited})
	wantEvents(t, evs.of("poweroff"), Event{State: state.Error, Version: 3, Reason: ReasonGuestPoweroff})
	if msg := evs.of("crash")[0].Message; msg == "" {
		t.Error("a VMM exit without a message")
	}
	info, err := m.Get(ctx, "crash")
	if err != nil || info.State != state.Error || info.PID != 0 {
		t.Errorf("crashed sandbox: %+v (%v), want error without a VMM", info, err)
	}
	wantEvents(t, evs.of("stopped"),
		Event{State: state.Stopping, Version: 3, Reason: ReasonRequested},
		Event{State: state.Stopped, Version: 4, Reason: ReasonRequested})

	// The sandbox in error can still be destroyed.
	if err := m.Destroy(ctx, "crash"); err != nil {
		t.Fatal(err)
	}
}
