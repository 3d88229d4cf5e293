package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// smallTmpfs mounts a tmpfs of sizeMB at a fresh directory for the test,
// so that "full" is reached with a few hundred MiB.
func smallTmpfs(t *testing.T, sizeMB int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("wrenn-test", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", sizeMB)); err != nil {
		t.Skipf("mounting a tmpfs needs root (CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestAdmitRefusesWhatTheHostCannotHold: the agent's last line refuses a
// sandbox whose guest RAM would not fit in the guest-memory tmpfs beside
// what existing sandboxes may touch (a full tmpfs SIGBUSes VMMs), or whose
// disk would not fit in what WRENN_DIR's filesystem has free beside what
// existing disks may still write (ENOSPC for every tenant). Before admit
// the agent started both and failed later, inside guests.
func TestAdmitRefusesWhatTheHostCannotHold(t *testing.T) {
	mem := smallTmpfs(t, 1024)
	dir := smallTmpfs(t, 512)
	m := &Manager{cfg: Config{Dir: dir, MemoryDir: mem}, sandboxes: map[string]*sandbox{}}
	add := func(id string, st state.State, memMB, diskMB int) {
		m.sandboxes[id] = &sandbox{dir: m.sandboxDir(id), rec: &record{ID: id, State: st, VCPUs: 1, MemoryMB: memMB, DiskMB: diskMB}}
	}
	ctx := context.Background()
	// Existing: a running sandbox that may use 768 MiB of RAM and 400 MiB
	// of disk, of which it wrote 200.
	add("running", state.Running, 768, 400)
	writeAllocated(t, filepath.Join(dir, "sandboxes", "running", "vm", "rootfs.qcow2"), 200<<20)

	// Memory: 768 of the 1024 MiB tmpfs are promised.
	if err := try(ctx, m, 1, 256, 64); err != nil {
		t.Errorf("256 MiB of RAM fits beside 768 in 1024: %v", err)
	}
	if err := try(ctx, m, 1, 512, 64); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("512 MiB of RAM beside 768 in 1024: err %v, want ResourceExhausted", err)
	}
	if err := try(ctx, m, 2, 256, 16); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("two forks of 256 MiB beside 768 in 1024: err %v, want ResourceExhausted", err)
	}
	// Disk: ~312 MiB free, 200 still to come for "running": 100 fits,
	// 150 does not.
	if err := try(ctx, m, 1, 128, 100); err != nil {
		t.Errorf("100 MiB of disk with 200 promised and ~312 free: %v", err)
	}
	if err := try(ctx, m, 1, 128, 150); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("150 MiB of disk with 200 promised and ~312 free: err %v, want ResourceExhausted", err)
	}

	// A hibernated sandbox holds no RAM in the tmpfs, but its disk and
	// its memory image (16 of 512 MiB written so far) are promised on disk.
	add("hibernated", state.Hibernated, 512, 16)
	writeAllocated(t, filepath.Join(dir, "snapshots", "hibernated", "memory"), 16<<20)
	used, err := SandboxDiskUsed(ctx, dir, []string{"running", "hibernated", "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if used < 216<<20 || used > 217<<20 {
		t.Errorf("SandboxDiskUsed = %d MiB, want 216 (written bytes only)", used>>20)
	}
	if err := try(ctx, m, 1, 128, 64); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("64 MiB of disk with 712 MiB promised and ~296 free: err %v, want ResourceExhausted", err)
	}
	if err := try(ctx, m, 1, 256, 0); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("no disk asked but existing disks overcommitted: err %v, want ResourceExhausted", err)
	}
}

