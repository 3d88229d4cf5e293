package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// Envd returns the client of a running sandbox's envd, for exec, background
// processes, PTY and files, and counts the call as use of the sandbox (it
// resets the idle timer). The client carries the sandbox's access token.
func (m *Manager) Envd(ctx context.Context, id string) (*envdclient.Client, error) {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	defer sb.mu.Unlock()
	if sb.rec.State != state.Running {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s, not running", id, sb.rec.State)
	}
	sb.touch(m.cfg.Clock.Now())
	return sb.envd, nil
}

// Touch resets a sandbox's idle timer (e.g. on proxy traffic).
func (m *Manager) Touch(id string) error {
	sb, err := m.lookup(id)
	if err != nil {
		return err
	}
	sb.touch(m.cfg.Clock.Now())
	return nil
}

// Pause freezes a running sandbox's vCPUs. Memory and device state stay in
// place, so Resume continues every process exactly where it was.
func (m *Manager) Pause(ctx context.Context, id string) error {
	return m.transition(ctx, id, state.Paused, func(ctx context.Context, sb *sandbox) error {
		if err := pauseMachine(ctx, sb); err != nil {
			return err
		}
		// Killed here, the vCPUs are halted under a running record:
		// Recover resumes them (the pause never answered).
		m.cfg.Faults.Hit(ctx, faultpoint.AgentPauseStopped)
		return nil
	})
}

// Resume is ResumeAs for a local caller (no team check).
func (m *Manager) Resume(ctx context.Context, id string) error {
	return m.ResumeAs(ctx, "", id)
}

// ResumeAs continues a paused sandbox where it stopped, restores a
// hibernated one from its snapshot, or cold-boots one paused without its
// memory from its disk. A team, when given, must be the
// sandbox's (PermissionDenied otherwise).
func (m *Manager) ResumeAs(ctx context.Context, team, id string) error {
	if err := checkTeamID(team); err != nil {
		return err
	}
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	if err := checkSandboxTeam(sb.rec, team); err != nil {
		return err
	}
	if sb.rec.State == state.Hibernated {
		return m.resumeHibernated(ctx, sb)
	}
	if sb.rec.State == state.Paused && sb.rec.MemoryDropped {
		return m.resumeCold(ctx, sb)
	}
	return transitionLocked(ctx, sb, state.Running, func(ctx context.Context, sb *sandbox) error {
		if err := sb.machine.Resume(ctx); err != nil {
			return err
		}
		// Connections pooled before the pause may have died meanwhile.
		sb.envd.CloseIdleConnections()
		m.syncGuestClock(ctx, sb)
		sb.touch(m.cfg.Clock.Now())
		return nil
	})
}

// transition runs do under the sandbox's lock if the move to `to` is legal,
// then records the new state.
func (m *Manager) transition(ctx context.Context, id string, to state.State, do func(context.Context, *sandbox) error) error {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	return transitionLocked(ctx, sb, to, do)
}

// transitionLocked is transition with sb.mu held.
func transitionLocked(ctx context.Context, sb *sandbox, to state.State, do func(context.Context, *sandbox) error) error {
	if err := sb.rec.State.Check(to); err != nil {
		return err
	}
	if sb.machine == nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no running VMM", sb.rec.ID)
	}
	if err := do(ctx, sb); err != nil {
		return fmt.Errorf("%s sandbox %s: %w", to, sb.rec.ID, err)
	}
	return sb.setState(to)
}

func pauseMachine(ctx context.Context, sb *sandbox) error { return sb.machine.Pause(ctx) }

// SetTimeout changes a sandbox's idle timeout (and counts as use).
func (m *Manager) SetTimeout(ctx context.Context, id string, timeout time.Duration, on OnTimeout) error {
	if timeout <= 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "timeout must be positive")
	}
	if on != "" && on != OnTimeoutKill && on != OnTimeoutPause {
		return errdefs.New(errdefs.ErrInvalidArgument, "on_timeout %q: must be kill or pause", on)
	}
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	sb.rec.Timeout = timeout
	if on != "" {
		sb.rec.OnTimeout = on
	}
	sb.touch(m.cfg.Clock.Now())
	return writeRecord(sb.dir, sb.rec)
}

// SetNetwork replaces a sandbox's egress policy at runtime.
func (m *Manager) SetNetwork(ctx context.Context, id string, pol network.Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	if sb.slot == nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no network", id)
	}
	if err := sb.slot.SetPolicy(ctx, pol); err != nil {
		return fmt.Errorf("set network policy of %s: %w", id, err)
	}
	sb.rec.Network = pol
	return writeRecord(sb.dir, sb.rec)
}

// Metrics is a sandbox's resource use, from the host (VMM cgroup, disk
// file) and from the guest (envd), each sampled cheaply.
type Metrics struct {
	// Host side.
	VMMMemoryBytes int64
	VMMCPUUsageUS  int64
	DiskAllocated  int64
	// SnapshotBytes is the disk a hibernated sandbox's snapshot takes.
	SnapshotBytes int64
	// Guest side; zero when the sandbox is not running.
	Guest envdclient.Metrics
}

// Metrics samples a sandbox's usage.
func (m *Manager) Metrics(ctx context.Context, id string) (Metrics, error) {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return Metrics{}, err
	}
	defer sb.mu.Unlock()
	var out Metrics
	if sb.group != nil {
		st, err := sb.group.Stats()
		if err != nil {
			return Metrics{}, fmt.Errorf("read cgroup stats: %w", err)
		}
		out.VMMMemoryBytes, out.VMMCPUUsageUS = st.MemoryBytes, st.CPUUsageUS
	}
	if sb.rec.Disk != "" {
		if n, err := disk.Usage(sb.rec.Disk); err == nil {
			out.DiskAllocated = n
		}
	}
	if sb.rec.State == state.Hibernated {
		if n, err := snapshot.DirUsage(m.snapshotDir(id)); err == nil {
			out.SnapshotBytes = n
		}
	}
	if sb.rec.State == state.Running && sb.envd != nil {
		g, err := sb.envd.Metrics(ctx)
		if err != nil {
			return Metrics{}, fmt.Errorf("read guest metrics: %w", err)
		}
		out.Guest = g
	}
	return out, nil
}
