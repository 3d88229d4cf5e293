package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// Recover runs once at agent start, before requests are served. It re-adopts
// every sandbox whose VMM outlived the previous agent (running or paused,
// processes and files intact), then removes true leftovers only: records of
// dead VMs, their cgroups, and network slots no adopted sandbox holds.
func (m *Manager) Recover(ctx context.Context) error {
	dirs, err := os.ReadDir(filepath.Join(m.cfg.Dir, "sandboxes"))
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}
	var errs []error
	if err := m.removeInterrupted(); err != nil {
		errs = append(errs, err)
	}
	adopted := map[string]bool{}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		id := d.Name()
		ok, err := m.adopt(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("recover sandbox %s: %w", id, err))
		}
		if ok {
			adopted[id] = true
		}
	}

	if err := m.removeTrash(); err != nil {
		errs = append(errs, fmt.Errorf("remove used snapshots: %w", err))
	}
	if err := m.restrictOldTemplates(); err != nil {
		errs = append(errs, err)
	}
	// Guest memory files of sandboxes that are gone.
	mems, _ := filepath.Glob(filepath.Join(m.cfg.MemoryDir, "*.mem"))
	for _, p := range mems {
		if id := strings.TrimSuffix(filepath.Base(p), ".mem"); !adopted[id] {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove leftover guest memory %s: %w", p, err))
			}
		}
	}
	// Network leftovers: everything of ours not adopted above.
	if err := m.cfg.Network.Reclaim(ctx); err != nil {
		errs = append(errs, fmt.Errorf("reclaim network slots: %w", err))
	}
	groups, err := m.cfg.Cgroups.List(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("list cgroups: %w", err))
	}
	for _, g := range groups {
		if adopted[g.ID()] {
			continue
		}
		if err := g.Remove(ctx, cgroup.KillProcesses); err != nil {
			errs = append(errs, fmt.Errorf("remove leftover cgroup %s: %w", g.ID(), err))
		}
	}
	m.log.Info("sandboxes recovered", "adopted", len(adopted), "errors", len(errs))
	return errors.Join(errs...)
}

