package sandboxes

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

func TestStateTable(t *testing.T) {
	for op, e := range table {
		if len(e.from) == 0 {
			t.Errorf("%s: no source state", op)
		}
		for _, st := range append(slices.Clone(e.from), e.to) {
			if st != "" && !slices.Contains(All, st) {
				t.Errorf("%s names unknown state %q", op, st)
			}
		}
		if slices.Contains(e.from, Stopped) {
			t.Errorf("%s may start on a stopped sandbox", op)
		}
	}
	for _, tc := range []struct {
		op   Op
		st   State
		want bool
	}{
		{OpPause, Running, true}, {OpPause, Paused, false}, {OpPause, Hibernated, false},
		{OpResume, Paused, true}, {OpResume, Hibernated, true}, {OpResume, Running, false},
		{OpFork, Paused, true}, {OpFork, Hibernated, false},
		{OpExec, Running, true}, {OpExec, Paused, false},
		{OpSetTimeout, Hibernated, true}, {OpSetTimeout, Missing, false},
	} {
		if got := Allows(tc.op, tc.st); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", tc.op, tc.st, got, tc.want)
		}
	}
	err := Check(OpPause, store.Sandbox{ID: "sb1", State: "paused"})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "it is paused (needs running)") {
		t.Fatalf("Check(pause, paused) = %v", err)
	}
	if To(OpPause) != Paused || To(OpFork) != "" {
		t.Fatalf("To: pause→%q fork→%q", To(OpPause), To(OpFork))
	}
}

func TestFromAgent(t *testing.T) {
	for in, want := range map[hostagentv1.SandboxState]State{
		hostagentv1.SandboxState_SANDBOX_STATE_RUNNING:     Running,
		hostagentv1.SandboxState_SANDBOX_STATE_STARTING:    Running,
		hostagentv1.SandboxState_SANDBOX_STATE_UNSPECIFIED: Running,
		hostagentv1.SandboxState_SANDBOX_STATE_PAUSED:      Paused,
		hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED:  Hibernated,
		hostagentv1.SandboxState_SANDBOX_STATE_STOPPED:     Stopped,
		hostagentv1.SandboxState_SANDBOX_STATE_ERROR:       Error,
		hostagentv1.SandboxState(99):                       Running,
	} {
		if got := FromAgent(in); got != want {
			t.Errorf("FromAgent(%v) = %s, want %s", in, got, want)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	sb := store.Sandbox{ID: "abc"}
	at, id, err := parseCursor(cursor(sb.CreatedAt, sb.ID))
	if err != nil || id != "abc" || !at.Equal(sb.CreatedAt.UTC().Truncate(1000)) {
		t.Fatalf("round trip: %v %q %v", at, id, err)
	}
	for _, bad := range []string{"!!", "bm90LWEtY3Vyc29y", "MTIz", "MTIzLgA"} {
		if _, _, err := parseCursor(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("parseCursor(%q) = %v, want invalid argument", bad, err)
		}
	}
}
