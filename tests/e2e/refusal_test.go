package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
)

// TestExecAfterReaper is issue 19's item 3 as a user saw it: the agent's
// reaper pauses or kills an idle sandbox on its own, and an exec on it
// answered 500 "internal error". It must answer 409 failed_precondition
// for a paused sandbox and 404 not_found for a destroyed one (the agent's
// refusal, kept through the control plane).
func TestExecAfterReaper(t *testing.T) {
	for _, tt := range []struct {
		onTimeout string
		status    int
		code      string
	}{
		{"pause", http.StatusConflict, "failed_precondition"},
		{"kill", http.StatusNotFound, "not_found"},
	} {
		t.Run(tt.onTimeout, func(t *testing.T) { execAfterReaper(t, tt.onTimeout, tt.status, tt.code) })
	}
}

// execAfterReaper creates a sandbox that idles out after 2 s (the stack's
// reaper runs every second) and polls exec every 4 s, longer than the idle
// timeout since each exec counts as use, until one is refused.
func execAfterReaper(t *testing.T, onTimeout string, status int, code string) {
	st := stack(t)
	c := client{base: st.URL, cred: st.Admin.APIKey}
	var sb api.Sandbox
	c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 2, "on_timeout": onTimeout,
		"metadata": map[string]string{"journey": "reaper-refusal"}}, http.StatusCreated, &sb)
	defer func() { c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil).Body.Close() }()

	tick := time.NewTicker(4 * time.Second)
	defer tick.Stop()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		<-tick.C
		resp := c.do(t, "POST", "/v1/sandboxes/"+sb.Id+"/exec", map[string]any{"cmd": "true"})
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("the reaper never acted on sandbox %s (%s after 2 s idle; exec still answered 200 after 2 min)", sb.Id, onTimeout)
			}
			continue
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != status || e.Error.Code != code {
			t.Fatalf("exec after the reaper (%s): %d %s, want %d %s", onTimeout, resp.StatusCode, body, status, code)
		}
		t.Logf("refused as it should be: %s", e.Error.Message)
		return
	}
}
