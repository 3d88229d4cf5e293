//go:build linux

package agent_test

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
)

type eventRecorder struct {
	mu  sync.Mutex
	evs []agent.Event
}

func (r *eventRecorder) SandboxEvent(ev agent.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func (r *eventRecorder) last(id string) (agent.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.evs) - 1; i >= 0; i-- {
		if r.evs[i].ID == id {
			return r.evs[i], true
		}
	}
	return agent.Event{}, false
}

// TestVMMKilledEmitsEvent: a real VMM killed behind the agent's back (as
// the kernel's OOM killer or a crash would) puts its sandbox in error at
// once with a VMM_EXITED event; the sandbox can then be destroyed and
// leaves nothing behind.
func TestVMMKilledEmitsEvent(t *testing.T) {
	h := newHarness(t)
	evs := &eventRecorder{}
	h.events = evs
	ctx := ctxFor(t, 5*time.Minute)
	m := h.agent(ctx)
	t.Cleanup(func() { _ = m.Close() })

	info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	if ev, ok := evs.last(info.ID); !ok || ev.State != state.Running || ev.Version != info.Version {
		t.Fatalf("after create: last event %+v (%v), want running at version %d", ev, ok, info.Version)
	}
	if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the VMM (pid %d): %v", info.PID, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ev, _ := evs.last(info.ID)
		if ev.State == state.Error {
			if ev.Reason != agent.ReasonVMMExited || ev.Version != info.Version+1 || ev.Message == "" {
				t.Fatalf("event of the killed VMM: %+v, want error/vmm_exited at version %d with a message", ev, info.Version+1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no error event 30 s after the VMM was killed (last %+v)", ev)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := m.Get(ctx, info.ID)
	if err != nil || got.State != state.Error {
		t.Fatalf("sandbox with a dead VMM: %+v (%v), want error", got, err)
	}
	if err := m.Destroy(context.Background(), info.ID); err != nil {
		t.Fatalf("destroy the sandbox in error: %v", err)
	}
}
