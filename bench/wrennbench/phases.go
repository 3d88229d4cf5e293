package main

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// phase is one timed piece of work: a plan step ("step restore"), a VMM
// phase the driver logged ("vm restored.state_loaded"), or one the
// benchmark timed itself.
type phase struct {
	key string
	d   time.Duration
}

// StepStat is the distribution of one phase over a figure's samples, in
// milliseconds.
type StepStat struct {
	Name string  `json:"name"`
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	Max  float64 `json:"max"`
}

// phases collects phase timings from the agent's and driver's logs (plan
// logs one Debug line per step with its duration) and from the benchmark
// itself. It is safe for concurrent use.
type phases struct {
	mu  sync.Mutex
	all []phase
}

// add records a phase the benchmark timed itself.
func (p *phases) add(key string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = append(p.all, phase{key, d})
}

// mark is a position to collect phases from.
func (p *phases) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// since returns the phases recorded after mark.
func (p *phases) since(mark int) []phase {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.all[mark:])
}

// between returns the phases recorded from mark a up to mark b.
func (p *phases) between(a, b int) []phase {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.all[a:b])
}

// stepStats summarises phases by key, in order of first appearance.
func stepStats(ps []phase) []StepStat {
	var order []string
	by := map[string][]time.Duration{}
	for _, p := range ps {
		if _, ok := by[p.key]; !ok {
			order = append(order, p.key)
		}
		by[p.key] = append(by[p.key], p.d)
	}
	out := make([]StepStat, 0, len(order))
	for _, k := range order {
		s := summarize(by[k])
		out = append(out, StepStat{Name: k, N: s.N, P50: ms(s.P50), P95: ms(s.P95), Max: ms(s.Max)})
	}
	return out
}

// phaseHandler is a slog.Handler that records every duration attribute of
// every record (Debug included) as a phase, then passes the record on to
// next if next wants it.
type phaseHandler struct {
	next slog.Handler
	p    *phases
	// step is the "step" attribute added by With, if any.
	step string
}

func (h *phaseHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *phaseHandler) Handle(ctx context.Context, r slog.Record) error {
	step := h.step
	var ds []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case a.Key == "step" && a.Value.Kind() == slog.KindString:
			step = a.Value.String()
		case a.Value.Kind() == slog.KindDuration:
			ds = append(ds, a)
		}
		return true
	})
	for _, a := range ds {
		h.p.add(phaseKey(r.Message, step, a.Key), a.Value.Duration())
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

// phaseKey names a logged duration: plan steps by their step name, other
// records by message and attribute.
func phaseKey(msg, step, attr string) string {
	if msg == "step done" && attr == "duration" {
		return "step " + step
	}
	if attr == "duration" {
		return msg
	}
	return msg + "." + attr
}

func (h *phaseHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	for _, a := range as {
		if a.Key == "step" && a.Value.Kind() == slog.KindString {
			n.step = a.Value.String()
		}
	}
	n.next = h.next.WithAttrs(as)
	return &n
}

func (h *phaseHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.next = h.next.WithGroup(name)
	return &n
}
