//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/clocktest"
	"github.com/wrenn/wrenn/internal/vmm/vmmtest"
)

// TestMatchRunState: a re-adopted VMM whose vCPUs disagree with the record
// (a pause, fork or template capture cut short; a resume cut short) is made
// to agree with the record.
func TestMatchRunState(t *testing.T) {
	ctx := context.Background()
	m, _, drv := fakeManager(t, clocktest.New(time.Now()))
	for _, tc := range []struct {
		name   string
		record state.State
		vmm    string
	}{
		{"pause cut short", state.Running, "paused"},
		{"resume cut short", state.Paused, "running"},
		{"agreeing running", state.Running, "running"},
		{"agreeing paused", state.Paused, "paused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := m.addRunning(t, drv, "s"+newID()[:8], time.Hour, OnTimeoutKill, time.Now())
			mach := sb.machine.(*vmmtest.FakeMachine)
			if tc.vmm == "paused" {
				if err := mach.Pause(ctx); err != nil {
					t.Fatal(err)
				}
			}
			sb.rec.State = tc.record
			if err := m.matchRunState(ctx, sb); err != nil {
				t.Fatal(err)
			}
			want := map[state.State]string{state.Running: "running", state.Paused: "paused"}[tc.record]
			if got := mach.Status(); got != want {
				t.Fatalf("vmm %s after matchRunState under a %s record, want %s", got, tc.record, want)
			}
		})
	}
}

// TestRemoveInterrupted: an unpublished template (images/.<name>.tmp-*) and
// a fork's source snapshot left by a killed agent go; published templates,
// hibernation snapshots and a hibernated sandbox a caller named "fork-..."
// stay.
func TestRemoveInterrupted(t *testing.T) {
	m, _, _ := fakeManager(t, clocktest.New(time.Now()))
	mk := func(p ...string) string {
		d := filepath.Join(append([]string{m.cfg.Dir}, p...)...)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	tmpTemplate := mk("images", ".tpl.tmp-abc", "snapshot")
	published := mk("images", "tpl", "snapshot")
	forkSnap := mk("snapshots", "fork-src-abcdef")
	hibernated := mk("snapshots", "someid")
	namedFork := mk("snapshots", "fork-mine")
	mk("sandboxes", "fork-mine")
	if err := m.removeInterrupted(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		filepath.Dir(tmpTemplate): false, forkSnap: false,
		published: true, hibernated: true, namedFork: true,
	} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v after removeInterrupted, want %v", p, got, want)
		}
	}
}
