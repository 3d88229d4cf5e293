// Package guestmetrics samples the guest's resource usage for envd's
// GET /metrics: CPU from /proc/stat, memory from /proc/meminfo and the root
// filesystem from statfs.
package guestmetrics

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Metrics is the body of GET /metrics. The JSON names are E2B's envd field
// names, so E2B's SDKs and orchestrator read it unchanged.
type Metrics struct {
	TS         int64   `json:"ts"`           // unix seconds, guest clock
	CPUCount   int     `json:"cpu_count"`    // online CPUs
	CPUUsedPct float64 `json:"cpu_used_pct"` // busy share of all CPUs since the previous sample, 0..100
	MemTotal   uint64  `json:"mem_total"`    // bytes
	MemUsed    uint64  `json:"mem_used"`     // bytes, MemTotal - MemAvailable
	DiskUsed   uint64  `json:"disk_used"`    // bytes used on the root filesystem
	DiskTotal  uint64  `json:"disk_total"`   // bytes on the root filesystem
}

// Config says where a Sampler reads from. Zero values are the real system.
type Config struct {
	ProcStat string           // default /proc/stat
	MemInfo  string           // default /proc/meminfo
	DiskPath string           // default /
	Now      func() time.Time // default time.Now
}

// Sampler produces Metrics. CPU usage is the delta against the previous
// sample, so a request never sleeps to measure it; the first sample reports
// the average since boot. Safe for concurrent use.
type Sampler struct {
	cfg Config

	mu        sync.Mutex
	prevBusy  uint64
	prevTotal uint64
}

// New returns a Sampler reading the files cfg names.
func New(cfg Config) *Sampler {
	if cfg.ProcStat == "" {
		cfg.ProcStat = "/proc/stat"
	}
	if cfg.MemInfo == "" {
		cfg.MemInfo = "/proc/meminfo"
	}
	if cfg.DiskPath == "" {
		cfg.DiskPath = "/"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sampler{cfg: cfg}
}

// Sample reads the current usage.
func (s *Sampler) Sample() (Metrics, error) {
	m := Metrics{TS: s.cfg.Now().Unix()}

	stat, err := os.ReadFile(s.cfg.ProcStat)
	if err != nil {
		return Metrics{}, fmt.Errorf("read cpu stats: %w", err)
	}
	busy, total, cpus, err := parseStat(stat)
	if err != nil {
		return Metrics{}, fmt.Errorf("parse %s: %w", s.cfg.ProcStat, err)
	}
	m.CPUCount = cpus
	m.CPUUsedPct = s.cpuPct(busy, total)

	info, err := os.ReadFile(s.cfg.MemInfo)
	if err != nil {
		return Metrics{}, fmt.Errorf("read memory stats: %w", err)
	}
	if m.MemTotal, m.MemUsed, err = parseMemInfo(info); err != nil {
		return Metrics{}, fmt.Errorf("parse %s: %w", s.cfg.MemInfo, err)
	}

	var fs unix.Statfs_t
	if err := unix.Statfs(s.cfg.DiskPath, &fs); err != nil {
		return Metrics{}, fmt.Errorf("statfs %s: %w", s.cfg.DiskPath, err)
	}
	bsize := uint64(fs.Bsize)
	m.DiskTotal = fs.Blocks * bsize
	m.DiskUsed = (fs.Blocks - fs.Bfree) * bsize
	return m, nil
}

// cpuPct records this sample's counters and returns the busy share since
// the previous one, rounded to two decimals.
func (s *Sampler) cpuPct(busy, total uint64) float64 {
	s.mu.Lock()
	dBusy, dTotal := busy-s.prevBusy, total-s.prevTotal
	if busy < s.prevBusy || total < s.prevTotal {
		// Counters went backwards (a restored snapshot of another boot):
		// fall back to the average since boot.
		dBusy, dTotal = busy, total
	}
	s.prevBusy, s.prevTotal = busy, total
	s.mu.Unlock()

	if dTotal == 0 {
		// Two samples within one clock tick: nothing measurable happened.
		return 0
	}
	pct := float64(dBusy) / float64(dTotal) * 100
	return math.Round(min(pct, 100)*100) / 100
}

// parseStat returns the aggregate busy and total jiffies from the "cpu"
// line of /proc/stat and the number of per-CPU lines.
func parseStat(b []byte) (busy, total uint64, cpus int, err error) {
	found := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			cpus++
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is already counted in user and nice, so it is left out.
		if len(fields) < 5 {
			return 0, 0, 0, fmt.Errorf("short cpu line %q", sc.Text())
		}
		var v [8]uint64
		for i := 0; i < len(v) && i+1 < len(fields); i++ {
			if v[i], err = strconv.ParseUint(fields[i+1], 10, 64); err != nil {
				return 0, 0, 0, fmt.Errorf("cpu field %d: %w", i+1, err)
			}
		}
		for _, x := range v {
			total += x
		}
		idle := v[3] + v[4] // idle + iowait
		busy = total - idle
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, 0, 0, err
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("no aggregate cpu line")
	}
	if cpus == 0 {
		return 0, 0, 0, fmt.Errorf("no per-cpu lines")
	}
	return busy, total, cpus, nil
}

// parseMemInfo returns MemTotal and MemTotal-MemAvailable in bytes.
func parseMemInfo(b []byte) (total, used uint64, err error) {
	var haveTotal, haveAvail bool
	var avail uint64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, 0, fmt.Errorf("empty %s", key)
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", key, err)
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		if key == "MemTotal" {
			total, haveTotal = n, true
		} else {
			avail, haveAvail = n, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail {
		return 0, 0, fmt.Errorf("missing MemTotal or MemAvailable")
	}
	if avail > total {
		avail = total
	}
	return total, total - avail, nil
}