// writeAllocated makes a file of n written (allocated) bytes.
func writeAllocated(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = 1
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n >> 20 {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAdmitCountsBusySandboxes: a sandbox in a long operation (its lock
// held: booting, forking, resuming) still holds its RAM; List would report
// a booting one without sizes, and admit would then let a second create
// take the same room.
func TestAdmitCountsBusySandboxes(t *testing.T) {
	mem := smallTmpfs(t, 1024)
	m := &Manager{cfg: Config{Dir: t.TempDir(), MemoryDir: mem}, sandboxes: map[string]*sandbox{}}
	sb := &sandbox{dir: m.sandboxDir("booting"), rec: &record{ID: "booting", State: state.Starting, VCPUs: 1, MemoryMB: 768, DiskMB: 256}}
	m.sandboxes["booting"] = sb
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := try(context.Background(), m, 1, 512, 256); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("512 MiB beside a booting 768 MiB sandbox in 1024: err %v, want ResourceExhausted", err)
	}
}

// try admits and releases at once: what one create or fork would be told.
func try(ctx context.Context, m *Manager, count, memMB, diskMB int) error {
	release, err := m.admit(ctx, "test-"+newID(), count, memMB, diskMB)
	if release != nil {
		release()
	}
	return err
}

// TestAdmitCountsAdmitted: what was admitted counts until released, before
// its sandbox is registered, so concurrent creates cannot both take the
// last room; a registered sandbox that is still pending is counted once.
func TestAdmitCountsAdmitted(t *testing.T) {
	mem := smallTmpfs(t, 1024)
	m := &Manager{cfg: Config{Dir: t.TempDir(), MemoryDir: mem}, sandboxes: map[string]*sandbox{}}
	ctx := context.Background()
	first, err := m.admit(ctx, "first", 1, 768, 256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.admit(ctx, "second", 1, 512, 256); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("512 MiB beside an admitted 768 MiB in 1024: err %v, want ResourceExhausted", err)
	}
	// Registered (and booting) while still pending: counted once.
	sb := &sandbox{dir: m.sandboxDir("first"), rec: &record{ID: "first", State: state.Starting, MemoryMB: 768, DiskMB: 256}}
	m.sandboxes["first"] = sb
	if err := try(ctx, m, 1, 256, 256); err != nil {
		t.Fatalf("256 MiB beside one 768 MiB sandbox in 1024: %v", err)
	}
	first()
	first() // a second release is a no-op
	if len(m.pending) != 0 {
		t.Fatalf("pending after release: %v", m.pending)
	}
	delete(m.sandboxes, "first")
	if err := try(ctx, m, 1, 1024, 256); err != nil {
		t.Fatalf("the whole tmpfs once the first is gone: %v", err)
	}
}

// TestAdmitMemoryDropped: a sandbox paused without its memory holds no
// guest RAM, so its room can be given to others; resuming it (a cold boot)
// is then admitted like a create and refused when the room is gone,
// leaving it paused without memory.
func TestAdmitMemoryDropped(t *testing.T) {
	mem := smallTmpfs(t, 1024)
	m := &Manager{cfg: Config{Dir: t.TempDir(), MemoryDir: mem}, sandboxes: map[string]*sandbox{}}
	dropped := &sandbox{dir: m.sandboxDir("dropped"), rec: &record{ID: "dropped", State: state.Paused, MemoryDropped: true, VCPUs: 1, MemoryMB: 512, DiskMB: 16}}
	m.sandboxes["dropped"] = dropped
	ctx := context.Background()
	if err := try(ctx, m, 1, 768, 16); err != nil {
		t.Fatalf("768 MiB beside a 512 MiB sandbox paused without memory in 1024: %v", err)
	}
	m.sandboxes["running"] = &sandbox{dir: m.sandboxDir("running"), rec: &record{ID: "running", State: state.Running, VCPUs: 1, MemoryMB: 768, DiskMB: 16}}
	dropped.mu.Lock()
	err := m.resumeCold(ctx, dropped)
	dropped.mu.Unlock()
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("cold resume of 512 MiB beside 768 running in 1024: err %v, want ResourceExhausted", err)
	}
	if r := dropped.rec; r.State != state.Paused || !r.MemoryDropped || dropped.machine != nil || dropped.slot != nil {
		t.Fatalf("after a refused resume: %+v", r)
	}
	delete(m.sandboxes, "running")
	dropped.mu.Lock()
	defer dropped.mu.Unlock()
	if err := try(ctx, m, 0, 0, 0); err != nil {
		t.Fatalf("a locked (resuming) 512 MiB sandbox alone in 1024: %v", err)
	}
}
