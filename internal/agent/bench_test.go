//go:build linux

package agent_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
)

// BenchmarkCreate measures cold create (boot to envd ready and
// initialized) and destroy of a 512 MiB sandbox, one at a time, and the
// VMM's resident memory once the guest is idle.
//
//	go test -run '^$' -bench Create -benchtime 10x ./internal/agent/
func BenchmarkCreate(b *testing.B) {
	h := newHarness(b)
	ctx := context.Background()
	m := h.agent(ctx)
	var creates, destroys []time.Duration
	var rss []int64
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 512})
		if err != nil {
			b.Fatal(err)
		}
		creates = append(creates, time.Since(start))
		b.StopTimer()
		// Idle RSS: let the guest settle after boot, then read the VMM's.
		time.Sleep(2 * time.Second)
		if kb, err := vmRSSKiB(info.PID); err == nil {
			rss = append(rss, kb)
		}
		b.StartTimer()
		start = time.Now()
		if err := m.Destroy(ctx, info.ID); err != nil {
			b.Fatal(err)
		}
		destroys = append(destroys, time.Since(start))
	}
	b.StopTimer()
	report(b, "create", creates)
	report(b, "destroy", destroys)
	if len(rss) > 0 {
		slices.Sort(rss)
		b.ReportMetric(float64(rss[len(rss)/2])/1024, "MiB-vmm-rss-idle-p50")
	}
}

func report(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	b.ReportMetric(float64(p(0.5).Milliseconds()), "ms-"+name+"-p50")
	b.ReportMetric(float64(p(0.95).Milliseconds()), "ms-"+name+"-p95")
	b.Logf("%s: n=%d p50=%v p95=%v all=%v", name, len(d), p(0.5), p(0.95), d)
}

func vmRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
