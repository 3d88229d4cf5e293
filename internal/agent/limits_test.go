//go:build linux

package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/envdclient"
)

// TestLimits: a fork bomb, a memory hog and a disk filler in one sandbox
// leave the agent and a neighbour sandbox responsive: the disk filler
// stops at disk_mb, the neighbour's commands complete (their round trip
// is reported against its idle value), the agent answers and the abuser
// is destroyed.
func TestLimits(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)

	bad, err := m.Create(ctx, agent.CreateRequest{VCPUs: 1, MemoryMB: 256, DiskMB: 512})
	if err != nil {
		t.Fatal(err)
	}
	good, err := m.Create(ctx, agent.CreateRequest{VCPUs: 1, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Destroy(context.Background(), bad.ID)
		_ = m.Destroy(context.Background(), good.ID)
	})

	idle := execRoundTrip(ctx, t, m, good.ID, 15)
	t.Logf("neighbour exec round trip, idle: median %v", idle)

	// The disk filler runs to completion first: it must end in ENOSPC
	// inside the guest, and the host file must stay within disk_mb.
	out, _, _ := run(ctx, t, m, bad.ID, "dd if=/dev/zero of=fill bs=1M 2>&1; sync")
	if !strings.Contains(out, "No space left on device") {
		t.Fatalf("disk filler did not hit ENOSPC:\n%s", out)
	}
	met, err := m.Metrics(ctx, bad.ID)
	if err != nil {
		t.Fatal(err)
	}
	if limit := int64(bad.DiskMB+64) << 20; met.DiskAllocated > limit {
		t.Fatalf("disk file holds %d bytes, past disk_mb %d MiB + qcow2 metadata", met.DiskAllocated, bad.DiskMB)
	}

	// The memory hog and the fork bomb keep running in the background.
	c, err := m.Envd(ctx, bad.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{
		`python3 -c 'a=[]
while True: a.append(bytearray(16<<20))'`,
		`bomb() { bomb | bomb & }; bomb`,
	} {
		if _, err := c.Start(ctx, envdclient.RunRequest{Cmd: "/bin/bash", Args: []string{"-c", script}}); err != nil {
			t.Fatalf("start abuse %q: %v", script, err)
		}
	}
	// Let the abuse take hold: the bad sandbox's VMM burns at least half a
	// core (its cgroup caps it at one).
	pollUntil(t, 60*time.Second, func() bool {
		before, err := m.Metrics(ctx, bad.ID)
		if err != nil {
			return false
		}
		time.Sleep(time.Second)
		after, err := m.Metrics(ctx, bad.ID)
		return err == nil && after.VMMCPUUsageUS-before.VMMCPUUsageUS > 500_000
	})

	// What the neighbour feels depends on everything else the host runs,
	// so its latency is reported, not asserted: a 3x bar failed on a busy
	// 2-core machine whenever other work came and went between the idle
	// and the loaded measurement.
	// The window spans both Metrics calls whole (each reads the cgroup
	// first, then asks the busy guest's envd, which can take seconds), so
	// the rate is never overstated.
	// (The abused guest's envd may not answer its metrics: then the
	// figure is skipped.)
	window := time.Now()
	before, errBefore := m.Metrics(ctx, bad.ID)
	loaded := execRoundTrip(ctx, t, m, good.ID, 15)
	after, errAfter := m.Metrics(ctx, bad.ID)
	elapsed := time.Since(window)
	// Reported, not asserted: a 1-vCPU guest under TCG cannot use much
	// more than one core whatever its quota, so a bound here could not
	// fail. The quota is checked on the VMM process itself instead.
	if errBefore == nil && errAfter == nil {
		cores := float64(after.VMMCPUUsageUS-before.VMMCPUUsageUS) / float64(elapsed.Microseconds())
		t.Logf("abusive sandbox's VMM used %.2f cores over %v (quota: %d vCPU)", cores, elapsed.Round(time.Millisecond), bad.VCPUs)
	} else {
		t.Logf("abusive sandbox's CPU use not measured: its metrics failed (%v; %v)", errBefore, errAfter)
	}
	info, err := m.Get(ctx, bad.ID)
	if err != nil {
		t.Fatal(err)
	}
	quota := vmmCPUQuota(t, info.PID)
	t.Logf("the abusive sandbox's VMM (pid %d) has a CPU quota of %v cores", info.PID, quota)
	if quota != float64(bad.VCPUs) {
		t.Errorf("the abusive sandbox's VMM (pid %d) has a CPU quota of %v cores, want %d", info.PID, quota, bad.VCPUs)
	}
	t.Logf("neighbour exec round trip, during fork bomb + memory hog in the other sandbox: median %v (%.1fx idle)", loaded, float64(loaded)/float64(idle))
	// Liveness, not speed: the neighbour's commands still complete.
	if loaded > 10*time.Second {
		t.Errorf("neighbour exec round trip %v: the neighbour is starved", loaded)
	}

	// The agent still answers at once.
	start := time.Now()
	if _, err := m.List(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Metrics(ctx, good.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("agent List + Metrics during the abuse: %v", time.Since(start))

	// The abusive sandbox is still destroyable, promptly.
	start = time.Now()
	if err := m.Destroy(ctx, bad.ID); err != nil {
		t.Fatalf("destroy the abusive sandbox: %v", err)
	}
	t.Logf("destroy of the abusive sandbox: %v", time.Since(start))
}

// execRoundTrip returns the median time of n runs of `true` in a sandbox.
func execRoundTrip(ctx context.Context, t *testing.T, m *agent.Manager, id string, n int) time.Duration {
	t.Helper()
	c, err := m.Envd(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	samples := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		res, err := c.Run(ctx, envdclient.RunRequest{Cmd: "/bin/true"})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("exec true: %+v, %v", res, err)
		}
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	return samples[len(samples)/2]
}

func pollUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// vmmCPUQuota reads the CPU quota (in cores; -1 for none) of the cgroup
// process pid is in, from /proc/<pid>/cgroup: the v1 cpu hierarchy's
// cfs_quota_us/cfs_period_us, or v2's cpu.max.
func vmmCPUQuota(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := strings.Split(parts[1], ","), parts[2]
		switch {
		case slices.Contains(ctrls, "cpu"):
			dir := filepath.Join("/sys/fs/cgroup/cpu", path)
			q, errQ := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
			p, errP := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
			if errQ != nil || errP != nil {
				t.Fatalf("read the v1 cpu quota of %s: %v %v", dir, errQ, errP)
			}
			return ratio(t, strings.TrimSpace(string(q)), strings.TrimSpace(string(p)))
		case parts[0] == "0" && parts[1] == "":
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
				continue // a v1 host's named hierarchy, not v2
			}
			max, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "cpu.max"))
			if err != nil {
				t.Fatalf("read cpu.max: %v", err)
			}
			f := strings.Fields(string(max))
			if len(f) != 2 {
				t.Fatalf("cpu.max %q", max)
			}
			return ratio(t, f[0], f[1])
		}
	}
	t.Fatalf("pid %d is in no cpu cgroup:\n%s", pid, b)
	return 0
}

func ratio(t *testing.T, quota, period string) float64 {
	t.Helper()
	if quota == "max" || quota == "-1" {
		return -1
	}
	q, err1 := strconv.ParseFloat(quota, 64)
	p, err2 := strconv.ParseFloat(period, 64)
	if err1 != nil || err2 != nil || p == 0 {
		t.Fatalf("cpu quota %q / period %q", quota, period)
	}
	return q / p
}
