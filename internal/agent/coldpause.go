package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/plan"
)

// Filesystem-only pause (E2B's pause with memory: false): only the disk is
// kept, and resuming cold-boots the guest from it, losing in-memory state,
// running processes and open connections.
//
// Consistency: the guest is asked to sync through envd's process API (the
// same channel exec uses; envd has no sync call of its own), so every dirty
// page reaches the virtio disk and ext4's journal is committed; then its
// vCPUs are frozen, so nothing is written after the sync, and QEMU is told
// to quit, which flushes its own disk caches (qcow2 metadata) before it
// exits. A clean in-guest shutdown would be no more durable (wrenn-init,
// PID 1, has no shutdown path a microvm without ACPI can trigger), and a
// write that lands between the sync and the freeze is at worst lost, never
// a corrupt filesystem (ext4's journal is replayed at the next boot).
//
// State: the sandbox is Paused with record.MemoryDropped set (reported as
// Info.MemoryDropped, Sandbox.memory_dropped on the wire). No VMM, memory
// file or cgroup exists; the disk, the network slot (so the guest's address
// stays the same), the access token, env, metadata and timeout settings
// do. The record is written before the VMM is stopped, so an agent that
// dies at any point re-adopts the sandbox as memory-dropped (recover.go),
// stopping a VMM that was still running.

// syncTimeout bounds the guest's sync: a guest with much unwritten data
// under TCG takes seconds.
const syncTimeout = 60 * time.Second

// PauseDropMemory pauses a running sandbox keeping only its filesystem: the
// guest syncs its disks, its VMM stops and its memory is freed; no memory
// image is kept. Resume cold-boots it from its disk with the same id,
// address, access token and env. A guest that cannot sync (envd does not
// answer) is left running and the pause fails (Unavailable).
func (m *Manager) PauseDropMemory(ctx context.Context, id string) error {
	sb, err := m.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	r := sb.rec
	if err := r.State.Check(state.Paused); err != nil {
		return err
	}
	if sb.machine == nil || sb.envd == nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no running VMM", id)
	}
	start := time.Now()
	if err := guestSync(ctx, sb.envd); err != nil {
		return fmt.Errorf("pause %s without memory: %w", id, err)
	}
	if err := sb.machine.Pause(ctx); err != nil {
		return fmt.Errorf("pause %s without memory: freeze vcpus: %w", id, err)
	}
	// From here the VMM goes away; a failure leaves the sandbox in error
	// (destroyable), never claiming a VMM it no longer has.
	fail := func(err error) error {
		err = fmt.Errorf("pause %s without memory: %w", id, err)
		_ = sb.forceState(state.Error, err.Error())
		return err
	}
	r.MemoryDropped = true
	if err := sb.setState(state.Paused); err != nil {
		return fail(err)
	}
	if err := m.stopMachine(ctx, sb); err != nil {
		return fail(err)
	}
	sb.envd = nil
	if err := errors.Join(m.removeMemory(id), m.removeGroup(ctx, sb)); err != nil {
		return fail(err)
	}
	m.log.Info("sandbox paused without its memory", "sandbox_id", id, "duration", time.Since(start))
	return nil
}

// guestSync has the guest flush its filesystems.
func guestSync(ctx context.Context, c *envdclient.Client) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/sync"})
	if err != nil {
		return errdefs.New(errdefs.ErrUnavailable, "sync the guest's filesystems: %v", err)
	}
	if res.ExitCode != 0 {
		return errdefs.New(errdefs.ErrUnavailable, "sync the guest's filesystems: sync exited with %d", res.ExitCode)
	}
	return nil
}

