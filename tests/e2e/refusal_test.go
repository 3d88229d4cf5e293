package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
)

// TestExecOnReaperPausedSandbox is issue 19's item 3 as a user saw it: the
// agent's reaper pauses an idle sandbox on its own, and an exec on it
// answered 500 "internal error". It must answer 409 failed_precondition
// (the agent's refusal, kept through the control plane).
//
// The stack's reaper runs every second and the sandbox idles out after
// 2 s; each exec counts as use, so the test polls every 4 s, longer than
// the idle timeout, until an exec is refused.
func TestExecOnReaperPausedSandbox(t *testing.T) {
	st := stack(t)
	c := client{base: st.URL, cred: st.Admin.APIKey}
	var sb api.Sandbox
	c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 2, "on_timeout": "pause",
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
				t.Fatalf("the reaper never paused sandbox %s (2 s idle timeout, exec still answered 200 after 2 min)", sb.Id)
			}
			continue
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != http.StatusConflict || e.Error.Code != "failed_precondition" {
			t.Fatalf("exec on a sandbox the reaper paused: %d %s, want 409 failed_precondition", resp.StatusCode, body)
		}
		t.Logf("refused as it should be: %s", e.Error.Message)
		return
	}
}
