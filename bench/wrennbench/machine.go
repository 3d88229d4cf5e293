package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is what the figures were measured on.
type Machine struct {
	CPU           string `json:"cpu"`
	Cores         int    `json:"cores"`
	MemoryBytes   int64  `json:"memory_bytes"`
	HostKernel    string `json:"host_kernel"`
	QEMU          string `json:"qemu"`
	Accel         string `json:"accel"`
	AccelReason   string `json:"accel_reason"`
	GuestKernel   string `json:"guest_kernel"`
	Image         string `json:"image"`
	GuestMemoryMB int    `json:"guest_memory_mb"`
	GuestVCPUs    int    `json:"guest_vcpus"`
	LoadAvg       string `json:"load_average_at_start"`
	Runsc         string `json:"runsc"`
	GoVersion     string `json:"go_version"`
	GitCommit     string `json:"git_commit"`
}

// hostFacts fills in what the host says about itself; errors leave a
// field saying why it is unknown rather than stopping the benchmark.
func hostFacts(ctx context.Context, qemuBin string) Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	var un unix.Utsname
	if unix.Uname(&un) == nil {
		m.HostKernel = unix.ByteSliceToString(un.Release[:])
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	out, err := exec.CommandContext(ctx, qemuBin, "--version").Output()
	if err != nil {
		m.QEMU = "unknown: " + err.Error()
	} else {
		m.QEMU, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	m.Runsc = "not installed"
	if out, err := exec.CommandContext(ctx, "runsc", "--version").Output(); err == nil {
		m.Runsc, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	m.GoVersion = runtime.Version()
	m.GitCommit = gitCommit(ctx)
	return m
}

// gitCommit is the checkout's commit, "+dirty" when it has changes; the
// build's VCS stamp when git cannot say (go run stamps none).
func gitCommit(ctx context.Context) string {
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		c := strings.TrimSpace(string(out))
		if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			c += "+dirty"
		}
		return c
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// Pss is a process's proportional set size from smaps_rollup, split the
// way the memory figure needs it. Shmem is the part that is the guest's
// RAM file (tmpfs), Other the VMM's own memory.
type Pss struct {
	Total, Shmem int64
}

// readPss reads /proc/<pid>/smaps_rollup.
func readPss(pid int) (Pss, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return Pss{}, fmt.Errorf("read pss of pid %d: %w", pid, err)
	}
	return parseSmapsRollup(b)
}

// parseSmapsRollup takes the Pss and Pss_Shmem lines (kB) of smaps_rollup.
func parseSmapsRollup(b []byte) (Pss, error) {
	var p Pss
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Pss{}, fmt.Errorf("smaps_rollup %s: %w", k, err)
		}
		switch k {
		case "Pss":
			p.Total, found = n<<10, true
		case "Pss_Shmem":
			p.Shmem = n << 10
		}
	}
	if !found {
		return Pss{}, fmt.Errorf("smaps_rollup has no Pss line")
	}
	return p, nil
}

// allocated is the bytes a (sparse) file really holds.
func allocated(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Blocks * 512, nil
}
