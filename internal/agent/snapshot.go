package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// snapshotDir is where a hibernated sandbox's memory and device state live.
func (m *Manager) snapshotDir(id string) string {
	return filepath.Join(m.cfg.Dir, "snapshots", id)
}

// Hibernate moves a paused sandbox's memory and device state to disk under
// snapshots/<id>/ and frees everything it held on the host but its disk:
// VMM, RAM, network slot, cgroup. Resume brings it back, also after an
// agent restart or a host reboot (it is all files). The memory file is
// sparse: pages the guest never touched cost no disk.
func (m *Manager) Hibernate(ctx context.Context, id string) error {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	r := sb.rec
	if err := r.State.Check(state.Hibernated); err != nil {
		return err
	}
	if r.MemoryDropped {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s was paused without its memory: there is no memory to hibernate", id)
	}
	start := time.Now()
	dir := m.snapshotDir(id)
	if err := snapshot.Remove(dir); err != nil {
		return fmt.Errorf("hibernate %s: clear old snapshot: %w", id, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("hibernate %s: %w", id, errdefs.FromOS(err))
	}
	if err := sb.machine.Snapshot(ctx, dir); err != nil {
		return errors.Join(fmt.Errorf("hibernate %s: save device state: %w", id, err), snapshot.Remove(dir))
	}
	// Killed here, the VM still runs (paused) beside an unsealed
	// snapshot: Recover re-adopts it paused and removes the snapshot.
	m.cfg.Faults.Hit(ctx, faultpoint.AgentHibernateWritten)
	// From here the VMM goes away; a failure leaves the sandbox in error
	// (destroyable), never half-hibernated and claiming to be paused.
	fail := func(err error) error {
		err = fmt.Errorf("hibernate %s: %w", id, err)
		_ = sb.forceState(state.Error, err.Error())
		return err
	}
	if err := m.stopMachine(ctx, sb); err != nil {
		return fail(err)
	}
	if err := snapshot.MoveMemory(ctx, m.memoryPath(id), filepath.Join(dir, snapshot.MemoryName)); err != nil {
		return fail(fmt.Errorf("move guest memory to disk: %w", err))
	}
	if err := m.writeManifest(ctx, dir, snapshot.KindHibernate, r, r.Disk); err != nil {
		return fail(err)
	}
	if err := errors.Join(m.removeGroup(ctx, sb), m.releaseSlot(ctx, sb)); err != nil {
		return fail(err)
	}
	if err := sb.setState(state.Hibernated); err != nil {
		return fail(err)
	}
	usage, _ := snapshot.DirUsage(dir)
	m.log.Info("sandbox hibernated", "sandbox_id", id, "duration", time.Since(start), "snapshot_bytes", usage)
	return nil
}

// writeManifest seals a snapshot directory: every state file checksummed,
// the memory file sampled, the disk (outside the directory) referenced.
func (m *Manager) writeManifest(ctx context.Context, dir string, kind snapshot.Kind, r *record, disk string) error {
	spec, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode snapshot spec: %w", err)
	}
	man := snapshot.Manifest{Kind: kind, Driver: m.cfg.Driver.Name(), KernelVersion: r.KernelVersion, Spec: spec}
	if disk != "" {
		man.DiskRef = &snapshot.Ref{Path: disk}
	}
	if _, err := snapshot.Write(ctx, dir, man); err != nil {
		return fmt.Errorf("write snapshot manifest: %w", err)
	}
	return nil
}

// resumeHibernated restores a hibernated sandbox from its snapshot into a
// fresh network slot. A missing or corrupt snapshot is refused, never
// booted: the sandbox stays hibernated.
func (m *Manager) resumeHibernated(ctx context.Context, sb *sandbox) error {
	r := sb.rec
	snap, err := m.openSnapshot(ctx, m.snapshotDir(r.ID), r.KernelVersion)
	if err != nil {
		return fmt.Errorf("resume %s: %w", r.ID, err)
	}
	if err := sb.setState(state.Starting); err != nil {
		return err
	}
	start := time.Now()
	// Killed at the fault point, the restored VM runs under a starting
	// record beside the used snapshot: Recover finishes the resume.
	steps := append(m.restoreSteps(sb, snap, envdclient.InitRequest{}),
		m.faultStep(faultpoint.AgentResumeRestored), runningStep(sb))
	if err := plan.Run(ctx, m.log.With("sandbox_id", r.ID), steps); err != nil {
		// Everything the restore took is undone; the snapshot is intact.
		err = fmt.Errorf("resume %s: %w", r.ID, err)
		return errors.Join(err, sb.forceState(state.Hibernated, err.Error()))
	}
	m.retireSnapshot(snap.Dir, r.ID)
	sb.touch(m.cfg.Clock.Now())
	m.log.Info("sandbox resumed from hibernation", "sandbox_id", r.ID, "duration", time.Since(start))
	return nil
}

