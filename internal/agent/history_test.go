//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/clocktest"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestMetricsRing: the ring keeps the newest samples up to its size, in
// the order taken, and filters by an inclusive range with 0 as unbounded.
func TestMetricsRing(t *testing.T) {
	var r metricsRing
	if got := r.between(0, 0); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := int64(1); i <= 7; i++ {
		r.add(MetricsSample{UnixMs: i * 1000, MemUsed: i}, 5)
	}
	times := func(ss []MetricsSample) []int64 {
		var out []int64
		for _, s := range ss {
			out = append(out, s.UnixMs/1000)
		}
		return out
	}
	check := func(name string, got []MetricsSample, want ...int64) {
		t.Helper()
		g := times(got)
		if len(g) != len(want) {
			t.Fatalf("%s: samples at %v s, want %v", name, g, want)
		}
		for i := range g {
			if g[i] != want[i] {
				t.Fatalf("%s: samples at %v s, want %v", name, g, want)
			}
		}
	}
	// 7 added to a ring of 5: the 2 oldest are gone, the rest oldest first.
	check("all", r.between(0, 0), 3, 4, 5, 6, 7)
	check("from 5 s", r.between(5000, 0), 5, 6, 7)
	check("to 4 s", r.between(0, 4000), 3, 4)
	check("4-6 s inclusive", r.between(4000, 6000), 4, 5, 6)
	check("between samples", r.between(4500, 4600))
	check("before all", r.between(0, 2000))
	if cap(r.buf) != 5 {
		t.Fatalf("ring grew to %d, want its size 5", cap(r.buf))
	}
	// A returned slice is a copy: adding does not change it.
	got := r.between(0, 0)
	r.add(MetricsSample{UnixMs: 8000}, 5)
	check("copy", got, 3, 4, 5, 6, 7)
	check("after wrap", r.between(0, 0), 4, 5, 6, 7, 8)
	// Size 0 (sampling off) keeps nothing.
	var off metricsRing
	off.add(MetricsSample{UnixMs: 1}, 0)
	if len(off.between(0, 0)) != 0 {
		t.Fatal("a ring of size 0 kept a sample")
	}
}

func TestHistoryLen(t *testing.T) {
	for _, tt := range []struct {
		interval, keep time.Duration
		want           int
	}{
		{0, time.Hour, 0},
		{5 * time.Second, 0, 720},
		{5 * time.Second, time.Hour, 720},
		{7 * time.Second, time.Minute, 9},
		{time.Minute, time.Second, 1},
		{time.Second, 48 * time.Hour, MaxMetricsSamples},
	} {
		m := &Manager{cfg: Config{MetricsInterval: tt.interval, MetricsHistory: tt.keep}}
		if got := m.historyLen(); got != tt.want {
			t.Errorf("interval %v, history %v: %d samples, want %d", tt.interval, tt.keep, got, tt.want)
		}
	}
}

// fakeGuest is an envd answering GET /metrics; block makes it never answer.
type fakeGuest struct {
	calls atomic.Int32
	cpus  int
	block bool
}

func (g *fakeGuest) start(t *testing.T) *envdclient.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := g.calls.Add(1)
		if g.block {
			<-r.Context().Done()
			return
		}
		_ = json.NewEncoder(w).Encode(envdclient.Metrics{CPUCount: g.cpus, CPUUsedPct: float64(n), MemTotal: 512 << 20,
			MemUsed: int64(n) << 20, DiskTotal: 2 << 30, DiskUsed: 1 << 30})
	}))
	t.Cleanup(srv.Close)
	return envdclient.New(srv.URL, envdclient.WithHTTP1())
}

