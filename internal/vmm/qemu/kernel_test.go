package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/vmm"
)

// TestBootRealKernel boots the guest kernel with no root disk: it prints
// its banner, panics at root mount and, with -no-reboot, QEMU exits.
func TestBootRealKernel(t *testing.T) {
	kernel := findKernel(t)
	d := testDriver(t)
	dir := sandboxDir(t)
	spec := vmm.Spec{ID: "panic", Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMB: 256}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t0 := time.Now()
	m, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("qemu did not exit after the guest panicked: %v", err)
	}
	t.Logf("boot to qemu exit after root-mount panic: %s", time.Since(t0))
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("stop of an exited machine: %v", err)
	}
	b, err := os.ReadFile(m.(*Machine).ConsoleLogPath())
	if err != nil {
		t.Fatal(err)
	}
	log := string(b)
	for _, want := range []string{"Linux version", "VFS: Unable to mount root"} {
		if !strings.Contains(log, want) {
			t.Errorf("console.log lacks %q; it has:\n%s", want, tail(log, 1500))
		}
	}
}

// TestRealGuestRootfs boots the minimal image through a qcow2 overlay and
// takes it through pause, snapshot (shared memory file) and restore.
func TestRealGuestRootfs(t *testing.T) {
	kernel := findKernel(t)
	if _, err := os.Stat(rootfsPath); err != nil {
		requireVM(t, "needs the minimal rootfs at "+rootfsPath+" (images/minimal)")
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		requireVM(t, "needs qemu-img for the overlay (apt-get install qemu-utils)")
	}
	dir := sandboxDir(t)
	overlay := filepath.Join(dir, "root.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfsPath, overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	spec := vmm.Spec{ID: "rootfs", Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMB: 256,
		KernelArgs: "root=/dev/vda rw",
		RootDisk:   vmm.Disk{Path: overlay, Format: "qcow2"},
		MemoryFile: filepath.Join(dir, "mem")}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	d := testDriver(t)
	t0 := time.Now()
	m, err := d.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)
	consoleLog := m.(*Machine).ConsoleLogPath()
	waitConsole(t, ctx, m, consoleLog, "EXT4-fs (vda)")
	t.Logf("boot to root mounted: %s", time.Since(t0))

	t0 = time.Now()
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("pause: %s", time.Since(t0))
	snap := t.TempDir()
	t0 = time.Now()
	if err := m.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot (shared memory): %s", time.Since(t0))
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	r, err := d.Restore(ctx, spec, snap)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, r)
	t.Logf("restore: %s", time.Since(t0))
	if st := status(t, r); st != "running" {
		t.Fatalf("restored guest is %q", st)
	}
}

// waitConsole polls the console log until it contains want.
func waitConsole(t *testing.T, ctx context.Context, m vmm.Machine, path, want string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("console never showed %q:\n%s", want, tail(string(b), 1500))
		case <-m.(*Machine).exited:
			b, _ = os.ReadFile(path)
			if strings.Contains(string(b), want) {
				return
			}
			t.Fatalf("qemu exited before the console showed %q:\n%s", want, tail(string(b), 1500))
		case <-tick.C:
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