// resumeCold boots a memory-dropped sandbox from its own disk, as a create
// does (same id, slot, access token, env), and re-arms its idle timer. The
// sandbox stays Paused (memory dropped) until envd answers, so a failure
// or an agent crash meanwhile leaves it resumable. sb.mu is held.
func (m *Manager) resumeCold(ctx context.Context, sb *sandbox) error {
	r := sb.rec
	// Its memory is not counted while it is paused (holdsVMM): check there
	// is room for it again. The sandbox is locked, so the check counts it
	// as holding its memory already and needs nothing more.
	release, err := m.admit(ctx, "resume-"+r.ID+"-"+newID(), 1, 0, 0)
	if err != nil {
		return fmt.Errorf("resume %s: %w", r.ID, err)
	}
	defer release()
	kdir := filepath.Join(m.cfg.Dir, "kernels")
	kernel, err := kernels.Find(kdir, r.KernelVersion)
	if err != nil {
		// A cold boot needs no particular kernel (unlike a restore).
		if kernel, err = kernels.Latest(kdir); err != nil {
			return fmt.Errorf("resume %s: %w", r.ID, err)
		}
		m.log.Warn("kernel of a memory-dropped sandbox is gone; booting the newest", "sandbox_id", r.ID, "was", r.KernelVersion, "now", kernel.Version)
	}
	start := time.Now()
	steps := []plan.Step{
		m.keptSlotStep(sb),
		m.confineStep(sb),
		{
			Name: "memory",
			Do:   func(ctx context.Context) error { return m.prepareMemory(ctx, sb, "") },
			Undo: func(context.Context) error { return m.removeMemory(r.ID) },
		},
		m.cgroupStep(sb),
		{
			Name: "boot",
			Do: func(ctx context.Context) error {
				mach, err := m.cfg.Driver.Boot(ctx, m.vmSpec(sb, kernel.Path))
				if err != nil {
					return err
				}
				sb.machine = mach
				return nil
			},
			Undo: func(ctx context.Context) error { return m.stopMachine(ctx, sb) },
		},
		m.envdStep(sb, r.init()),
		{
			Name: "running",
			Do: func(context.Context) error {
				r.MemoryDropped, r.KernelVersion = false, kernel.Version
				return sb.setState(state.Running)
			},
		},
	}
	if err := plan.Run(ctx, m.log.With("sandbox_id", r.ID), steps); err != nil {
		// Everything the boot took is undone; the disk is as it was.
		sb.envd = nil
		r.MemoryDropped = true
		err = fmt.Errorf("resume %s: %w", r.ID, err)
		return errors.Join(err, sb.forceState(state.Paused, err.Error()))
	}
	sb.touch(m.cfg.Clock.Now())
	m.log.Info("sandbox cold-booted from its disk", "sandbox_id", r.ID, "duration", time.Since(start), "address", sb.slot.HostIP())
	return nil
}

// keptSlotStep gives the boot the sandbox's own network slot, rebuilding
// its network if the host lost it (a host reboot: the namespace is gone,
// the address derives from the slot index and so stays the same). A
// sandbox without a slot (its slot could not be re-adopted after a
// restart) takes a fresh one, and with it a new address.
func (m *Manager) keptSlotStep(sb *sandbox) plan.Step {
	if sb.slot == nil {
		return m.networkStep(sb)
	}
	return plan.Step{
		Name: "network",
		Do: func(ctx context.Context) error {
			if _, err := os.Stat(sb.slot.NetNSPath()); !errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			m.log.Info("rebuilding the network of a memory-dropped sandbox", "sandbox_id", sb.rec.ID, "slot", sb.slot.Index)
			return m.cfg.Network.Setup(ctx, sb.slot, sb.rec.Network)
		},
	}
}

// adoptMemoryDropped re-adopts a sandbox paused without its memory after an
// agent restart. A VMM of it that still runs (the agent died while pausing
// or cold-booting it) is stopped, and its memory file and cgroup removed:
// it stays a memory-dropped paused sandbox, resumable by a cold boot. Its
// network slot is adopted so its address stays the same.
func (m *Manager) adoptMemoryDropped(ctx context.Context, sb *sandbox) error {
	r := sb.rec
	log := m.log.With("sandbox_id", r.ID)
	kernel, _ := kernels.Find(filepath.Join(m.cfg.Dir, "kernels"), r.KernelVersion)
	if g, err := m.cfg.Cgroups.Open(r.ID); err == nil {
		sb.group = g
	}
	var errs []error
	if mach, err := m.cfg.Driver.Attach(ctx, m.vmSpec(sb, kernel.Path)); err == nil {
		log.Info("stopping the VMM of a sandbox paused without its memory")
		sb.machine = mach
		errs = append(errs, m.stopMachine(ctx, sb))
	}
	if sb.group != nil {
		if err := sb.group.Remove(ctx, cgroup.KillProcesses); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
		}
		sb.group = nil
	}
	errs = append(errs, m.removeMemory(r.ID))
	if slots, err := m.cfg.Network.Adopt(r.Slot); err != nil {
		// Resume takes a fresh slot (and address) instead.
		log.Warn("network slot of a memory-dropped sandbox not adopted", "slot", r.Slot, "err", err)
	} else {
		sb.slot = slots[0]
	}
	r.State, r.MemoryDropped = state.Paused, true
	errs = append(errs, writeRecord(sb.dir, r))
	m.mu.Lock()
	m.sandboxes[r.ID] = sb
	m.mu.Unlock()
	log.Info("memory-dropped paused sandbox re-adopted", "slot", r.Slot)
	return errors.Join(errs...)
}