// TestSampler drives the sampler with a fake clock: running sandboxes are
// sampled each round and stamped with the clock, the ring keeps the newest,
// a paused sandbox is not asked but keeps its history, a busy one and one
// whose guest does not answer are skipped without holding the round up,
// sampling does not count as use, and a destroyed sandbox's history goes.
func TestSampler(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := clocktest.New(start)
	m := &Manager{
		cfg: Config{Clock: clock, MetricsInterval: 5 * time.Second, MetricsHistory: 20 * time.Second},
		log: slog.New(slog.DiscardHandler), sandboxes: map[string]*sandbox{}, sampleWait: 100 * time.Millisecond,
	}
	guests := map[string]*fakeGuest{"run": {cpus: 2}, "nocpus": {}, "paused": {cpus: 1}, "busy": {cpus: 1}, "hung": {cpus: 1, block: true}}
	for id, g := range guests {
		st := state.Running
		if id == "paused" {
			st = state.Paused
		}
		sb := &sandbox{rec: &record{ID: id, State: st, VCPUs: 3}, envd: g.start(t)}
		sb.touch(start)
		m.sandboxes[id] = sb
	}
	m.sandboxes["paused"].history.add(MetricsSample{UnixMs: start.Add(-time.Minute).UnixMilli(), CPUUsedPct: 42}, m.historyLen())
	busy := m.sandboxes["busy"]
	busy.mu.Lock()

	ctx := context.Background()
	for range 6 {
		clock.Advance(5 * time.Second)
		began := time.Now()
		m.SampleMetrics(ctx)
		if d := time.Since(began); d > 2*time.Second {
			t.Fatalf("a round took %v: the hung guest held it up", d)
		}
	}
	busy.mu.Unlock()

	// 6 rounds at 5 s into a ring of 20 s / 5 s = 4: the last 4, oldest first.
	got, err := m.MetricsHistory("run", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("run: %d samples, want 4: %+v", len(got), got)
	}
	for i, s := range got {
		wantAt := start.Add(time.Duration(15+5*i) * time.Second).UnixMilli()
		if s.UnixMs != wantAt || s.CPUCount != 2 || s.CPUUsedPct != float64(3+i) || s.MemUsed != int64(3+i)<<20 ||
			s.MemTotal != 512<<20 || s.DiskUsed != 1<<30 || s.DiskTotal != 2<<30 {
			t.Fatalf("run sample %d = %+v, want taken at %d (round %d)", i, s, wantAt, 3+i)
		}
	}
	if n := guests["run"].calls.Load(); n != 6 {
		t.Fatalf("run's guest asked %d times in 6 rounds", n)
	}
	// Range: inclusive at both ends.
	ranged, _ := m.MetricsHistory("run", start.Add(20*time.Second), start.Add(25*time.Second))
	if len(ranged) != 2 || ranged[0].UnixMs != start.Add(20*time.Second).UnixMilli() {
		t.Fatalf("20-25 s: %+v", ranged)
	}
	// envd without a cpu count: the sandbox's vCPUs.
	if s, _ := m.MetricsHistory("nocpus", time.Time{}, time.Time{}); len(s) != 4 || s[0].CPUCount != 3 {
		t.Fatalf("nocpus: %+v", s)
	}
	// Paused: never asked, history kept.
	if n := guests["paused"].calls.Load(); n != 0 {
		t.Fatalf("paused sandbox's guest asked %d times", n)
	}
	if s, _ := m.MetricsHistory("paused", time.Time{}, time.Time{}); len(s) != 1 || s[0].CPUUsedPct != 42 {
		t.Fatalf("paused sandbox's history: %+v", s)
	}
	// Busy (lock held by an operation): skipped, not waited for.
	if n := guests["busy"].calls.Load(); n != 0 {
		t.Fatalf("busy sandbox's guest asked %d times", n)
	}
	// Hung guest: asked each round, no sample, never two at once.
	if s, _ := m.MetricsHistory("hung", time.Time{}, time.Time{}); len(s) != 0 {
		t.Fatalf("hung guest has samples: %+v", s)
	}
	if n := guests["hung"].calls.Load(); n != 6 {
		t.Fatalf("hung guest asked %d times in 6 rounds, want 6 (one per round)", n)
	}
	if m.sandboxes["hung"].sampling.Load() {
		t.Fatal("hung sandbox still marked as being sampled after the round")
	}
	// Sampling is not use.
	if got := m.sandboxes["run"].lastActiveAt(); !got.Equal(start) {
		t.Fatalf("sampling moved the idle timer to %v", got)
	}
	// Once busy is free it is sampled again.
	clock.Advance(5 * time.Second)
	m.SampleMetrics(ctx)
	if s, _ := m.MetricsHistory("busy", time.Time{}, time.Time{}); len(s) != 1 {
		t.Fatalf("busy sandbox after its operation: %+v", s)
	}

	// Destroyed: the history goes with the sandbox.
	m.forget("run")
	if _, err := m.MetricsHistory("run", time.Time{}, time.Time{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("history of a destroyed sandbox: %v, want NotFound", err)
	}

	// Off: no sampling at all.
	off := &Manager{cfg: Config{Clock: clock}, log: slog.New(slog.DiscardHandler), sandboxes: map[string]*sandbox{"x": m.sandboxes["nocpus"]}}
	before := guests["nocpus"].calls.Load()
	off.SampleMetrics(ctx)
	off.RunSampler(ctx) // returns at once when off
	if guests["nocpus"].calls.Load() != before {
		t.Fatal("sampling with interval 0 asked a guest")
	}
}
