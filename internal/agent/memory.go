package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// DefaultMemoryDir holds the guests' RAM while their VMMs run: a tmpfs, so
// that pause, snapshot and fork never copy memory through the VMM (QEMU
// maps the file shared and migrates with x-ignore-shared), and pages a
// guest never touched cost nothing.
const DefaultMemoryDir = "/dev/shm/wrenn"

// mountMemoryDir makes dir a tmpfs of its own with transparent huge pages
// (huge=within_size), unless something is mounted there already. Guest RAM
// in a plain /dev/shm file is faulted in 4 KiB at a time, which measured
// ~0.5 s slower per boot under TCG than anonymous memory (which QEMU backs
// with huge pages); a huge-page tmpfs recovers most of it. Without the
// mount (no privilege, no THP) the plain directory still works.
func mountMemoryDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("create guest memory dir: %w", err)
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat guest memory dir: %w", err)
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return fmt.Errorf("stat guest memory dir: %w", err)
	}
	if st.Dev != parent.Dev {
		return nil // already a mount of its own
	}
	if err := unix.Mount("wrenn-memory", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "huge=within_size,mode=0711"); err != nil {
		return fmt.Errorf("mount huge-page tmpfs on %s: %w", dir, err)
	}
	return nil
}

// memoryPath is a sandbox's guest RAM file.
func (m *Manager) memoryPath(id string) string {
	return filepath.Join(m.cfg.MemoryDir, id+".mem")
}

// prepareMemory creates the memory file of a sandbox whose VMM is about to
// start, owned by the VMM's identity: empty (all holes) for a boot, or a
// sparse copy of from for a restore. A restore never runs on the snapshot's
// own file, which the guest would then write into.
func (m *Manager) prepareMemory(ctx context.Context, sb *sandbox, from string) error {
	path := m.memoryPath(sb.rec.ID)
	if from != "" {
		if err := snapshot.CopySparse(ctx, from, path); err != nil {
			return fmt.Errorf("copy guest memory: %w", err)
		}
	} else {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("create guest memory file: %w", errdefs.FromOS(err))
		}
		err = f.Truncate(int64(sb.rec.MemoryMB) << 20)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
			return fmt.Errorf("size guest memory file: %w", err)
		}
	}
	uid, gid := m.vmmIdentity(sb.rec.Slot)
	if err := os.Chown(path, int(uid), int(gid)); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("give guest memory to vmm uid %d: %w", uid, err)
	}
	return nil
}

// removeMemory deletes a sandbox's memory file; absent is fine.
func (m *Manager) removeMemory(id string) error {
	if err := os.Remove(m.memoryPath(id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove guest memory: %w", err)
	}
	return nil
}
