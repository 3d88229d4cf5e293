package qemu_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

const (
	helperDirEnv    = "WRENN_QEMU_TEST_AGENT_DIR"
	helperKernelEnv = "WRENN_QEMU_TEST_AGENT_KERNEL"
)

// TestHelperAgent is not a test: TestAttachAfterAgentKilled runs the test
// binary as a stand-in agent that boots a guest and then gets SIGKILLed.
func TestHelperAgent(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestAttachAfterAgentKilled")
	}
	d := qemu.New(qemu.Config{Binary: qemu.DefaultBinary, Accel: qemu.AccelTCG})
	spec := vmm.Spec{ID: "agentkill", Dir: dir, Kernel: os.Getenv(helperKernelEnv), VCPUs: 1, MemoryMB: 64}
	m, err := d.Boot(context.Background(), spec)
	if err != nil {
		os.Stdout.WriteString("ERR " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("PID " + strconv.Itoa(m.PID()) + "\n")
	select {} // wait for SIGKILL
}

func TestAttachAfterAgentKilled(t *testing.T) {
	kernel := haltKernel(t)
	testenv.LookPath(t, qemu.DefaultBinary)
	dir := sandboxDir(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	agent := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperAgent$")
	agent.Env = append(os.Environ(), helperDirEnv+"="+dir, helperKernelEnv+"="+kernel)
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PID ") {
		_ = agent.Process.Kill()
		_ = agent.Wait()
		t.Fatalf("helper agent said %q (%v)", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "PID ")))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // only if the test fails early

	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	if !qemu.IsQEMUFor(pid, filepath.Join(dir, qemu.PIDFileName)) {
		t.Fatalf("qemu pid %d died with the agent", pid)
	}

	d := testDriver(t)
	spec := vmm.Spec{ID: "agentkill", Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMB: 64}
	m, err := d.Attach(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)
	if m.PID() != pid {
		t.Fatalf("attached pid %d, agent started %d", m.PID(), pid)
	}
	if st := status(t, m); st != "running" {
		t.Fatalf("adopted guest is %q", st)
	}
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}

	// Wait on a process that is not our child (pidfd path).
	waitErr := make(chan error, 1)
	go func() { waitErr <- m.Wait(ctx) }()
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Wait did not return after Stop")
	}
	if qemu.IsQEMUFor(pid, filepath.Join(dir, qemu.PIDFileName)) {
		t.Fatalf("qemu pid %d still runs after Stop", pid)
	}
}

func TestAttachAfterClose(t *testing.T) {
	kernel := haltKernel(t)
	ctx := context.Background()
	d1 := testDriver(t)
	spec := haltSpec(t, kernel)
	m1, err := d1.Boot(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pid := m1.PID()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err := m1.(*qemu.Machine).Close(); err != nil {
		t.Fatal(err)
	}
	if err := m1.Wait(ctx); err == nil {
		t.Fatal("Wait on a closed machine returned nil while qemu runs")
	}

	d2 := testDriver(t)
	// While a second client holds the monitor, Attach gives up with
	// Unavailable instead of hanging.
	holder, err := qemu.DialQMP(ctx, filepath.Join(spec.Dir, qemu.QMPSocketName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Attach(ctx, spec); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("attach while the monitor is held: err = %v, want Unavailable", err)
	}
	holder.Close()
	m2, err := d2.Attach(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m2)
	if m2.PID() != pid {
		t.Fatalf("attached pid %d, booted %d", m2.PID(), pid)
	}
	if err := m2.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := status(t, m2); st != "paused" {
		t.Fatalf("status = %q", st)
	}
	if err := m1.Stop(ctx); err == nil {
		t.Fatal("Stop through a closed machine succeeded while another owns qemu")
	}
	if err := m2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Attach(ctx, spec); err == nil {
		t.Fatal("attach after stop succeeded")
	}
}

// TestBootInNetNS checks that QEMU runs inside Spec.NetNS with its TAP.
func TestBootInNetNS(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.LookPath(t, "ip")
	kernel := haltKernel(t)
	name := "wq-test-" + strconv.Itoa(os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
	run("-n", name, "link", "set", "tap0", "up")

	spec := haltSpec(t, kernel)
	spec.NetNS = "/run/netns/" + name
	spec.Net = &vmm.NetDevice{TAP: "tap0", MAC: "02:fc:00:00:00:07"}
	m, err := testDriver(t).Boot(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)

	var want, got, self syscall.Stat_t
	if err := syscall.Stat(spec.NetNS, &want); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/proc/"+strconv.Itoa(m.PID())+"/ns/net", &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Fatalf("qemu runs in netns inode %d, want %d", got.Ino, want.Ino)
	}
	// The agent's own threads must be back in the host namespace.
	if err := syscall.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if self.Ino == want.Ino {
		t.Fatal("the test process was left inside the sandbox netns")
	}

	// A missing netns is a NotFound, not a half-started QEMU.
	bad := haltSpec(t, kernel)
	bad.NetNS = "/run/netns/wq-test-missing"
	if _, err := testDriver(t).Boot(context.Background(), bad); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("boot in a missing netns: err = %v", err)
	}
}

// TestBootAsUnprivilegedUser runs QEMU as nobody (Spec.UID/GID).
func TestBootAsUnprivilegedUser(t *testing.T) {
	testenv.RequireRoot(t)
	const nobody = 65534
	spec := haltSpec(t, "")
	// nobody must reach the kernel and own the sandbox dir.
	src, err := os.ReadFile(haltKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	spec.Kernel = filepath.Join(spec.Dir, "vmlinux")
	if err := os.WriteFile(spec.Kernel, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(spec.Dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	spec.UID, spec.GID = nobody, nobody
	spec.MemoryFile = filepath.Join(spec.Dir, "mem")
	m, err := testDriver(t).Boot(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, m)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(m.PID()) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") {
			if f := strings.Fields(l); len(f) < 5 || f[1] != "65534" || f[2] != "65534" || f[3] != "65534" {
				t.Fatalf("qemu runs with %q, want nobody", l)
			}
		}
		if strings.HasPrefix(l, "Groups:") && strings.TrimSpace(strings.TrimPrefix(l, "Groups:")) != "" {
			t.Fatalf("qemu kept supplementary groups: %q", l)
		}
	}
}
