package qemu_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// TestBootRealKernel boots the guest kernel with no root disk: it prints
// its banner, panics at root mount and, with -no-reboot, QEMU exits.
func TestBootRealKernel(t *testing.T) {
	kernel := testenv.Kernel(t).Path
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
	b, err := os.ReadFile(m.(*qemu.Machine).ConsoleLogPath())
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

// TestRealGuestRootfs boots the minimal image through a qcow2 overlay with
// a shell loop as init that prints a counter, and takes it through pause,
// snapshot (shared memory file), stop and restore. The restored guest must
// continue the count, not start over: its memory really came back.
func TestRealGuestRootfs(t *testing.T) {
	kernel := testenv.Kernel(t).Path
	rootfsPath := testenv.Rootfs(t)
	qemuImg := testenv.LookPath(t, "qemu-img")
	tests := []struct {
		name   string
		shared bool
	}{
		{name: "shared memory file", shared: true},
		{name: "full RAM in state file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sandboxDir(t)
			overlay := filepath.Join(dir, "root.qcow2")
			if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfsPath, overlay).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v: %s", err, out)
			}
			spec := vmm.Spec{ID: "rootfs", Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMB: 256,
				// Kernel parameters without "=" or "." reach init as arguments.
				KernelArgs: `root=/dev/vda rw init=/bin/sh -c "seq 100000 | while read i; do echo tick$i; sleep 1; done"`,
				RootDisk:   vmm.Disk{Path: overlay, Format: "qcow2"},
			}
			if tt.shared {
				spec.MemoryFile = filepath.Join(dir, "mem")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			d := testDriver(t)
			t0 := time.Now()
			m, err := d.Boot(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, m)
			consoleLog := m.(*qemu.Machine).ConsoleLogPath()
			waitConsole(t, ctx, m, consoleLog, "tick2\r\n")
			t.Logf("boot to init running: %s", time.Since(t0))

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
			st, _ := os.Stat(filepath.Join(snap, qemu.StateFileName))
			t.Logf("snapshot: %s, state %d bytes", time.Since(t0), st.Size())
			if err := m.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			last := lastTick(t, consoleLog)

			t0 = time.Now()
			r, err := d.Restore(ctx, spec, snap)
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, r)
			t.Logf("restore (process start to running): %s", time.Since(t0))
			want := fmt.Sprintf("tick%d\r\n", last+2)
			waitConsole(t, ctx, r, consoleLog, want)
			t.Logf("restore to %q on the console: %s", strings.TrimSpace(want), time.Since(t0))
			b, _ := os.ReadFile(consoleLog)
			if n := strings.Count(string(b), "tick1\r\n"); n != 1 {
				t.Fatalf("the counter started over after restore (%d times tick1)", n)
			}
		})
	}
}

var tickRe = regexp.MustCompile(`tick(\d+)\r\n`)

// lastTick is the highest counter value the guest printed.
func lastTick(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	last := 0
	for _, m := range tickRe.FindAllSubmatch(b, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		last = max(last, n)
	}
	if last == 0 {
		t.Fatalf("no tick on the console:\n%s", tail(string(b), 1500))
	}
	return last
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
		case <-qemu.Exited(m.(*qemu.Machine)):
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
