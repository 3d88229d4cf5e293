package soak

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wrenn/wrenn/internal/leakcheck"
)

// Report is what a soak run found. It is written as JSON (Config.Report)
// and summarised in markdown (Markdown).
type Report struct {
	Command  string    `json:"command"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration string    `json:"duration"` // the ops phase asked for
	Elapsed  string    `json:"elapsed"`  // the whole run, stack start to leak check
	Workers  int       `json:"workers"`
	Seed     uint64    `json:"seed"`
	// HibernateMode says what the hibernate step did: "hibernate" (POST
	// /v1/sandboxes/{id}/hibernate) or "cold-pause" (pause with
	// keep_memory=false, the API having no hibernate; the cold-pause step
	// does that too in either case).
	HibernateMode string  `json:"hibernate_mode"`
	Machine       Machine `json:"machine"`
	// Ops are the API calls made, by kind.
	Ops map[string]OpStats `json:"ops"`
	// Lives counts sandboxes created by the workers (forks not included)
	// and how their lives ended.
	Lives map[string]int `json:"lives"`
	// Skipped counts steps not run and why (a fork when all VM slots were
	// taken).
	Skipped map[string]int `json:"skipped,omitempty"`
	// Unexpected lists every error that a correct system would not give.
	Unexpected []Failure `json:"unexpected"`
	// Agreement compares the control plane's sandboxes with the agent's,
	// once with the workers' last sandboxes alive and once after
	// destroying everything.
	Agreement []Agreement `json:"agreement"`
	// Resources is everything of the agent's leakcheck found at the end;
	// Leaks those that are leaks (not templates, not the live agent's own).
	Resources []leakcheck.Resource `json:"resources"`
	Leaks     []leakcheck.Resource `json:"leaks"`
	// LeakCheckError is set when the leak check could not look everywhere.
	LeakCheckError string `json:"leak_check_error,omitempty"`
	// StackError is set when the stack failed or a daemon restarted.
	StackError string `json:"stack_error,omitempty"`
}

// Machine is the box the soak ran on.
type Machine struct {
	CPUs int `json:"cpus"`
	// Load1 are /proc/loadavg's 1-minute averages sampled every 30 s.
	LoadStart string    `json:"load_start,omitempty"`
	LoadEnd   string    `json:"load_end,omitempty"`
	Load1     []float64 `json:"load1,omitempty"`
	Accel     string    `json:"accel,omitempty"`
}

// OpStats are one kind of call's figures.
type OpStats struct {
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P95ms  float64 `json:"p95_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// Failure is one unexpected error with what was known around it.
type Failure struct {
	Time      time.Time `json:"time"`
	Worker    int       `json:"worker"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Step      string    `json:"step"` // the life step (exec, pause, ...)
	Op        string    `json:"op"`   // the call or check that failed
	Error     string    `json:"error"`
	// State is the sandbox's state per the API just after the failure.
	State string `json:"state,omitempty"`
	// Console is the tail of the guest's console, when the API gave it.
	Console string `json:"console,omitempty"`
	// Logs are the last lines of the stack's control plane and agent logs
	// that name the sandbox.
	Logs []string `json:"logs,omitempty"`
}

// Agreement is one comparison of the two sides.
type Agreement struct {
	When string `json:"when"`
	OK   bool   `json:"ok"`
	// ControlPlane and Agent map sandbox id to state (the agent's mapped
	// to the control plane's words); AgentMetrics is the agent's own
	// wrenn_agent_sandboxes gauge by state.
	ControlPlane map[string]string `json:"control_plane"`
	Agent        map[string]string `json:"agent"`
	AgentMetrics map[string]int    `json:"agent_metrics"`
	Differences  []string          `json:"differences,omitempty"`
	Waited       string            `json:"waited"`
}

// recorder collects a run's figures from every worker.
type recorder struct {
	mu         sync.Mutex
	durs       map[string][]time.Duration
	errs       map[string]int
	lives      map[string]int
	skipped    map[string]int
	unexpected []Failure
}

func newRecorder() *recorder {
	return &recorder{durs: map[string][]time.Duration{}, errs: map[string]int{}, lives: map[string]int{}, skipped: map[string]int{}}
}

// op records one call of kind that took d; err counts it as failed (the
// caller reports the failure itself through fail).
func (r *recorder) op(kind string, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.durs[kind] = append(r.durs[kind], d)
	if err != nil {
		r.errs[kind]++
	}
}

func (r *recorder) fail(f Failure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unexpected = append(r.unexpected, f)
}

func (r *recorder) life(end string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lives[end]++
}

func (r *recorder) skip(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped[why]++
}

// fill copies the figures into rep.
func (r *recorder) fill(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Ops = map[string]OpStats{}
	for k, ds := range r.durs {
		rep.Ops[k] = Stats(ds, r.errs[k])
	}
	rep.Lives = maps.Clone(r.lives)
	rep.Skipped = maps.Clone(r.skipped)
	rep.Unexpected = slices.Clone(r.unexpected)
	if rep.Unexpected == nil {
		rep.Unexpected = []Failure{}
	}
}

// Stats summarises durations: count, failures, and the nearest-rank 50th
// and 95th percentiles and maximum in milliseconds.
func Stats(ds []time.Duration, errs int) OpStats {
	s := OpStats{Count: len(ds), Errors: errs}
	if len(ds) == 0 {
		return s
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }
	s.P50ms = ms(percentile(sorted, 50))
	s.P95ms = ms(percentile(sorted, 95))
	s.MaxMs = ms(sorted[len(sorted)-1])
	return s
}

// percentile is the nearest-rank p-th percentile of sorted (non-empty).
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := int(math.Ceil(float64(p) / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// OK reports whether the run passed: no unexpected error, both sides
// agreeing every time, no leak, a complete leak check, a stack that held.
func (rep *Report) OK() bool {
	if len(rep.Unexpected) > 0 || len(rep.Leaks) > 0 || rep.LeakCheckError != "" || rep.StackError != "" || len(rep.Agreement) == 0 {
		return false
	}
	for _, a := range rep.Agreement {
		if !a.OK {
			return false
		}
	}
	return true
}

// WriteJSON writes the report to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode soak report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write soak report: %w", err)
	}
	return nil
}

// Markdown summarises the report for a person (and docs/reliability.md).
func (rep *Report) Markdown() string {
	var b strings.Builder
	verdict := "PASS"
	if !rep.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "## Soak %s\n\n", verdict)
	fmt.Fprintf(&b, "- command: `%s`\n", rep.Command)
	fmt.Fprintf(&b, "- started %s, ops for %s, whole run %s\n", rep.Start.UTC().Format(time.RFC3339), rep.Duration, rep.Elapsed)
	fmt.Fprintf(&b, "- workers %d, seed %d, hibernate step: %s\n", rep.Workers, rep.Seed, rep.HibernateMode)
	fmt.Fprintf(&b, "- machine: %d CPUs", rep.Machine.CPUs)
	if rep.Machine.Accel != "" {
		fmt.Fprintf(&b, ", accelerator %s", rep.Machine.Accel)
	}
	fmt.Fprintf(&b, "; load average at start %s, at end %s", rep.Machine.LoadStart, rep.Machine.LoadEnd)
	if n := len(rep.Machine.Load1); n > 0 {
		lo, hi, sum := rep.Machine.Load1[0], rep.Machine.Load1[0], 0.0
		for _, l := range rep.Machine.Load1 {
			lo, hi, sum = min(lo, l), max(hi, l), sum+l
		}
		fmt.Fprintf(&b, "; 1-min load over the run min %.2f mean %.2f max %.2f (%d samples)", lo, sum/float64(n), hi, n)
	}
	b.WriteString("\n")
	lives := 0
	for _, n := range rep.Lives {
		lives += n
	}
	fmt.Fprintf(&b, "- sandboxes created by workers: %d (ended by: %s)\n", lives, formatCounts(rep.Lives))
	if len(rep.Skipped) > 0 {
		fmt.Fprintf(&b, "- skipped: %s\n", formatCounts(rep.Skipped))
	}
	b.WriteString("\n| op | count | errors | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n")
	total := 0
	for _, k := range slices.Sorted(maps.Keys(rep.Ops)) {
		s := rep.Ops[k]
		total += s.Count
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.0f | %.0f |\n", k, s.Count, s.Errors, s.P50ms, s.P95ms, s.MaxMs)
	}
	fmt.Fprintf(&b, "| **all** | %d | | | | |\n", total)

	fmt.Fprintf(&b, "\n**Unexpected errors: %d**\n", len(rep.Unexpected))
	for i, f := range rep.Unexpected {
		fmt.Fprintf(&b, "\n%d. %s worker %d sandbox %s, step %s, %s: %s", i+1, f.Time.UTC().Format("15:04:05"), f.Worker, f.SandboxID, f.Step, f.Op, f.Error)
		if f.State != "" {
			fmt.Fprintf(&b, " (state then: %s)", f.State)
		}
		b.WriteString("\n")
		if len(f.Logs) > 0 {
			fmt.Fprintf(&b, "   <details><summary>log lines naming the sandbox</summary>\n\n```\n%s\n```\n   </details>\n", strings.Join(f.Logs, "\n"))
		}
		if f.Console != "" {
			fmt.Fprintf(&b, "   <details><summary>console tail</summary>\n\n```\n%s\n```\n   </details>\n", strings.TrimSpace(f.Console))
		}
	}

	b.WriteString("\n**Control plane vs agent**\n\n")
	for _, a := range rep.Agreement {
		res := "agree"
		if !a.OK {
			res = "DISAGREE: " + strings.Join(a.Differences, "; ")
		}
		fmt.Fprintf(&b, "- %s: %d sandboxes in the control plane, %d on the agent (gauge %s): %s (after %s)\n",
			a.When, len(a.ControlPlane), len(a.Agent), formatCounts(a.AgentMetrics), res, a.Waited)
	}

	fmt.Fprintf(&b, "\n**Leak check** (internal/leakcheck, agent still running): %d leaks", len(rep.Leaks))
	if rep.LeakCheckError != "" {
		fmt.Fprintf(&b, "; INCOMPLETE: %s", rep.LeakCheckError)
	}
	b.WriteString("\n\n```\n")
	b.WriteString(leakcheck.Format(rep.Resources))
	b.WriteString("```\n")
	if len(rep.Leaks) > 0 {
		b.WriteString("\nLeaks:\n\n```\n" + leakcheck.Format(rep.Leaks) + "```\n")
	}
	if rep.StackError != "" {
		fmt.Fprintf(&b, "\n**Stack:** %s\n", rep.StackError)
	}
	return b.String()
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
