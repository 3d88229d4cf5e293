package hostinfo

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/agent/state"
)

// listTimeout bounds one scrape's wait for the sandbox list.
const listTimeout = 5 * time.Second

// SandboxCollector exports wrenn_agent_sandboxes{state}: the sandboxes on
// this host by lifecycle state, counted at scrape time so the figure can
// never drift from the manager's own.
type SandboxCollector struct {
	sandboxes Sandboxes
	desc      *prometheus.Desc
}

// NewSandboxCollector returns a collector over the manager's sandboxes.
func NewSandboxCollector(s Sandboxes) *SandboxCollector {
	return &SandboxCollector{
		sandboxes: s,
		desc: prometheus.NewDesc("wrenn_agent_sandboxes",
			"Sandboxes on this host by lifecycle state.", []string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *SandboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. A failed listing is reported to
// the scraper as an error rather than as zero sandboxes.
func (c *SandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	infos, err := c.sandboxes.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	counts := make(map[state.State]int, len(state.All))
	for _, in := range infos {
		counts[in.State]++
	}
	for _, s := range state.All {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
