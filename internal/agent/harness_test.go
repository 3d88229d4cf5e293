//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// harness is one host agent's world, private to a test: its own WRENN_DIR
// (sharing the built images), network prefix and address ranges, nftables
// table and cgroup parent, so it never touches a real agent's sandboxes.
type harness struct {
	t      testing.TB
	dir    string
	pcfg   network.PoolConfig
	clock  agent.Clock // nil: the system clock
	run    int
	cgroup string
	images testenv.Images
	accel  qemu.Accel
	// metricsInterval turns the metrics sampler's history on (0: off);
	// tests call SampleMetrics themselves.
	metricsInterval time.Duration
	// events receives the manager's sandbox events (nil: none).
	events agent.EventSink
	// faults is the fault-point directory (internal/faultpoint); "" for
	// none.
	faults string
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	dir := t.TempDir()
	// VMMs run unprivileged and must pass through WRENN_DIR's parents;
	// TempDir makes them 0700.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarnessIn(t, dir, os.Getpid())
	t.Cleanup(h.assertNoLeftovers)
	return h
}

// newHarnessIn builds a harness over an existing directory. Names, address
// ranges and the cgroup parent derive from run (the test process's pid), so
// that test processes running at the same time (two packages, two
// checkouts) never reclaim each other's slots; a second "agent process" of
// the same test passes the same run to share the first one's world.
func newHarnessIn(t testing.TB, dir string, run int) *harness {
	t.Helper()
	n := run % 50
	images := testenv.RequireVM(t)
	// Kernels and base images are shared (read-only); templates a test
	// makes stay in its own images dir.
	links := map[string]string{
		filepath.Join(dir, "kernels"):           filepath.Join(images.Dir, "kernels"),
		filepath.Join(dir, "images", "minimal"): filepath.Dir(images.Rootfs),
	}
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range links {
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{
		t:   t,
		dir: dir,
		pcfg: network.PoolConfig{
			Prefix:   fmt.Sprintf("wa%d-", n),
			Slots:    32,
			HostCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + 2*n), 0, 0}), 16),
			VethCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(101 + 2*n), 0, 0}), 16),
			Table:    fmt.Sprintf("wrenn_agent_test_%d", n),
		},
		run:    run,
		cgroup: fmt.Sprintf("wrenn-agent-test-%d", run),
		images: images,
	}
	choice := testenv.Accel(images.Kernel.Path)
	h.accel = choice.Accel
	t.Logf("accelerator %s: %s", choice.Accel, choice.Reason)
	return h
}

// agent starts a Manager (an "agent process" in-process) and recovers.
func (h *harness) agent(ctx context.Context) *agent.Manager {
	h.t.Helper()
	m, err := h.newManager()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := m.Recover(ctx); err != nil {
		h.t.Fatalf("recover: %v", err)
	}
	return m
}

func (h *harness) newManager() (*agent.Manager, error) {
	level := slog.LevelInfo
	if os.Getenv("WRENN_TEST_LOG") == "debug" {
		level = slog.LevelDebug // step timings of every plan
	}
	logger := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: level}))
	pool, err := network.NewPool(h.pcfg, logger)
	if err != nil {
		return nil, err
	}
	cg, err := cgroup.Detect("", h.cgroup)
	if err != nil {
		return nil, err
	}
	return agent.New(agent.Config{
		Dir:       h.dir,
		Driver:    qemu.New(qemu.Config{Accel: h.accel, Logger: logger}),
		Network:   pool,
		Cgroups:   cg,
		Logger:    logger,
		Clock:     h.clock,
		MemoryDir: h.memoryDir(),
		// Test processes running at the same time get disjoint VMM
		// identities too, as they get disjoint slots.
		VMMUIDBase:      agent.DefaultVMMUIDBase + uint32(h.run%50)*64,
		MetricsInterval: h.metricsInterval,
		Events:          h.events,
		Faults:          faultpoint.New(h.faults, logger),
	})
}

// run executes a shell command in a sandbox and returns stdout, stderr and
// the exit code.
func run(ctx context.Context, t testing.TB, m *agent.Manager, id, script string) (string, string, int) {
	t.Helper()
	c, err := m.Envd(ctx, id)
	if err != nil {
		t.Fatalf("envd client of %s: %v", id, err)
	}
	var stdout, stderr bytes.Buffer
	res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/sh", Args: []string{"-c", script}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("run %q in %s: %v", script, id, err)
	}
	return stdout.String(), stderr.String(), res.ExitCode
}

