package agent_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
)

// guestClockWithin fails unless the guest's wall clock, read by a command
// inside it, lies between the host's clock just before and just after
// that command, give or take tolerance.
func guestClockWithin(ctx context.Context, t *testing.T, m *agent.Manager, id, path string, tolerance time.Duration) {
	t.Helper()
	before := time.Now()
	out, _, code := run(ctx, t, m, id, "date +%s.%N")
	after := time.Now()
	if code != 0 {
		t.Fatalf("%s: date exited %d", path, code)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("%s: guest date %q: %v", path, out, err)
	}
	guest := time.Unix(0, int64(secs*1e9))
	if guest.Before(before.Add(-tolerance)) || guest.After(after.Add(tolerance)) {
		t.Fatalf("%s: guest clock %s, host %s..%s: off by more than %v", path,
			guest.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano), tolerance)
	}
	t.Logf("%s: guest clock within %v of the host's (read in %v)", path, tolerance, after.Sub(before).Round(time.Millisecond))
}

// TestGuestClockAfterEveryReturn is issue 18's bug: a guest paused for a
// while came back with its clock behind by the paused time, for good.
// Every path that brings a guest back sets its clock before it reports
// the sandbox running: resume of a paused sandbox, resume from
// hibernation, a fork, a create from a template snapshot. Each is paused
// (or its source is) for longer than the tolerance first.
func TestGuestClockAfterEveryReturn(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)
	sb, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Destroy(context.Background(), sb.ID) })
	const tolerance = time.Second
	const paused = 3 * time.Second // longer than the tolerance

	guestClockWithin(ctx, t, m, sb.ID, "after create", tolerance)

	if err := m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(paused) // paused wall time the guest's clock must catch up on
	if err := m.Resume(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	guestClockWithin(ctx, t, m, sb.ID, "resume after a pause", tolerance)

	if err := m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Hibernate(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(paused)
	if err := m.Resume(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	guestClockWithin(ctx, t, m, sb.ID, "resume from hibernation", tolerance)

	// Fork and template from a paused source, then wait: the copies are
	// restored from state that is older than the tolerance.
	if err := m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	const tpl = "clock-tpl"
	if err := m.SnapshotTemplate(ctx, sb.ID, tpl); err != nil {
		t.Fatalf("snapshot template: %v", err)
	}
	t.Cleanup(func() { _ = m.DeleteTemplate(context.Background(), tpl) })
	time.Sleep(paused)
	forks, err := m.Fork(ctx, sb.ID, 1)
	if err != nil {
		t.Fatalf("fork: %v", err)
	}
	t.Cleanup(func() { _ = m.Destroy(context.Background(), forks[0].ID) })
	guestClockWithin(ctx, t, m, forks[0].ID, "fork of a paused sandbox", tolerance)
	if err := m.Destroy(ctx, forks[0].ID); err != nil {
		t.Fatal(err)
	}
	fromTpl, err := m.Create(ctx, agent.CreateRequest{Template: tpl})
	if err != nil {
		t.Fatalf("create from template: %v", err)
	}
	t.Cleanup(func() { _ = m.Destroy(context.Background(), fromTpl.ID) })
	guestClockWithin(ctx, t, m, fromTpl.ID, "create from a template snapshot", tolerance)
}
