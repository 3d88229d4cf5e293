package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// MemoryDir is the tmpfs guest RAM lives in.
func (m *Manager) MemoryDir() string { return m.cfg.MemoryDir }

// FSRoom is a filesystem's size and what an unprivileged writer has free.
func FSRoom(path string) (size, avail int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Blocks) * int64(st.Bsize), int64(st.Bavail) * int64(st.Bsize), nil
}

// SandboxDiskUsed is what the sandboxes ids occupy on WRENN_DIR's
// filesystem (dir): their directories (disk overlay, records, console
// log) and hibernation snapshots, counted in allocated blocks (a sparse
// overlay costs what was written, not its size). Missing ones count 0.
func SandboxDiskUsed(ctx context.Context, dir string, ids []string) (int64, error) {
	var total int64
	for _, id := range ids {
		for _, d := range []string{filepath.Join(dir, "sandboxes", id), filepath.Join(dir, "snapshots", id)} {
			n, err := allocated(ctx, d)
			if err != nil {
				return 0, err
			}
			total += n
		}
	}
	return total, nil
}

// allocated sums the allocated bytes of the regular files under root.
func allocated(ctx context.Context, root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile (or never there)
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("stat %s: %w", path, err)
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure %s: %w", root, err)
	}
	return total, nil
}

// holdsVMM reports whether a sandbox in state s has guest RAM in the tmpfs.
func holdsVMM(s state.State) bool {
	return s == state.Starting || s == state.Running || s == state.Paused
}

// admit is the agent's last line against overcommitting this host: the
// control plane admits every placement against the host's reported room,
// but a stale heartbeat, a second control plane or a bug must still not
// fill the guest-RAM tmpfs (SIGBUS in the VMMs that share it) or WRENN_DIR's
// filesystem (ENOSPC for every sandbox's disk). count sandboxes of memMB
// and diskMB each are refused with ResourceExhausted unless the guest RAM
// and disks every existing sandbox may grow to, plus theirs, fit. What is
// admitted stays counted until release, which the caller defers to the end
// of the create or fork (by then its sandboxes are in m.sandboxes): checks
// and reservations are made under pendingMu, so concurrent admissions see
// each other. key is the new sandbox's id for a create (once registered
// it is counted once, as pending), or any unique string.
func (m *Manager) admit(ctx context.Context, key string, count, memMB, diskMB int) (release func(), err error) {
	m.pendingMu.Lock()
	defer m.pendingMu.Unlock()
	need := admitted{mem: int64(count) * int64(memMB) << 20, disk: int64(count) * int64(diskMB) << 20}
	if _, dup := m.pending[key]; dup {
		return nil, errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s is already being created", key)
	}
	if err := m.check(ctx, need); err != nil {
		return nil, err
	}
	if m.pending == nil {
		m.pending = map[string]admitted{}
	}
	m.pending[key] = need
	var once sync.Once
	return func() {
		once.Do(func() {
			m.pendingMu.Lock()
			delete(m.pending, key)
			m.pendingMu.Unlock()
		})
	}, nil
}

// admitted is guest RAM and disk, in bytes, promised to sandboxes.
type admitted struct{ mem, disk int64 }

// check does admit's arithmetic; the caller holds pendingMu.
func (m *Manager) check(ctx context.Context, need admitted) error {
	m.mu.Lock()
	sbs := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		sbs = append(sbs, sb)
	}
	m.mu.Unlock()
	var memReserved, diskReserved int64
	for _, p := range m.pending {
		memReserved += p.mem
		diskReserved += p.disk
	}
	var live []string
	for _, sb := range sbs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := m.pending[sb.rec.ID]; ok {
			// Being created: counted as pending (its disk's written
			// bytes still count as used, which only errs towards refusing).
			continue
		}
		// A sandbox's sizes never change after it is made (rec is set
		// before the sandbox is published under m.mu); its state needs
		// its lock. One busy in a long operation (boot, fork, hibernation,
		// resume) counts as holding everything it may hold: List would
		// report a booting one without its sizes.
		busy := !sb.mu.TryLock()
		st, dropped := state.Starting, false
		if !busy {
			st, dropped = sb.rec.State, sb.rec.MemoryDropped
			sb.mu.Unlock()
		}
		mem, disk := int64(sb.rec.MemoryMB)<<20, int64(sb.rec.DiskMB)<<20
		if busy || (holdsVMM(st) && !dropped) {
			memReserved += mem
		}
		if busy || (st != state.Stopped && st != state.Error) {
			diskReserved += disk
			live = append(live, sb.rec.ID)
		}
		if busy || st == state.Hibernated {
			diskReserved += mem // its memory image
		}
	}
	memNeed, diskNeed := need.mem, need.disk
	if memSize, _, err := FSRoom(m.cfg.MemoryDir); err == nil && memSize > 0 && memReserved+memNeed > memSize {
		return errdefs.New(errdefs.ErrResourceExhausted,
			"no room for %d MiB of guest memory: %d MiB of the %d MiB guest-memory tmpfs are reserved", memNeed>>20, memReserved>>20, memSize>>20)
	}
	_, diskAvail, err := FSRoom(m.cfg.Dir)
	if err != nil {
		return err
	}
	used, err := SandboxDiskUsed(ctx, m.cfg.Dir, live)
	if err != nil {
		return err
	}
	if unwritten := max(diskReserved-used, 0); unwritten+diskNeed > diskAvail {
		return errdefs.New(errdefs.ErrResourceExhausted,
			"no room for %d MiB of disk: %d MiB free, %d MiB of it promised to existing sandboxes", diskNeed>>20, diskAvail>>20, unwritten>>20)
	}
	return nil
}
