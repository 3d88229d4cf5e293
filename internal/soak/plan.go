package soak

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Steps of a sandbox's life. A life is create, then a random sequence of
// middle steps, then one ending.
const (
	StepExec      = "exec"       // a command whose output is checked
	StepFile      = "file"       // write a file, read it back, compare
	StepPause     = "pause"      // pause and resume with memory: a file and the counter survive
	StepFork      = "fork"       // fork once: the fork sees the parent's file, then is killed
	StepHibernate = "hibernate"  // hibernate and resume: a file and the counter survive (a cold pause where the API has no hibernate)
	StepColdPause = "cold-pause" // pause without memory and resume: the file survives, the counter is gone

	EndKill       = "kill"        // destroy a running sandbox
	EndKillPaused = "kill-paused" // pause, then destroy the paused sandbox
	EndKillBusy   = "kill-busy"   // destroy while a command runs in it
)

// Weighted is one step and how often it is picked.
type Weighted struct {
	Step   string
	Weight int
}

// Mix is a weighted choice of middle steps.
type Mix []Weighted

// DefaultMix leans on the cheap verified steps and still pauses, forks and
// hibernates several times per life on average.
var DefaultMix = Mix{
	{StepExec, 30},
	{StepFile, 25},
	{StepPause, 15},
	{StepFork, 12},
	{StepHibernate, 12},
	{StepColdPause, 8},
}

// Validate refuses an empty mix, unknown steps and weights below one.
func (m Mix) Validate() error {
	if len(m) == 0 {
		return fmt.Errorf("soak: empty op mix")
	}
	known := []string{StepExec, StepFile, StepPause, StepFork, StepHibernate, StepColdPause}
	for _, w := range m {
		if !slices.Contains(known, w.Step) {
			return fmt.Errorf("soak: op mix: unknown step %q (want one of %s)", w.Step, strings.Join(known, ", "))
		}
		if w.Weight < 1 {
			return fmt.Errorf("soak: op mix: step %q weight %d: want at least 1", w.Step, w.Weight)
		}
	}
	return nil
}

// Pick draws one step.
func (m Mix) Pick(r *rand.Rand) string {
	total := 0
	for _, w := range m {
		total += w.Weight
	}
	n := r.IntN(total)
	for _, w := range m {
		if n < w.Weight {
			return w.Step
		}
		n -= w.Weight
	}
	return m[len(m)-1].Step // unreachable with positive weights
}

// Life is the plan of one sandbox: middle steps, then End.
type Life struct {
	Steps []string
	End   string
}

// Lives plans sandbox lives: usually 3-12 middle steps ending in a plain
// kill; one life in six ends early (after 0-2 steps) with a kill of a
// paused or busy sandbox or a plain one.
func (m Mix) Life(r *rand.Rand) Life {
	var l Life
	n := 3 + r.IntN(10)
	l.End = EndKill
	if r.IntN(6) == 0 {
		n = r.IntN(3)
		l.End = []string{EndKill, EndKillPaused, EndKillBusy}[r.IntN(3)]
	}
	for range n {
		l.Steps = append(l.Steps, m.Pick(r))
	}
	return l
}
