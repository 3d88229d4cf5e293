package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// stopTimeout bounds a VMM's graceful stop before it is killed.
const stopTimeout = 10 * time.Second

// Destroy stops a sandbox's VM and removes everything it held on the host:
// VMM, network slot, cgroup, disk, directory. Destroying a sandbox that is
// already gone is NotFound; a half-destroyed one can be destroyed again.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	return m.destroyLocked(ctx, sb)
}

// destroyLocked is Destroy with sb.mu held.
func (m *Manager) destroyLocked(ctx context.Context, sb *sandbox) error {
	id := sb.rec.ID
	if sb.rec.State != state.Stopping {
		if err := sb.setState(state.Stopping); err != nil {
			return err
		}
	}
	// Killed here, the record says stopping: Recover finishes the job.
	m.cfg.Faults.Hit(ctx, faultpoint.AgentDestroyStopping)
	start := time.Now()
	if err := m.teardown(ctx, sb); err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", id, err)
	}
	_ = sb.forceState(state.Stopped, "") // no record to write: its directory is gone
	m.forget(id)
	m.log.Info("sandbox destroyed", "sandbox_id", id, "duration", time.Since(start))
	return nil
}

// teardown releases everything in reverse order of creation, carrying on
// past errors so one stuck piece does not leak the rest. Each piece is
// idempotent.
func (m *Manager) teardown(ctx context.Context, sb *sandbox) error {
	errs := []error{
		m.stopMachine(ctx, sb),
		m.removeMemory(sb.rec.ID),
		m.removeGroup(ctx, sb),
		snapshot.Remove(m.snapshotDir(sb.rec.ID)),
	}
	// The files go before the slot: the next sandbox in the slot runs as
	// the same VMM identity (see confine.go).
	if err := os.RemoveAll(sb.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove sandbox dir: %w", err))
	}
	errs = append(errs, m.releaseSlot(ctx, sb))
	return errors.Join(errs...)
}

func (m *Manager) stopMachine(ctx context.Context, sb *sandbox) error {
	if sb.envd != nil {
		sb.envd.CloseIdleConnections()
	}
	if sb.machine == nil {
		return nil
	}
	stopCtx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := sb.machine.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop vmm: %w", err)
	}
	sb.machine = nil
	return nil
}

func (m *Manager) removeGroup(ctx context.Context, sb *sandbox) error {
	if sb.group == nil {
		return nil
	}
	if err := sb.group.Remove(ctx, cgroup.KillProcesses); err != nil {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	sb.group = nil
	return nil
}

func (m *Manager) releaseSlot(ctx context.Context, sb *sandbox) error {
	if sb.slot == nil {
		return nil
	}
	if err := m.cfg.Network.Release(ctx, sb.slot); err != nil {
		return fmt.Errorf("release network slot %d: %w", sb.slot.Index, err)
	}
	sb.slot = nil
	return nil
}
