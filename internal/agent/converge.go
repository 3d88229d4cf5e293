package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/snapshot"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Convergence after an agent killed inside an operation. Every operation
// leaves its on-disk traces in an order Recover can read back: a record
// state, a snapshot directory with or without its manifest, a template or
// fork snapshot still under its temporary name. Recover finishes or rolls
// back each one so the sandbox is usable in the state it reports, or gone
// and reported stopped; never half.

// faultStep stops a plan at a fault point a test armed (a no-op
// otherwise).
func (m *Manager) faultStep(point string) plan.Step {
	return plan.Step{
		Name: "fault point " + point,
		Do: func(ctx context.Context) error {
			m.cfg.Faults.Hit(ctx, point)
			return nil
		},
	}
}

// runningStep ends a boot or a restore: the sandbox is running.
func runningStep(sb *sandbox) plan.Step {
	return plan.Step{
		Name: "running",
		Do:   func(context.Context) error { return sb.setState(state.Running) },
	}
}

// forkSnapshotPrefix names a fork's source snapshot under snapshots/ while
// the fork runs (ForkAs removes it when it returns).
const forkSnapshotPrefix = "fork-"

// removeInterrupted deletes what operations cut short by the previous
// agent's death left outside any sandbox's directory: templates being
// written (images/.<name>.tmp-*, never published, so no template row can
// own them) and fork source snapshots (snapshots/fork-<id>-<rand>: the
// fork they served is over, its forks were still starting and recovery
// removes them). Run before adopting, which needs neither.
func (m *Manager) removeInterrupted() error {
	var errs []error
	tmps, _ := filepath.Glob(filepath.Join(m.cfg.Dir, "images", ".*.tmp-*"))
	for _, d := range tmps {
		m.log.Info("removing a template snapshot cut short", "dir", d)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove unpublished template %s: %w", d, err))
		}
	}
	forks, _ := filepath.Glob(filepath.Join(m.cfg.Dir, "snapshots", forkSnapshotPrefix+"*"))
	for _, d := range forks {
		// A sandbox a caller named "fork-..." hibernates under
		// snapshots/<its id>: that one is not a fork's.
		if _, err := os.Stat(m.sandboxDir(filepath.Base(d))); err == nil {
			continue
		}
		m.log.Info("removing the source snapshot of a fork cut short", "dir", d)
		if err := snapshot.Remove(d); err != nil {
			errs = append(errs, fmt.Errorf("remove fork snapshot %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// statusMachine is a VMM that reports its run state (QEMU's query-status).
type statusMachine interface {
	Status(ctx context.Context) (string, error)
}

// matchRunState makes a re-adopted VMM's vCPUs agree with the record.
// A record that says running with halted vCPUs is a pause cut short before
// it was recorded (or a fork or template capture cut short, which halts
// the source while it copies): the pause never answered, so the vCPUs go
// on. A record that says paused with running vCPUs is a resume cut short
// the same way: the vCPUs stop again. Without a status to read, the
// record's state is applied anyway (pause and resume are idempotent).
func (m *Manager) matchRunState(ctx context.Context, sb *sandbox) error {
	mach, want := sb.machine, sb.rec.State
	if mach == nil || (want != state.Running && want != state.Paused) {
		return nil
	}
	if sm, ok := mach.(statusMachine); ok {
		st, err := sm.Status(ctx)
		if err != nil {
			return fmt.Errorf("read vmm run state: %w", err)
		}
		running := st == "running"
		if running == (want == state.Running) {
			return nil
		}
		m.log.Warn("re-adopted vmm's run state disagrees with its record; applying the record",
			"sandbox_id", sb.rec.ID, "record", want, "vmm", st)
	}
	if want == state.Running {
		if err := mach.Resume(ctx); err != nil {
			return fmt.Errorf("resume vcpus halted by an interrupted operation: %w", err)
		}
		return nil
	}
	if err := mach.Pause(ctx); err != nil {
		return fmt.Errorf("pause vcpus of a paused sandbox: %w", err)
	}
	return nil
}

// hibernateComplete reports whether sandbox id's hibernation snapshot is
// whole (sealed by its manifest, files verified): a restore can use it.
func (m *Manager) hibernateComplete(ctx context.Context, id string) bool {
	snap, err := snapshot.Open(ctx, m.snapshotDir(id))
	return err == nil && snap.Manifest.Kind == snapshot.KindHibernate
}

// hasHibernateSnapshot reports whether snapshots/<id> holds a sealed
// snapshot, without verifying its files.
func (m *Manager) hasHibernateSnapshot(id string) bool {
	_, err := os.Stat(filepath.Join(m.snapshotDir(id), snapshot.ManifestName))
	return err == nil
}

// finishResume completes a resume from hibernation cut short after the
// VMM was restored (the record says starting): the restored guest has
// run, so it is the sandbox now. Its slot is adopted, envd is waited for
// and initialised (the clock), the sandbox recorded running and the used
// snapshot retired. If the guest does not answer, it is removed: the
// snapshot is stale (the disk moved on with the guest), so rolling back
// to it could corrupt the guest's filesystem.
func (m *Manager) finishResume(ctx context.Context, sb *sandbox, mach vmm.Machine) (bool, error) {
	id := sb.rec.ID
	sb.machine = mach
	fail := func(err error) (bool, error) {
		err = errors.Join(fmt.Errorf("finish a resume cut short: %w", err), m.teardown(ctx, sb))
		m.recoveredDead(sb, "a resume from hibernation cut short by an agent restart could not be finished")
		return false, err
	}
	slots, err := m.cfg.Network.Adopt(sb.rec.Slot)
	if err != nil {
		return fail(fmt.Errorf("adopt network slot %d: %w", sb.rec.Slot, err))
	}
	sb.slot = slots[0]
	if err := m.envdStep(sb, envdclient.InitRequest{}).Do(ctx); err != nil {
		return fail(err)
	}
	m.mu.Lock()
	m.sandboxes[id] = sb
	m.mu.Unlock()
	sb.mu.Lock()
	sb.cause = ReasonRecovered
	err = sb.setState(state.Running)
	sb.cause = ""
	sb.touch(m.cfg.Clock.Now())
	sb.mu.Unlock()
	m.retireSnapshot(m.snapshotDir(id), id)
	m.log.Info("resume from hibernation cut short by an agent restart finished", "sandbox_id", id)
	return true, err
}

// removeStraySnapshot deletes snapshots/<id> of a sandbox whose VMM runs:
// a hibernation cut short before the VMM stopped. The VM holds the state,
// the snapshot is not needed and would be stale after the next resume.
func (m *Manager) removeStraySnapshot(id string) error {
	dir := m.snapshotDir(id)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	m.log.Info("removing the snapshot of a hibernation cut short; the vm still runs", "sandbox_id", id)
	return snapshot.Remove(dir)
}

// backToHibernated rolls a sandbox with a whole hibernation snapshot back
// to hibernated: a hibernation cut short after the snapshot was sealed
// and the VMM stopped, or a resume from hibernation cut short before its
// VMM was restored (the snapshot is removed only once a resume completes).
// Its slot is not adopted, so Reclaim frees it. The sandbox is managed
// afterwards, reported hibernated with a new version.
func (m *Manager) backToHibernated(ctx context.Context, sb *sandbox, why string) error {
	if sb.group == nil {
		if g, err := m.cfg.Cgroups.Open(sb.rec.ID); err == nil {
			sb.group = g
		}
	}
	err := errors.Join(m.stopMachine(ctx, sb), m.removeMemory(sb.rec.ID), m.removeGroup(ctx, sb))
	sb.machine, sb.slot, sb.envd = nil, nil, nil
	sb.cause = ReasonRecovered
	err = errors.Join(err, sb.forceState(state.Hibernated, why))
	sb.cause = ""
	m.mu.Lock()
	m.sandboxes[sb.rec.ID] = sb
	m.mu.Unlock()
	m.log.Info("sandbox rolled back to hibernated", "sandbox_id", sb.rec.ID, "why", why)
	return err
}

// forksRunning moves every fork restored by one Fork call to running,
// together, once all are up, refreshing their descriptions. Until then
// each fork is starting (restoreFork leaves it so), so an agent killed
// in between removes them all on restart and reports them stopped: the
// fork never answered.
func (m *Manager) forksRunning(ctx context.Context, infos []Info) error {
	for i, in := range infos {
		sb, err := m.acquire(ctx, in.ID)
		if err != nil {
			return fmt.Errorf("start fork %s: %w", in.ID, err)
		}
		err = sb.setState(state.Running)
		if err == nil {
			sb.touch(m.cfg.Clock.Now())
			infos[i] = sb.info()
		}
		sb.mu.Unlock()
		if err != nil {
			return fmt.Errorf("start fork %s: %w", in.ID, err)
		}
	}
	return nil
}
