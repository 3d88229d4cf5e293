package rest

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestConcurrentCreatesDoNotOvercommit: a host with room for exactly two
// 512 MiB sandboxes gets six creates at once; placement is serialised, so
// two succeed and four answer 503, never more than fit.
func TestConcurrentCreatesDoNotOvercommit(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t, func(h *hostSpec) { h.memory, h.available = 1<<30, 1<<30 })
	// Without the placement lock every create would read the host as
	// empty during this pause and all six would be placed.
	env.Server.sandboxes.SetPlacementHook(func() { time.Sleep(50 * time.Millisecond) })

	const n = 6
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			resp := env.do(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{"memory_mb": 512})
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusServiceUnavailable:
		default:
			t.Errorf("create answered %d, want 201 or 503", c)
		}
	}
	if created != 2 {
		t.Fatalf("%d of %d concurrent creates succeeded on a host with room for 2 (codes %v)", created, n, codes)
	}
}