// adopt re-attaches one sandbox, or cleans it up when its VM is gone. It
// reports whether the sandbox is now managed.
func (m *Manager) adopt(ctx context.Context, id string) (bool, error) {
	dir := m.sandboxDir(id)
	log := m.log.With("sandbox_id", id)
	rec, err := readRecord(dir)
	if err != nil {
		// A create that crashed before writing its record: nothing of it
		// can be running (the record precedes the boot step).
		log.Warn("removing sandbox dir without a record", "err", err)
		return false, os.RemoveAll(dir)
	}
	sb := &sandbox{owner: m, dir: dir, rec: rec}
	if rec.Purpose != "" {
		// A build VM: its build ended with the agent (the control plane
		// marks it failed). Stop what may still run and remove it.
		// Its slot is not adopted: Reclaim deletes it afterwards.
		if mach, err := m.cfg.Driver.Attach(ctx, m.vmSpec(sb, "")); err == nil {
			sb.machine = mach
		}
		log.Info("removing the build VM of an interrupted build")
		return false, errors.Join(m.stopMachine(ctx, sb), m.cleanupDead(ctx, sb))
	}
	if rec.State == state.Hibernated {
		// All files: nothing runs, nothing to attach. Resume restores it.
		m.mu.Lock()
		m.sandboxes[id] = sb
		m.mu.Unlock()
		log.Info("hibernated sandbox re-adopted")
		m.emitRecovered(sb)
		return true, nil
	}
	if rec.State == state.Paused && rec.MemoryDropped {
		err := m.adoptMemoryDropped(ctx, sb)
		m.emitRecovered(sb)
		return true, err
	}
	// The kernel path only matters for a restore; Attach finds the VMM
	// through the sandbox dir, so a missing kernel is no reason to fail.
	kernel, _ := kernels.Find(filepath.Join(m.cfg.Dir, "kernels"), rec.KernelVersion)
	if g, err := m.cfg.Cgroups.Open(id); err == nil {
		sb.group = g
	}
	mach, err := m.cfg.Driver.Attach(ctx, m.vmSpec(sb, kernel.Path))
	if rec.State == state.Starting && m.hasHibernateSnapshot(id) {
		// A resume from hibernation cut short. With its VMM restored,
		// the guest has run on the disk since the snapshot, which is
		// stale: finish the resume. Without one, the snapshot (retired
		// only once a resume completes) is restored again later.
		if err == nil {
			return m.finishResume(ctx, sb, mach)
		}
		if m.hibernateComplete(ctx, id) {
			return true, m.backToHibernated(ctx, sb, "a resume from hibernation cut short by an agent restart was rolled back")
		}
	}
	if err != nil && rec.State == state.Paused && m.hibernateComplete(ctx, id) {
		// A hibernation cut short after its snapshot was sealed and its
		// VMM stopped: finish it.
		return true, m.backToHibernated(ctx, sb, "a hibernation cut short by an agent restart was finished")
	}
	if err == nil && rec.State != state.Running && rec.State != state.Paused {
		// Starting (a create cut short), Stopping (a destroy cut short),
		// Error or Stopped: the VMM may still run; finish the job.
		sb.machine = mach
		log.Info("cleaning up interrupted sandbox", "state", rec.State)
		err := errors.Join(m.stopMachine(ctx, sb), m.cleanupDead(ctx, sb))
		m.recoveredDead(sb, "an operation cut short by an agent restart was cleaned up")
		return false, err
	}
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) {
			log.Warn("attach failed; treating the sandbox as dead", "err", err)
		}
		log.Info("sandbox VM is gone; cleaning up", "state", rec.State)
		err := m.cleanupDead(ctx, sb)
		m.recoveredDead(sb, "its VM was gone at agent restart (state was "+string(rec.State)+")")
		return false, err
	}
	slots, err := m.cfg.Network.Adopt(rec.Slot)
	if err != nil {
		err = errors.Join(fmt.Errorf("adopt network slot %d: %w", rec.Slot, err), mach.Stop(ctx), m.cleanupDead(ctx, sb))
		m.recoveredDead(sb, "its network could not be re-adopted at agent restart")
		return false, err
	}
	sb.machine, sb.slot = mach, slots[0]
	sb.envd = m.envdClient(sb)
	sb.touch(m.cfg.Clock.Now())
	// An operation cut short may have left the vCPUs halted under a
	// running record (pause, fork, template capture) or a snapshot beside
	// a VM that still runs (hibernate): make both agree with the record.
	if err := errors.Join(m.matchRunState(ctx, sb), m.removeStraySnapshot(id)); err != nil {
		err = errors.Join(err, m.teardown(ctx, sb))
		m.recoveredDead(sb, "its VMM's run state could not be made to match its record at agent restart")
		return false, err
	}

	m.mu.Lock()
	m.sandboxes[id] = sb
	m.mu.Unlock()
	log.Info("sandbox re-adopted", "state", rec.State, "pid", mach.PID(), "slot", rec.Slot)
	sb.mu.Lock()
	m.emitRecovered(sb)
	m.watchMachine(sb)
	sb.mu.Unlock()
	return true, nil
}

// recoveredDead reports a sandbox recovery removed: stopped, with a
// version past the last one it recorded.
func (m *Manager) recoveredDead(sb *sandbox, msg string) {
	sb.cause = ReasonRecovered
	_ = sb.forceState(state.Stopped, msg)
	sb.cause = ""
}

// cleanupDead removes what a sandbox whose VMM is not running left behind.
// Its network slot is not adopted, so Reclaim deletes it afterwards.
func (m *Manager) cleanupDead(ctx context.Context, sb *sandbox) error {
	var errs []error
	if sb.group == nil {
		if g, err := m.cfg.Cgroups.Open(sb.rec.ID); err == nil {
			sb.group = g
		}
	}
	errs = append(errs, m.removeGroup(ctx, sb), m.removeMemory(sb.rec.ID), snapshot.Remove(m.snapshotDir(sb.rec.ID)))
	if err := os.RemoveAll(sb.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove sandbox dir: %w", err))
	}
	return errors.Join(errs...)
}
