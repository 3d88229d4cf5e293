package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Result of a figure against its goal. A miss is a measurement, not a
// failure of the command; a skip says why the figure could not be taken
// on this machine (a missing tool, a component not built yet).
const (
	Pass   = "PASS"
	Miss   = "MISS"
	NoGoal = "-"
	Failed = "ERROR"
	Skip   = "SKIP"
)

// Groups order the report's tables.
const (
	GroupBaseline = "baseline"
	GroupWrenn    = "wrenn"
	GroupCP       = "control plane"
)

// Figure is one measured quantity: its sample, its goal and how it
// compares with its baseline. Durations are in milliseconds.
type Figure struct {
	Key     string    `json:"key"`
	Name    string    `json:"name"`
	Group   string    `json:"group"`
	Unit    string    `json:"unit"`
	N       int       `json:"n"`
	P50     float64   `json:"p50"`
	P95     float64   `json:"p95"`
	P99     float64   `json:"p99"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
	// Bytes, for a transfer figure in ms, is what one sample moved: the
	// report prints the throughput at p50 from it.
	Bytes int64 `json:"bytes,omitempty"`

	// Goal is the goal as written ("≤ 20 ms", "≤ 1.2× bare-restore"); the
	// result compares P50 with GoalMax. GoalFactor, when set, makes
	// GoalMax that multiple of the baseline's p50.
	Goal       string  `json:"goal,omitempty"`
	GoalMax    float64 `json:"goal_max,omitempty"`
	GoalFactor float64 `json:"goal_factor,omitempty"`

	// Baseline is the key of the figure this one is compared with (the
	// ratio column); Compare names more figures worth a ratio, with no
	// goal attached.
	Baseline    string       `json:"baseline,omitempty"`
	BaselineP50 float64      `json:"baseline_p50,omitempty"`
	Ratio       float64      `json:"ratio,omitempty"`
	Compare     []string     `json:"compare,omitempty"`
	Comparisons []Comparison `json:"comparisons,omitempty"`

	Result string   `json:"result"`
	Error  string   `json:"error,omitempty"`
	Notes  []string `json:"notes,omitempty"`
	// Breakdown is where the time went: plan steps and VMM phases logged
	// while the figure was measured.
	Breakdown []StepStat `json:"breakdown,omitempty"`
}

// Comparison is a figure's ratio to another figure, without a goal.
type Comparison struct {
	Key   string  `json:"key"`
	P50   float64 `json:"p50"`
	Ratio float64 `json:"ratio"`
}

// ms converts a duration to the report's unit.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// durations makes a figure from a sample of durations.
func durations(key, name string, d []time.Duration) *Figure {
	f := &Figure{Key: key, Name: name, Unit: "ms"}
	for _, x := range d {
		f.Samples = append(f.Samples, ms(x))
	}
	f.summarize()
	return f
}

// values makes a figure from a sample of plain numbers in unit.
func values(key, name, unit string, v []float64) *Figure {
	f := &Figure{Key: key, Name: name, Unit: unit, Samples: v}
	f.summarize()
	return f
}

// skipped is a figure that could not be taken here, and why.
func skipped(key, name, why string) *Figure {
	return &Figure{Key: key, Name: name, Unit: "ms", Result: Skip, Error: why}
}

func (f *Figure) summarize() {
	f.N = len(f.Samples)
	if f.N == 0 {
		f.P50, f.P95, f.P99, f.Min, f.Max = 0, 0, 0, 0, 0
		return
	}
	s := append([]float64(nil), f.Samples...)
	sortFloats(s)
	f.P50, f.P95, f.P99 = rank(s, 0.50), rank(s, 0.95), rank(s, 0.99)
	f.Min, f.Max = s[0], s[len(s)-1]
}

// in sets the figure's group.
func (f *Figure) in(group string) *Figure {
	f.Group = group
	return f
}

// atMost sets an absolute goal: P50 ≤ max.
func (f *Figure) atMost(max float64) *Figure {
	f.GoalMax, f.Goal = max, fmt.Sprintf("≤ %s %s", num(max), f.Unit)
	return f
}

// against names the baseline the figure is compared with; with factor > 0
// the goal is P50 ≤ factor × the baseline's P50.
func (f *Figure) against(key string, factor float64) *Figure {
	f.Baseline = key
	if factor > 0 {
		f.GoalFactor = factor
		f.Goal = fmt.Sprintf("≤ %s× %s", num(factor), key)
	}
	return f
}

// also asks for ratios to more figures.
func (f *Figure) also(keys ...string) *Figure {
	f.Compare = append(f.Compare, keys...)
	return f
}

// failed records why a figure could not be measured.
func (f *Figure) failed(err error) *Figure {
	f.Error = err.Error()
	return f
}

func (f *Figure) note(format string, args ...any) {
	f.Notes = append(f.Notes, fmt.Sprintf(format, args...))
}

// throughput is MiB/s at p50 for a transfer figure, 0 otherwise.
func (f *Figure) throughput() float64 {
	if f.Bytes == 0 || f.P50 <= 0 || f.Unit != "ms" {
		return 0
	}
	return float64(f.Bytes) / (1 << 20) / (f.P50 / 1000)
}

// judge works out the ratios and the result; by resolves keys.
func (f *Figure) judge(by map[string]*Figure) {
	if f.Result == Skip {
		return
	}
	if b, ok := by[f.Baseline]; ok && b.N > 0 && b.Error == "" {
		f.BaselineP50 = b.P50
		if b.P50 > 0 {
			f.Ratio = f.P50 / b.P50
		}
		if f.GoalFactor > 0 {
			f.GoalMax = f.GoalFactor * b.P50
		}
	}
	f.Comparisons = nil
	for _, k := range f.Compare {
		if a, ok := by[k]; ok && a.N > 0 && a.P50 > 0 && a.Error == "" && f.N > 0 {
			f.Comparisons = append(f.Comparisons, Comparison{Key: k, P50: a.P50, Ratio: f.P50 / a.P50})
		}
	}
	switch {
	case f.Error != "" || (f.N == 0 && f.Goal != ""):
		f.Result = Failed
	case f.Goal == "":
		f.Result = NoGoal
	case f.GoalMax == 0:
		// A relative goal whose baseline could not be measured.
		f.Result = Failed
		f.Error = "baseline " + f.Baseline + " not measured"
	case f.P50 <= f.GoalMax:
		f.Result = Pass
	default:
		f.Result = Miss
	}
}

// Report is everything one run measured.
type Report struct {
	Command  string    `json:"command"`
	Mode     string    `json:"mode"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Figures  []*Figure `json:"figures"`
	Warnings []string  `json:"warnings,omitempty"`
	// Profiles lists the profile and trace files the run wrote.
	Profiles []string `json:"profiles,omitempty"`
}

