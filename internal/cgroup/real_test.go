package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests in this file confine real processes on the host's cgroups. They
// need root and create their groups under a parent of their own
// ("wrenn-test-<pid>"), so they never touch a running agent's groups.

const helperEnv = "WRENN_CGROUP_TEST_HELPER"

// TestMain doubles as the helper process the real tests confine: when
// helperEnv is set the test binary waits for one line on stdin (sent once
// it has been moved into its group) and then misbehaves as asked.
func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "alloc":
		waitForGo()
		// Touch 256 MiB, one page at a time, keeping every byte reachable.
		var keep [][]byte
		for range 256 {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		fmt.Println("survived", len(keep))
		os.Exit(0)
	case "spin":
		waitForGo()
		end := time.Now().Add(2 * time.Second)
		n := 0
		for time.Now().Before(end) {
			n++
		}
		fmt.Println("spun", n > 0)
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode")
		os.Exit(2)
	}
}

func waitForGo() {
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(3)
	}
}

// realManager returns a Manager on the host's cgroups, with its own parent
// group that is removed when the test ends.
func realManager(t *testing.T) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups under /sys/fs/cgroup")
	}
	m, err := Detect("", fmt.Sprintf("wrenn-test-%d", os.Getpid()))
	if err != nil {
		t.Skipf("needs a usable cgroup hierarchy: %v", err)
	}
	t.Cleanup(func() {
		for _, d := range m.b.dirs("x") {
			if err := syscall.Rmdir(filepath.Dir(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove test parent group: %v", err)
			}
		}
	})
	return m
}

// startConfined starts cmd, moves it into g and only then lets it go on, so
// everything it does is charged to g.
func startConfined(t *testing.T, g *Group, cmd *exec.Cmd) (stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, err := io.WriteString(in, "go\n"); err != nil {
		t.Fatal(err)
	}
	return stdout, stderr
}

func helper(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// assertGone checks that the group has no directory left in any hierarchy.
func assertGone(t *testing.T, m *Manager, g *Group) {
	t.Helper()
	for _, d := range m.b.dirs(g.ID()) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Remove (stat: %v)", d, err)
		}
	}
	if _, err := m.Open(g.ID()); err == nil {
		t.Errorf("Open(%s) succeeded after Remove", g.ID())
	}
}

func TestRealMemoryLimitOOMKillsOnlyTheGroup(t *testing.T) {
	m := realManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, err := m.Create(ctx, "oom", Limits{MemoryBytes: 64 << 20, Pids: 64})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cmd := helper("alloc")
	stdout, stderr := startConfined(t, g, cmd)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper exited with %v (stdout %q, stderr %q); want killed", err, stdout, stderr)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v (stderr %q), want SIGKILL from the OOM killer", ws, stderr)
	}
	if strings.Contains(stdout.String(), "survived") {
		t.Fatalf("helper allocated 256 MiB under a 64 MiB limit")
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if s.OOMKills < 1 {
		t.Errorf("Stats.OOMKills = %d, want >= 1", s.OOMKills)
	}
	t.Logf("after OOM kill: %+v", s)
	if err := g.Remove(ctx, WaitEmpty); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	assertGone(t, m, g)
}

func TestRealPidsLimitCapsForkLoop(t *testing.T) {
	m := realManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const max = 8
	g, err := m.Create(ctx, "forks", Limits{Pids: max})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// The shell tries to start 30 background sleeps; with the shell itself
	// counted, only max-1 can exist. The sleeps outlive the shell, so
	// Remove has to kill them. Their output goes to /dev/null so they do
	// not hold the shell's pipes open and make Wait block on them.
	cmd := exec.Command("sh", "-c", `read x; i=0; while [ $i -lt 30 ]; do sleep 300 >/dev/null 2>&1 & i=$((i+1)); done; echo all started`)
	stdout, stderr := startConfined(t, g, cmd)
	err = cmd.Wait()
	t.Logf("shell: err=%v stdout=%q stderr=%q", err, stdout, stderr)
	if strings.Contains(stdout.String(), "all started") {
		t.Fatalf("shell started 30 processes under pids.max=%d", max)
	}
	if !strings.Contains(strings.ToLower(stderr.String()), "fork") {
		t.Errorf("shell stderr %q does not mention the failed fork", stderr)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	// The shell has exited; its sleeps fill the group up to the limit.
	if s.Pids < 1 || s.Pids > max {
		t.Errorf("Stats.Pids = %d, want 1..%d", s.Pids, max)
	}
	pids, err := g.Pids()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("left in group: %d processes, stats %+v", len(pids), s)
	if len(pids) != max-1 {
		t.Errorf("%d sleeps left in the group, want %d (pids.max minus the shell)", len(pids), max-1)
	}
	if err := g.Remove(ctx, KillProcesses); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, pid := range pids {
		// Killed processes may linger as zombies of whoever reaps orphans,
		// but they must no longer run.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] != "Z" && f[2] != "X" {
				t.Errorf("pid %d still running (state %s) after Remove(KillProcesses)", pid, f[2])
			}
		}
	}
	assertGone(t, m, g)
}

func TestRealCPUQuotaThrottles(t *testing.T) {
	m := realManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g, err := m.Create(ctx, "cpu", Limits{CPUQuota: 0.1, Pids: 64})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	cmd := helper("spin")
	stdout, stderr := startConfined(t, g, cmd)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("spin helper: %v (stdout %q, stderr %q)", err, stdout, stderr)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	t.Logf("2 s of spinning under 0.1 vCPU used %d us of CPU", s.CPUUsageUS)
	// The quota allows about 200 ms in 2 s; unconfined the spin would use
	// about 2 s. A busy machine only lowers usage, so an upper bound cannot
	// flake. The slack covers per-CPU bandwidth slices, the runtime's other
	// threads and the helper's start and exit.
	if s.CPUUsageUS <= 0 || s.CPUUsageUS > 1_000_000 {
		t.Errorf("CPU usage %d us for 2 s of spinning under a 0.1 vCPU quota, want 1..1000000", s.CPUUsageUS)
	}
	if err := g.Remove(ctx, WaitEmpty); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	assertGone(t, m, g)
}
