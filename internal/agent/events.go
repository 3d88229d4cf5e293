package agent

import (
	"bytes"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/tailfile"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Reason says why a sandbox's state changed.
type Reason string

// The reasons an Event carries.
const (
	// ReasonRequested: a caller (the control plane) asked for it.
	ReasonRequested Reason = "requested"
	// ReasonReaperPause and ReasonReaperKill: idle past its timeout.
	ReasonReaperPause Reason = "reaper_pause"
	ReasonReaperKill  Reason = "reaper_kill"
	// ReasonVMMExited: the VMM process ended without being asked to.
	ReasonVMMExited Reason = "vmm_exited"
	// ReasonOOM: the VMM was killed for exceeding its cgroup's memory.
	ReasonOOM Reason = "oom"
	// ReasonGuestPoweroff: the guest powered off or rebooted, which ends
	// the VMM.
	ReasonGuestPoweroff Reason = "guest_poweroff"
	// ReasonRecovered: an agent restart found the sandbox (re-adopted, or
	// dead and cleaned up).
	ReasonRecovered Reason = "recovered"
)

// Event is one state change of one sandbox, for the control plane.
type Event struct {
	ID            string
	State         state.State
	MemoryDropped bool
	Reason        Reason
	// Message says why in words (an error's text for state.Error).
	Message string
	At      time.Time
	// Version increases with every state change of the sandbox and is
	// persisted in its record, so a receiver can order events and
	// heartbeats (record.Version).
	Version int64
}

// EventSink receives every Event. SandboxEvent is called with the
// sandbox's lock held, so it must not block (queue and return).
type EventSink interface {
	SandboxEvent(Event)
}

// emit reports sb's current state; sb.mu is held. The reason is the one
// the operation under way set (sb.cause), else ReasonRequested.
func (m *Manager) emit(sb *sandbox, msg string) {
	if m == nil || m.cfg.Events == nil || sb.rec.Purpose != "" {
		return
	}
	reason := sb.cause
	if reason == "" {
		reason = ReasonRequested
	}
	m.cfg.Events.SandboxEvent(Event{
		ID: sb.rec.ID, State: sb.rec.State, MemoryDropped: sb.rec.MemoryDropped, Reason: reason,
		Message: msg, At: m.cfg.Clock.Now(), Version: sb.rec.Version,
	})
}

// emitRecovered reports a re-adopted sandbox as it is: the control plane
// may have missed events while this agent was down (the queue is not
// persisted). Its version is unchanged, so a control plane that has it
// already ignores the report.
func (m *Manager) emitRecovered(sb *sandbox) {
	sb.cause = ReasonRecovered
	m.emit(sb, "re-adopted after an agent restart")
	sb.cause = ""
}

// withCause runs fn with sb.cause set; sb.mu is held.
func withCause(sb *sandbox, r Reason, fn func() error) error {
	sb.cause = r
	defer func() { sb.cause = "" }()
	return fn()
}

// watchMachine starts watching mach, sb's VMM, unless it is watched
// already; sb.mu is held. When the VMM exits without the agent having
// stopped it, the sandbox goes to error and an event says why.
func (m *Manager) watchMachine(sb *sandbox) {
	mach := sb.machine
	if mach == nil || sb.watched == mach || m.watchCtx == nil {
		return
	}
	sb.watched = mach
	m.watchers.Go(func() { m.watch(sb, mach) })
}

func (m *Manager) watch(sb *sandbox, mach vmm.Machine) {
	// Ends when the VMM exits, or with an error when the agent lets go of
	// it (Close) or shuts down: neither is the VMM's death.
	if err := mach.Wait(m.watchCtx); err != nil {
		return
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	// The agent stops VMMs under sb.mu and forgets them (sb.machine nil or
	// another machine) before letting go of the lock: such an exit was
	// asked for.
	if sb.machine != mach {
		return
	}
	switch sb.rec.State {
	case state.Running, state.Paused:
	default:
		return
	}
	reason, msg := m.exitCause(sb)
	m.log.Warn("sandbox VMM exited on its own", "sandbox_id", sb.rec.ID, "state", sb.rec.State, "reason", reason, "message", msg)
	sb.machine = nil
	if sb.envd != nil {
		sb.envd.CloseIdleConnections()
	}
	// Its slot, cgroup, memory file and disk stay until it is destroyed.
	_ = withCause(sb, reason, func() error { return sb.forceState(state.Error, msg) })
}

// exitCause tells why sb's VMM exited: the cgroup's OOM kills, the
// console's last words, or neither.
func (m *Manager) exitCause(sb *sandbox) (Reason, string) {
	if sb.group != nil {
		if st, err := sb.group.Stats(); err == nil && st.OOMKills > 0 {
			return ReasonOOM, "the sandbox's VMM was killed for exceeding its memory limit"
		}
	}
	tail, _ := tailfile.Read(filepath.Join(vmDir(sb.dir), "console.log"), 4<<10)
	for _, last := range [][]byte{[]byte("reboot: Power down"), []byte("reboot: Restarting system"), []byte("System halted")} {
		if bytes.Contains(tail, last) {
			return ReasonGuestPoweroff, "the guest powered off or rebooted (" + string(last) + ")"
		}
	}
	return ReasonVMMExited, "the sandbox's VMM exited unexpectedly"
}

// forceState records a state change the lifecycle's checks do not guard
// (a failure, a revert, the end of a destroy), bumps the version and
// reports it; sb.mu is held. The record is not written for Stopped (its
// directory is gone).
func (sb *sandbox) forceState(to state.State, msg string) error {
	sb.rec.State = to
	sb.rec.Version++
	if to != state.Running {
		sb.leftRunning()
	}
	var err error
	if to != state.Stopped {
		err = writeRecord(sb.dir, sb.rec)
	}
	sb.owner.emit(sb, msg)
	return err
}

// stopWatchers ends the VMM watchers (Close).
func (m *Manager) stopWatchers() {
	if m.stopWatch != nil {
		m.stopWatch()
	}
	m.watchers.Wait()
}