func (r *Report) add(f ...*Figure) { r.Figures = append(r.Figures, f...) }

// byKey indexes the figures.
func (r *Report) byKey() map[string]*Figure {
	by := make(map[string]*Figure, len(r.Figures))
	for _, f := range r.Figures {
		by[f.Key] = f
	}
	return by
}

func (r *Report) judge() {
	by := r.byKey()
	for _, f := range r.Figures {
		f.judge(by)
	}
}

// ReadJSON reads a report WriteJSON wrote.
func ReadJSON(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &r, nil
}

// WriteJSON writes the report to path, making its directory.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// goalText is the goal with its resolved limit.
func (f *Figure) goalText() string {
	switch {
	case f.Goal == "":
		return "-"
	case f.GoalFactor > 0 && f.GoalMax > 0:
		return fmt.Sprintf("%s = %s %s", f.Goal, num(f.GoalMax), f.Unit)
	default:
		return f.Goal
	}
}

// compareText is the other ratios, "3.10× runsc-true".
func (f *Figure) compareText() string {
	var parts []string
	for _, c := range f.Comparisons {
		parts = append(parts, fmt.Sprintf("%.2f× %s", c.Ratio, c.Key))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// stat prints one percentile with its unit, "-" without samples.
func (f *Figure) stat(v float64) string {
	if f.N == 0 {
		return "-"
	}
	return num(v) + " " + f.Unit
}

// WriteText prints the machine facts, the table of figures, and then the
// breakdown and notes of each figure that has them.
func (r *Report) WriteText(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "wrennbench %s mode, %s, %.0f s\n", r.Mode, r.Started.UTC().Format(time.RFC3339), r.Seconds)
	fmt.Fprintf(w, "host:  %s, %d cores, %s RAM, kernel %s, load average at start %s\n", m.CPU, m.Cores, gib(m.MemoryBytes), m.HostKernel, m.LoadAvg)
	fmt.Fprintf(w, "vmm:   %s, accelerator %s (%s)\n", m.QEMU, m.Accel, m.AccelReason)
	fmt.Fprintf(w, "guest: kernel %s, image %s, %d MiB, %d vCPU\n", m.GuestKernel, m.Image, m.GuestMemoryMB, m.GuestVCPUs)
	fmt.Fprintf(w, "build: %s, commit %s\n", m.GoVersion, m.GitCommit)
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tN\tp50\tp95\tp99\tgoal\tbaseline p50\tratio\tother\tresult")
	for _, f := range r.Figures {
		base, ratio := "-", "-"
		if f.BaselineP50 > 0 {
			base = fmt.Sprintf("%s %s (%s)", num(f.BaselineP50), f.Unit, f.Baseline)
		}
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", f.Ratio)
		}
		fmt.Fprintf(tw, "%s [%s]\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, f.Key, f.N, f.stat(f.P50), f.stat(f.P95), f.stat(f.P99),
			f.goalText(), base, ratio, f.compareText(), f.Result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range r.Figures {
		if f.Error == "" && len(f.Notes) == 0 && len(f.Breakdown) == 0 && f.throughput() == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s [%s]\n", f.Name, f.Key)
		if f.Error != "" {
			fmt.Fprintf(w, "  %s: %s\n", strings.ToLower(f.Result), f.Error)
		}
		if t := f.throughput(); t > 0 {
			fmt.Fprintf(w, "  - throughput at p50: %.1f MiB/s\n", t)
		}
		for _, n := range f.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
		if len(f.Breakdown) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  phase\tN\tp50\tp95\tmax")
			for _, s := range f.Breakdown {
				fmt.Fprintf(tw, "  %s\t%d\t%s ms\t%s ms\t%s ms\n", s.Name, s.N, num(s.P50), num(s.P95), num(s.Max))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "\nwarning: %s\n", warn)
	}
	return nil
}

// num prints a figure with the precision it deserves: sub-10 values with
// two decimals, the rest as integers.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10 && v > -10:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func gib(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