// assertNoLeftovers checks the host holds nothing of this harness once the
// test is done: no netns, veth, nftables table in a slot, cgroup or file.
func (h *harness) assertNoLeftovers() {
	t := h.t
	if t.Failed() || t.Skipped() {
		return
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), h.pcfg.Prefix) {
		t.Errorf("network namespaces left behind:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), h.pcfg.Prefix) {
		t.Errorf("host interfaces left behind:\n%s", out)
	}
	for _, c := range []string{"memory", "cpu", "pids", ""} {
		p := filepath.Join("/sys/fs/cgroup", c, h.cgroup)
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				t.Errorf("cgroup left behind: %s", filepath.Join(p, e.Name()))
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(h.dir, "sandboxes"))
	for _, e := range entries {
		t.Errorf("sandbox dir left behind: %s", e.Name())
	}
	// The host-wide table is the agent's, not a sandbox's: a real agent
	// keeps it. The harness is the agent here, so it removes it, and
	// nothing else of ours may remain in nftables.
	_ = exec.Command("nft", "delete", "table", "inet", h.pcfg.Table).Run()
	if out, _ := exec.Command("nft", "list", "tables").Output(); slices.Contains(strings.Split(string(out), "\n"), "table inet "+h.pcfg.Table) {
		t.Errorf("nftables table %s left behind", h.pcfg.Table)
	}
	if mems, _ := filepath.Glob(filepath.Join(h.memoryDir(), "*")); len(mems) > 0 {
		t.Errorf("guest memory files left behind: %v", mems)
	}
	// The agent mounted a tmpfs there; a real agent keeps it.
	_ = unix.Unmount(h.memoryDir(), unix.MNT_DETACH)
	_ = os.Remove(h.memoryDir())
	// The cgroup parent itself is ours to remove.
	for _, c := range []string{"memory", "cpu", "pids", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, h.cgroup))
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// memoryDir holds this harness's guest RAM files.
func (h *harness) memoryDir() string {
	return fmt.Sprintf("/dev/shm/wrenn-agent-test-%d", h.run)
}

// diagnose logs what the host sees of a sandbox that stopped answering: its
// VMM process, its console, the host's route to it, and whether envd answers
// from inside its slot's namespace (bypassing the host side).
func (h *harness) diagnose(t testing.TB, m *agent.Manager, id string) {
	t.Helper()
	info, err := m.Get(context.Background(), id)
	if err != nil {
		t.Logf("diagnose %s: %v", id, err)
		return
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.PID))
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "State:") {
			t.Logf("diagnose %s: vmm pid %d %s", id, info.PID, l)
		}
	}
	console, _ := os.ReadFile(filepath.Join(h.dir, "sandboxes", id, "vm", "console.log"))
	if len(console) > 1500 {
		console = console[len(console)-1500:]
	}
	t.Logf("diagnose %s: console tail:\n%s", id, console)
	route, _ := exec.Command("ip", "route", "get", info.Address).CombinedOutput()
	t.Logf("diagnose %s: host route: %s", id, route)
	last := info.Address[strings.LastIndex(info.Address, ".")+1:]
	ns := h.pcfg.Prefix + last
	inside, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "http://169.254.0.21:49983/health").CombinedOutput()
	t.Logf("diagnose %s: envd from inside %s: %s %v", id, ns, inside, err)
	// Which layer is gone: the guest kernel's network (the TCP handshake
	// is the kernel's alone) or only envd's answer (HTTP)?
	tcp, err := exec.Command("ip", "netns", "exec", ns, "timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/169.254.0.21/49983").CombinedOutput()
	t.Logf("diagnose %s: TCP handshake to envd from inside %s: %v %s", id, ns, err, tcp)
	stats, err := exec.Command("ip", "-n", ns, "-s", "link").CombinedOutput()
	t.Logf("diagnose %s: links in %s (%v):\n%s", id, ns, err, stats)
	// Is the VMM still in the namespace that carries the slot's name?
	vmmNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", info.PID))
	var st syscall.Stat_t
	nsDir := h.pcfg.NetNSDir
	if nsDir == "" {
		nsDir = "/run/netns"
	}
	_ = syscall.Stat(filepath.Join(nsDir, ns), &st)
	t.Logf("diagnose %s: vmm netns %s, %s is inode %d", id, vmmNS, ns, st.Ino)
	neigh, _ := exec.Command("ip", "-n", ns, "neigh").CombinedOutput()
	t.Logf("diagnose %s: neighbours in %s: %s", id, ns, neigh)
}
