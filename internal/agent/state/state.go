// Package state is the sandbox lifecycle state machine: the states a sandbox
// can be in and the only transitions allowed between them.
package state

import (
	"github.com/wrenn/wrenn/internal/errdefs"
)

// State of one sandbox on its host.
type State string

// The lifecycle (DESIGN §6). Stopped is terminal.
const (
	Starting   State = "starting"
	Running    State = "running"
	Paused     State = "paused"
	Hibernated State = "hibernated"
	Stopping   State = "stopping"
	Stopped    State = "stopped"
	Error      State = "error"
)

// All lists every state, in lifecycle order.
var All = []State{Starting, Running, Paused, Hibernated, Stopping, Stopped, Error}

// next holds, for each state, the states it may move to.
var next = map[State][]State{
	// A boot or restore either answers, fails, or is abandoned by a destroy.
	Starting: {Running, Error, Stopping},
	Running:  {Paused, Stopping, Error},
	// Resume returns to Running; hibernate frees the memory.
	Paused: {Running, Hibernated, Stopping, Error},
	// Resume from disk restarts the VMM; it passes through Starting.
	Hibernated: {Starting, Stopping, Error},
	Stopping:   {Stopped, Error},
	Stopped:    {},
	// A sandbox in error can only be cleaned up.
	Error: {Stopping},
}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	_, ok := next[s]
	return ok
}

// CanMoveTo reports whether the lifecycle allows s -> to.
func (s State) CanMoveTo(to State) bool {
	for _, n := range next[s] {
		if n == to {
			return true
		}
	}
	return false
}

// Check returns a FailedPrecondition error naming both states when s -> to
// is not allowed, nil otherwise.
func (s State) Check(to State) error {
	if !s.CanMoveTo(to) {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox is %s, cannot become %s", s, to)
	}
	return nil
}

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool { return s.Valid() && len(next[s]) == 0 }
