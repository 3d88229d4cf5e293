//go:build linux

package agent_test

import (
	"context"
	"errors"
	"github.com/wrenn/wrenn/internal/clocktest"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestReaper: an idle sandbox is killed or paused per its on_timeout once
// its timeout passes on the (fake) clock; use resets the idle time.
func TestReaper(t *testing.T) {
	h := newHarness(t)
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h.clock = clock
	ctx := ctxFor(t, 5*time.Minute)
	m := h.agent(ctx)

	kill, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256, Timeout: time.Minute, OnTimeout: agent.OnTimeoutKill})
	if err != nil {
		t.Fatal(err)
	}
	pause, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256, Timeout: time.Minute, OnTimeout: agent.OnTimeoutPause})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Destroy(context.Background(), pause.ID) })

	// Not yet idle long enough: nothing happens.
	clock.Advance(50 * time.Second)
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{kill.ID, pause.ID} {
		if info, err := m.Get(ctx, id); err != nil || info.State != state.Running {
			t.Fatalf("%s before its timeout: %+v, %v", id, info, err)
		}
	}

	// Use resets the idle time of one of them.
	if _, err := m.Envd(ctx, pause.ID); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second) // kill: 70 s idle; pause: 20 s idle
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, kill.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("idle sandbox with on_timeout=kill: Get = %v, want NotFound", err)
	}
	if info, _ := m.Get(ctx, pause.ID); info.State != state.Running {
		t.Fatalf("recently used sandbox was reaped: %+v", info)
	}

	clock.Advance(2 * time.Minute)
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Get(ctx, pause.ID); info.State != state.Paused {
		t.Fatalf("idle sandbox with on_timeout=pause is %s, want paused", info.State)
	}
	// A paused sandbox is not reaped again.
	clock.Advance(time.Hour)
	if err := m.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Get(ctx, pause.ID); info.State != state.Paused {
		t.Fatalf("paused sandbox changed to %s", info.State)
	}
	if err := m.Resume(ctx, pause.ID); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := run(ctx, t, m, pause.ID, "echo alive"); out != "alive\n" {
		t.Fatalf("after resume: %q", out)
	}
}
