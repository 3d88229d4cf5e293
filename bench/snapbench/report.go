package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Result of a figure against its goal. A miss is a measurement, not a
// failure of the command.
const (
	Pass   = "PASS"
	Miss   = "MISS"
	NoGoal = "-"
	Failed = "ERROR"
)

// Figure is one measured quantity: its sample, its goal and how it
// compares with the bare-QEMU baseline. Durations are in milliseconds.
type Figure struct {
	Key     string    `json:"key"`
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	N       int       `json:"n"`
	P50     float64   `json:"p50"`
	P95     float64   `json:"p95"`
	Samples []float64 `json:"samples"`

	// Goal is the goal as written ("≤ 20 ms", "≤ 1.2× baseline"); the
	// result compares P50 with GoalMax.
	Goal    string  `json:"goal,omitempty"`
	GoalMax float64 `json:"goal_max,omitempty"`
	// goalFactor, when set, makes GoalMax that multiple of the baseline.
	goalFactor float64

	Baseline    string  `json:"baseline,omitempty"`
	BaselineP50 float64 `json:"baseline_p50,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"`
	baseline    *Figure
	// also is a second figure worth comparing with (no goal attached).
	also *Figure

	Result string   `json:"result"`
	Error  string   `json:"error,omitempty"`
	Notes  []string `json:"notes,omitempty"`
	// Breakdown is where the time went: plan steps and VMM phases logged
	// while the figure was measured.
	Breakdown []StepStat `json:"breakdown,omitempty"`
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

func (f *Figure) summarize() {
	f.N = len(f.Samples)
	if f.N == 0 {
		f.P50, f.P95 = 0, 0
		return
	}
	s := append([]float64(nil), f.Samples...)
	sortFloats(s)
	f.P50, f.P95 = rank(s, 0.50), rank(s, 0.95)
}

// atMost sets an absolute goal: P50 ≤ max.
func (f *Figure) atMost(max float64) *Figure {
	f.GoalMax, f.Goal = max, fmt.Sprintf("≤ %s %s", num(max), f.Unit)
	return f
}

// against names the baseline the figure is compared with; with factor > 0
// the goal is P50 ≤ factor × the baseline's P50.
func (f *Figure) against(b *Figure, factor float64) *Figure {
	f.baseline = b
	if factor > 0 {
		f.goalFactor = factor
		f.Goal = fmt.Sprintf("≤ %s× %s", num(factor), b.Key)
	}
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

// judge works out the ratio to the baseline and the result.
func (f *Figure) judge() {
	if b := f.baseline; b != nil && b.N > 0 && b.Error == "" {
		f.Baseline, f.BaselineP50 = b.Key, b.P50
		if b.P50 > 0 {
			f.Ratio = f.P50 / b.P50
		}
		if f.goalFactor > 0 {
			f.GoalMax = f.goalFactor * b.P50
		}
	}
	if a := f.also; a != nil && a.N > 0 && a.P50 > 0 && f.N > 0 {
		f.note("against %s (p50 %s %s): %.2f×", a.Key, num(a.P50), a.Unit, f.P50/a.P50)
	}
	switch {
	case f.Error != "" || (f.N == 0 && f.Goal != ""):
		f.Result = Failed
	case f.Goal == "":
		f.Result = NoGoal
	case f.GoalMax == 0:
		// A relative goal whose baseline could not be measured.
		f.Result = Failed
		if f.Error == "" {
			f.Error = "baseline " + f.baseline.Key + " not measured"
		}
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
}

func (r *Report) add(f ...*Figure) { r.Figures = append(r.Figures, f...) }

func (r *Report) judge() {
	for _, f := range r.Figures {
		f.judge()
	}
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteText prints the machine facts, the table of figures, and then the
// breakdown and notes of each figure that has them.
func (r *Report) WriteText(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "snapbench %s mode, %s, %.0f s\n", r.Mode, r.Started.UTC().Format(time.RFC3339), r.Seconds)
	fmt.Fprintf(w, "host:  %s, %d cores, %s RAM, kernel %s, load average at start %s\n", m.CPU, m.Cores, gib(m.MemoryBytes), m.HostKernel, m.LoadAvg)
	fmt.Fprintf(w, "vmm:   %s, accelerator %s (%s)\n", m.QEMU, m.Accel, m.AccelReason)
	fmt.Fprintf(w, "guest: kernel %s, image %s, %d MiB, %d vCPU\n", m.GuestKernel, m.Image, m.GuestMemoryMB, m.GuestVCPUs)
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tN\tp50\tp95\tgoal\tbaseline p50\tratio\tresult")
	for _, f := range r.Figures {
		base, ratio := "-", "-"
		if f.Baseline != "" {
			base = fmt.Sprintf("%s %s (%s)", num(f.BaselineP50), f.Unit, f.Baseline)
		}
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", f.Ratio)
		}
		goal := f.Goal
		if goal == "" {
			goal = "-"
		} else if f.goalFactor > 0 && f.GoalMax > 0 {
			goal += fmt.Sprintf(" = %s %s", num(f.GoalMax), f.Unit)
		}
		p50, p95 := num(f.P50)+" "+f.Unit, num(f.P95)+" "+f.Unit
		if f.N == 0 {
			p50, p95 = "-", "-"
		}
		fmt.Fprintf(tw, "%s [%s]\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, f.Key, f.N, p50, p95, goal, base, ratio, f.Result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range r.Figures {
		if f.Error == "" && len(f.Notes) == 0 && len(f.Breakdown) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s [%s]\n", f.Name, f.Key)
		if f.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", f.Error)
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
	case v < 10:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func gib(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
