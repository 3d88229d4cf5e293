// Package hostmon is the host monitor: it marks hosts that stopped
// heartbeating unreachable and their running sandboxes missing, and gives
// those up (stopped) when the host stays away for an hour. Hosts come
// back (and their sandboxes are reconciled) through their next heartbeat,
// in hostreg.
//
// Every control-plane replica runs a monitor; each pass is one SQL
// statement whose WHERE clause holds its precondition, so concurrent passes
// and heartbeats cannot undo each other.
package hostmon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/store"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Defaults: agents heartbeat every 30 s, so three missed heartbeats make a
// host unreachable.
const (
	DefaultTimeout  = 90 * time.Second
	DefaultInterval = 10 * time.Second
	// DefaultLostAfter is how long a host may stay unreachable before its
	// missing sandboxes are given up as stopped (DESIGN §6).
	DefaultLostAfter = time.Hour
)

// Options configure a Monitor; zero fields take defaults.
type Options struct {
	// Timeout is how long a host may stay silent (WRENN_HOST_TIMEOUT).
	Timeout time.Duration
	// Interval is how often Run looks.
	Interval time.Duration
	// LostAfter is how long after its last heartbeat a host's missing
	// sandboxes become stopped.
	LostAfter time.Duration
	Clock     Clock
	Logger    *slog.Logger
	// Metrics, if set, gets wrenn_hosts_unreachable_total and
	// wrenn_sandboxes_missing_total.
	Metrics prometheus.Registerer
}

// Monitor watches host heartbeats.
type Monitor struct {
	q         *store.Queries
	timeout   time.Duration
	interval  time.Duration
	lostAfter time.Duration
	clk       Clock
	log       *slog.Logger

	hostsLost     prometheus.Counter
	sandboxesLost prometheus.Counter
}

// New returns a monitor over the hosts in db.
func New(db *pgxpool.Pool, o Options) (*Monitor, error) {
	m := &Monitor{q: store.New(db), timeout: o.Timeout, interval: o.Interval, lostAfter: o.LostAfter, clk: o.Clock, log: o.Logger}
	if m.timeout <= 0 {
		m.timeout = DefaultTimeout
	}
	if m.interval <= 0 {
		m.interval = DefaultInterval
	}
	if m.lostAfter <= 0 {
		m.lostAfter = DefaultLostAfter
	}
	if m.clk == nil {
		m.clk = systemClock{}
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.hostsLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wrenn_hosts_unreachable_total", Help: "Hosts this replica marked unreachable for missed heartbeats.",
	})
	m.sandboxesLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wrenn_sandboxes_missing_total", Help: "Sandboxes this replica marked missing because their host became unreachable.",
	})
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{m.hostsLost, m.sandboxesLost} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("register host monitor metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Tick does one pass: online hosts whose last heartbeat is older than the
// timeout become unreachable, and their running and starting sandboxes
// missing (paused and hibernated ones live on the host's disk and stay as
// they are); missing sandboxes of hosts silent for LostAfter become
// stopped. It returns how many hosts it marked unreachable.
func (m *Monitor) Tick(ctx context.Context) (int, error) {
	now := m.clk.Now()
	rows, err := m.q.MarkHostsUnreachable(ctx, store.MarkHostsUnreachableParams{Cutoff: now.Add(-m.timeout), Now: now})
	if err != nil {
		return 0, fmt.Errorf("mark silent hosts unreachable: %w", err)
	}
	for _, r := range rows {
		m.hostsLost.Inc()
		m.sandboxesLost.Add(float64(r.SandboxesMissing))
		m.log.Warn("host unreachable: no heartbeat", "host_id", r.ID, "team_id", r.TeamID,
			"timeout", m.timeout, "sandboxes_missing", r.SandboxesMissing)
	}
	stopped, err := m.q.StopLostSandboxes(ctx, store.StopLostSandboxesParams{Cutoff: now.Add(-m.lostAfter), Now: now})
	if err != nil {
		return len(rows), fmt.Errorf("stop sandboxes of lost hosts: %w", err)
	}
	for _, sb := range stopped {
		m.log.Warn("sandbox given up: its host stayed unreachable", "sandbox_id", sb.ID, "host_id", sb.HostID, "after", m.lostAfter)
	}
	return len(rows), nil
}

// Run ticks every interval until ctx ends. A failed pass is logged and the
// next one tries again (the database may be briefly away).
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		if _, err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("host monitor pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