// trashPrefix names used snapshots waiting to be deleted (Recover deletes
// any a crash left behind).
const trashPrefix = ".trash-"

// retireSnapshot takes a used snapshot out of service at once (its manifest
// removed, durably, then the directory renamed aside so the sandbox can
// hibernate again under the same name) and deletes its files in the
// background: freeing a guest's memory file takes a few hundred ms that a
// resume should not wait for (measured by make bench's profile).
func (m *Manager) retireSnapshot(dir, id string) {
	if err := snapshot.Invalidate(dir); err != nil {
		m.log.Warn("invalidate used snapshot", "sandbox_id", id, "err", err)
	}
	trash := filepath.Join(filepath.Dir(dir), trashPrefix+filepath.Base(dir)+"-"+newID())
	if err := os.Rename(dir, trash); err != nil {
		m.log.Warn("set used snapshot aside", "sandbox_id", id, "err", err)
		trash = dir
	}
	m.bg.Go(func() {
		if err := snapshot.Remove(trash); err != nil {
			m.log.Warn("remove used snapshot", "sandbox_id", id, "err", err)
		}
	})
}

// removeTrash deletes used snapshots a crash left before their background
// removal finished.
func (m *Manager) removeTrash() error {
	trash, _ := filepath.Glob(filepath.Join(m.cfg.Dir, "snapshots", trashPrefix+"*"))
	var errs []error
	for _, d := range trash {
		errs = append(errs, snapshot.Remove(d))
	}
	return errors.Join(errs...)
}

// openSnapshot verifies a snapshot (manifest, sizes, checksums) and that
// this agent can restore it: same VMM driver, same guest kernel installed.
func (m *Manager) openSnapshot(ctx context.Context, dir, kernelVersion string) (*snapshot.Snapshot, error) {
	snap, err := snapshot.Open(ctx, dir)
	if err != nil {
		return nil, err
	}
	if err := snap.Compatible(m.cfg.Driver.Name(), kernelVersion); err != nil {
		return nil, err
	}
	if snap.MemoryPath() == "" {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "snapshot %s has no memory file", dir)
	}
	return snap, nil
}

// restoreSteps bring up a sandbox from a snapshot: its directory and disk
// exist; network, identity, memory, cgroup, VMM and envd are made here.
// The caller appends runningStep when the sandbox is to run at once (a
// fork runs only once all its siblings are up).
// init is sent to envd once it answers (the clock is always set, since the
// guest's stood still since the snapshot).
func (m *Manager) restoreSteps(sb *sandbox, snap *snapshot.Snapshot, init envdclient.InitRequest) []plan.Step {
	r := sb.rec
	return []plan.Step{
		m.networkStep(sb),
		m.confineStep(sb),
		{
			Name: "memory",
			Do:   func(ctx context.Context) error { return m.prepareMemory(ctx, sb, snap.MemoryPath()) },
			Undo: func(context.Context) error { return m.removeMemory(r.ID) },
		},
		m.cgroupStep(sb),
		{
			Name: "restore",
			Do: func(ctx context.Context) error {
				k, err := kernels.Find(filepath.Join(m.cfg.Dir, "kernels"), r.KernelVersion)
				if err != nil {
					return err
				}
				mach, err := m.cfg.Driver.Restore(ctx, m.vmSpec(sb, k.Path), snap.Dir)
				if err != nil {
					return err
				}
				sb.machine = mach
				return nil
			},
			Undo: func(ctx context.Context) error { return m.stopMachine(ctx, sb) },
		},
		m.envdStep(sb, init),
	}
}

// resetVMDir removes what an earlier VMM left in the sandbox's VMM
// directory (sockets, pid file, logs owned by its identity), keeping the
// disks, so that a VMM under a new identity can create them afresh.
func resetVMDir(sandboxDir string) error {
	entries, err := os.ReadDir(vmDir(sandboxDir))
	if err != nil {
		return fmt.Errorf("list vmm dir: %w", err)
	}
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext == ".qcow2" || ext == ".raw" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(vmDir(sandboxDir), e.Name())); err != nil {
			return fmt.Errorf("clear vmm dir: %w", err)
		}
	}
	return nil
}
