package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/devstack"
)

// TestStackRestartReusesState is the quick start's second run: the stack
// (the same code make up runs) stops and starts again on the same
// WRENN_DIR; the admin key it printed still works, the host comes back
// online without registering again, and no state is lost. It runs last
// (file order) because it restarts the shared stack.
func TestStackRestartReusesState(t *testing.T) {
	st := stack(t)
	c := client{base: st.URL, cred: st.Admin.APIKey}
	var me api.Me
	c.json(t, "GET", "/v1/me", nil, http.StatusOK, &me)
	var before api.Host
	c.json(t, "GET", "/v1/hosts/"+st.HostID, nil, http.StatusOK, &before)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := st.Close(ctx); err != nil {
		t.Fatalf("stop stack: %v", err)
	}
	start := time.Now()
	again, err := devstack.Up(ctx, shared.cfg)
	if err != nil {
		shared.st = nil
		t.Fatalf("second start: %v", err)
	}
	shared.st = again
	t.Logf("second start (warm): %s", time.Since(start).Round(time.Millisecond))
	if again.Admin.APIKey != st.Admin.APIKey || again.HostID != st.HostID {
		t.Fatalf("second start made new state: key changed %v, host %s -> %s", again.Admin.APIKey != st.Admin.APIKey, st.HostID, again.HostID)
	}
	c = client{base: again.URL, cred: again.Admin.APIKey}
	var after api.Host
	c.json(t, "GET", "/v1/hosts/"+again.HostID, nil, http.StatusOK, &after)
	if after.Status != "online" || !after.CreatedAt.Equal(before.CreatedAt) {
		t.Fatalf("host after restart: %+v (before %+v)", after, before)
	}
}
