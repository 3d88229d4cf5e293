package agent

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
)

// Metrics history (E2B's GET /sandboxes/{id}/metrics?start=&end=): the agent
// samples every running sandbox's guest every Config.MetricsInterval into a
// bounded ring per sandbox. The history lives in the agent's memory only: it
// does not survive an agent restart (a restarted agent starts every ring
// empty), and it goes with its sandbox when the sandbox is destroyed. A
// paused or hibernated sandbox gets no samples but keeps its history.

// Defaults of the sampler.
const (
	// DefaultMetricsInterval is how often running sandboxes are sampled.
	DefaultMetricsInterval = 5 * time.Second
	// DefaultMetricsHistory is how far back a sandbox's history reaches.
	DefaultMetricsHistory = time.Hour
	// MaxMetricsSamples bounds one sandbox's ring whatever the settings:
	// 17280 samples of 56 bytes are 945 KiB (a day at 5 s). The default
	// (1 h at 5 s) is 720 samples, 39 KiB per sandbox that has run for an
	// hour; a ring is allocated at its sandbox's first sample.
	MaxMetricsSamples = 17280
	// sampleTimeout bounds one sandbox's sample: a guest that does not
	// answer in time (busy, or slow under TCG) is skipped this round.
	sampleTimeout = 2 * time.Second
	// sampleParallelism bounds how many guests are asked at once.
	sampleParallelism = 4
)

// MetricsSample is one sample of a sandbox's guest, as envd's /metrics
// reports it, stamped with the agent's clock (the guest's may lag after a
// pause). Kept compact (56 bytes) since a ring holds hundreds.
type MetricsSample struct {
	UnixMs     int64
	CPUCount   int32
	CPUUsedPct float64
	MemUsed    int64
	MemTotal   int64
	DiskUsed   int64
	DiskTotal  int64
}

// metricsRing is a sandbox's bounded history, oldest overwritten first. Its
// own lock (not the sandbox's) guards it, so that reading the history never
// waits behind a long operation on the sandbox. The zero value is empty.
type metricsRing struct {
	mu   sync.Mutex
	buf  []MetricsSample
	next int // where the next sample goes once buf is full
}

// add appends s, dropping the oldest sample once size are held. size is
// fixed per manager; a ring is allocated to it at its first sample.
func (r *metricsRing) add(s MetricsSample, size int) {
	if size <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		r.buf = make([]MetricsSample, 0, size)
	}
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, s)
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
}

// between returns the samples taken from fromMs to toMs inclusive (0:
// unbounded on that side), oldest first.
func (r *metricsRing) between(fromMs, toMs int64) []MetricsSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []MetricsSample{}
	n := len(r.buf)
	for i := range n {
		// Before the ring wraps next is 0 and buf is in order; after, the
		// oldest sample is at next.
		s := r.buf[(r.next+i)%n]
		if (fromMs != 0 && s.UnixMs < fromMs) || (toMs != 0 && s.UnixMs > toMs) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// historyLen is how many samples a sandbox's ring keeps; 0 when sampling
// is off.
func (m *Manager) historyLen() int {
	iv, keep := m.cfg.MetricsInterval, m.cfg.MetricsHistory
	if iv <= 0 {
		return 0
	}
	if keep <= 0 {
		keep = DefaultMetricsHistory
	}
	n := int((keep + iv - 1) / iv)
	return min(max(n, 1), MaxMetricsSamples)
}

// MetricsHistory returns a sandbox's samples taken between from and to
// inclusive (a zero time: unbounded on that side), oldest first. It never
// waits for the sandbox's lock.
func (m *Manager) MetricsHistory(id string, from, to time.Time) ([]MetricsSample, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	var fromMs, toMs int64
	if !from.IsZero() {
		fromMs = from.UnixMilli()
	}
	if !to.IsZero() {
		toMs = to.UnixMilli()
	}
	return sb.history.between(fromMs, toMs), nil
}

// SampleMetrics takes one sample of every running sandbox and returns once
// each has answered or been given up on (sampleTimeout). It is what
// RunSampler calls every interval; tests call it directly with a fake
// clock. A sandbox busy with an operation (its lock held: a pause, fork or
// boot) or still being sampled by an earlier call is skipped, as is one
// whose guest does not answer in time. Sampling does not count as use of a
// sandbox (it does not reset the idle timer).
func (m *Manager) SampleMetrics(ctx context.Context) {
	size := m.historyLen()
	if size == 0 {
		return
	}
	type target struct {
		sb    *sandbox
		envd  *envdclient.Client
		vcpus int
	}
	m.mu.Lock()
	all := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		all = append(all, sb)
	}
	m.mu.Unlock()
	var targets []target
	for _, sb := range all {
		if !sb.mu.TryLock() {
			continue
		}
		if sb.rec.State == state.Running && sb.envd != nil && sb.sampling.CompareAndSwap(false, true) {
			targets = append(targets, target{sb: sb, envd: sb.envd, vcpus: sb.rec.VCPUs})
		}
		sb.mu.Unlock()
	}
	var g errgroup.Group
	g.SetLimit(sampleParallelism)
	for _, t := range targets {
		g.Go(func() error {
			defer t.sb.sampling.Store(false)
			at := m.cfg.Clock.Now()
			sctx, cancel := context.WithTimeout(ctx, m.sampleTimeout())
			defer cancel()
			// Without the sandbox's lock: a pause that lands meanwhile only
			// makes this call time out, and a sample of a sandbox destroyed
			// meanwhile goes with it.
			gm, err := t.envd.Metrics(sctx)
			if err != nil {
				m.log.Debug("metrics sample skipped", "sandbox_id", t.sb.rec.ID, "err", err)
				return nil
			}
			cpus := int32(gm.CPUCount)
			if cpus <= 0 {
				cpus = int32(t.vcpus)
			}
			t.sb.history.add(MetricsSample{
				UnixMs: at.UnixMilli(), CPUCount: cpus, CPUUsedPct: gm.CPUUsedPct,
				MemUsed: gm.MemUsed, MemTotal: gm.MemTotal, DiskUsed: gm.DiskUsed, DiskTotal: gm.DiskTotal,
			}, size)
			return nil
		})
	}
	_ = g.Wait()
}

func (m *Manager) sampleTimeout() time.Duration {
	if m.sampleWait > 0 {
		return m.sampleWait
	}
	return sampleTimeout
}

// RunSampler calls SampleMetrics every Config.MetricsInterval until ctx
// ends; it returns at once when sampling is off (interval 0). Rounds never
// overlap: a round that outlasts the interval delays the next.
func (m *Manager) RunSampler(ctx context.Context) {
	if m.historyLen() == 0 {
		return
	}
	t := time.NewTicker(m.cfg.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.SampleMetrics(ctx)
		}
	}
}
