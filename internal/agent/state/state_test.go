package state

import (
	"errors"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestTransitions checks every ordered pair of states: the legal ones listed
// here and nothing else.
func TestTransitions(t *testing.T) {
	legal := map[[2]State]bool{
		{Starting, Running}:    true,
		{Starting, Error}:      true,
		{Starting, Stopping}:   true,
		{Running, Paused}:      true,
		{Running, Stopping}:    true,
		{Running, Error}:       true,
		{Paused, Running}:      true,
		{Paused, Hibernated}:   true,
		{Paused, Stopping}:     true,
		{Paused, Error}:        true,
		{Hibernated, Starting}: true,
		{Hibernated, Stopping}: true,
		{Hibernated, Error}:    true,
		{Stopping, Stopped}:    true,
		{Stopping, Error}:      true,
		{Error, Stopping}:      true,
	}
	for _, from := range All {
		for _, to := range All {
			name := string(from) + "->" + string(to)
			t.Run(name, func(t *testing.T) {
				want := legal[[2]State{from, to}]
				if got := from.CanMoveTo(to); got != want {
					t.Fatalf("CanMoveTo = %v, want %v", got, want)
				}
				err := from.Check(to)
				if want && err != nil {
					t.Fatalf("Check: %v", err)
				}
				if !want && !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Fatalf("Check = %v, want a FailedPrecondition error", err)
				}
			})
		}
	}
}

func TestTerminalAndValid(t *testing.T) {
	tests := []struct {
		name     string
		s        State
		valid    bool
		terminal bool
	}{
		{name: "stopped is terminal", s: Stopped, valid: true, terminal: true},
		{name: "running is not", s: Running, valid: true, terminal: false},
		{name: "error can still be cleaned up", s: Error, valid: true, terminal: false},
		{name: "unknown", s: State("bogus"), valid: false, terminal: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.Valid(); got != tt.valid {
				t.Errorf("Valid = %v, want %v", got, tt.valid)
			}
			if got := tt.s.Terminal(); got != tt.terminal {
				t.Errorf("Terminal = %v, want %v", got, tt.terminal)
			}
		})
	}
}

func TestUnknownStateCannotMove(t *testing.T) {
	if State("bogus").CanMoveTo(Running) {
		t.Fatal("an unknown state must not move anywhere")
	}
}
