package agent

import (
	"context"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
)

// TestListDoesNotWaitForBusySandboxes: a sandbox held by a long operation
// is listed as last seen (or starting), not waited for.
func TestListDoesNotWaitForBusySandboxes(t *testing.T) {
	m := &Manager{sandboxes: map[string]*sandbox{}}
	idle := &sandbox{rec: &record{ID: "idle", State: state.Running, CreatedAt: time.Unix(1, 0)}}
	seen := &sandbox{rec: &record{ID: "seen", State: state.Running, CreatedAt: time.Unix(2, 0)}}
	booting := &sandbox{rec: &record{ID: "booting", State: state.Starting}}
	m.sandboxes["idle"], m.sandboxes["seen"], m.sandboxes["booting"] = idle, seen, booting
	seen.info() // described once, then busy
	seen.mu.Lock()
	booting.mu.Lock()
	defer seen.mu.Unlock()
	defer booting.mu.Unlock()
	seen.rec.State = state.Paused // changed under the lock: not visible yet

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]state.State{}
	for _, in := range list {
		got[in.ID] = in.State
	}
	want := map[string]state.State{"idle": state.Running, "seen": state.Running, "booting": state.Starting}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("%s: listed as %q, want %q (all: %v)", id, got[id], st, got)
		}
	}
}
