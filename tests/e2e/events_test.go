package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
)

// reaperReportWithin is how long the control plane may take to show what
// the agent's reaper did: the reaper runs every second in this stack and
// its event is pushed at once, so this is far below the heartbeat's 30 s
// (which would only repair a lost event). Generous for TCG on a busy host.
const reaperReportWithin = 25 * time.Second

// waitState polls GET until the sandbox is in want or the deadline
// passes, and says how long it took.
func waitState(t *testing.T, c client, id string, want api.SandboxState, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var sb api.Sandbox
	for {
		c.json(t, "GET", "/v1/sandboxes/"+id, nil, http.StatusOK, &sb)
		if sb.State == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("sandbox %s is %s %s after its reaper was due, want %s", id, sb.State, within, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestReaperReachesControlPlane: what the agent's reaper does on its own
// shows through the API within seconds (issue 19, items 1 and 2). A
// sandbox idle past its timeout with on_timeout pause is listed paused,
// and resuming it through the API continues it with its memory (a file in
// /dev/shm and a background process survive); one with on_timeout kill is
// listed stopped.
func TestReaperReachesControlPlane(t *testing.T) {
	t.Run("pause", func(t *testing.T) {
		st := stack(t)
		c := client{base: st.URL, cred: st.Admin.APIKey}
		// Long enough to plant what must survive, then shortened: under
		// TCG an exec can take longer than a 3 s idle timeout.
		var sb api.Sandbox
		c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 120, "on_timeout": "pause",
			"metadata": map[string]string{"journey": "reaper-events"}}, http.StatusCreated, &sb)
		defer func() { c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil).Body.Close() }()
		path := "/v1/sandboxes/" + sb.Id

		var res api.ExecResult
		c.json(t, "POST", path+"/exec", map[string]any{"cmd": "echo kept-in-memory > /dev/shm/wrenn-marker"}, http.StatusOK, &res)
		if res.ExitCode == nil || *res.ExitCode != 0 {
			t.Fatalf("write /dev/shm: %+v", res)
		}
		c.json(t, "POST", path+"/exec", map[string]any{"cmd": "sleep 100000", "background": true, "tag": "sleeper"}, http.StatusOK, &res)
		pid := res.Pid
		if pid <= 0 {
			t.Fatalf("background start: %+v", res)
		}

		c.json(t, "POST", path+"/timeout", map[string]any{"timeout_sec": 3, "on_timeout": "pause"}, http.StatusOK, &sb)
		took := waitState(t, c, sb.Id, api.SandboxStatePaused, reaperReportWithin)
		t.Logf("paused by the reaper and shown paused %s after the 3 s timeout was set", took.Round(time.Millisecond))

		// Not reaped again right after the resume while it is checked.
		c.json(t, "POST", path+"/timeout", map[string]any{"timeout_sec": 600, "on_timeout": "pause"}, http.StatusOK, &sb)
		c.json(t, "POST", path+"/resume", nil, http.StatusOK, &sb)
		if sb.State != api.SandboxStateRunning {
			t.Fatalf("resumed sandbox: %s", sb.State)
		}
		c.json(t, "POST", path+"/exec", map[string]any{
			"cmd": fmt.Sprintf("cat /dev/shm/wrenn-marker && kill -0 %d && echo sleeper-alive", pid)}, http.StatusOK, &res)
		out := deref(res.Stdout)
		if res.ExitCode == nil || *res.ExitCode != 0 || !strings.Contains(out, "kept-in-memory") || !strings.Contains(out, "sleeper-alive") {
			t.Fatalf("after the resume, memory was not kept: exit %v stdout %q stderr %q", res.ExitCode, out, deref(res.Stderr))
		}
	})

	t.Run("kill", func(t *testing.T) {
		st := stack(t)
		c := client{base: st.URL, cred: st.Admin.APIKey}
		var sb api.Sandbox
		c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 3, "on_timeout": "kill",
			"metadata": map[string]string{"journey": "reaper-events"}}, http.StatusCreated, &sb)
		defer func() { c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil).Body.Close() }()
		took := waitState(t, c, sb.Id, api.SandboxStateStopped, reaperReportWithin)
		t.Logf("killed by the reaper and shown stopped %s after its create returned", took.Round(time.Millisecond))
	})
}

// TestVMMDeathReachesControlPlane: a sandbox whose VMM dies behind the
// agent's back (killed here as the OOM killer or a crash would) is shown
// in error through the API within seconds, with a reason, and can be
// deleted.
func TestVMMDeathReachesControlPlane(t *testing.T) {
	st := stack(t)
	c := client{base: st.URL, cred: st.Admin.APIKey}
	var sb api.Sandbox
	c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 600,
		"metadata": map[string]string{"journey": "vmm-death"}}, http.StatusCreated, &sb)
	defer func() { c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil).Body.Close() }()

	pid := vmmPID(t, sb.Id)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the VMM of %s (pid %d): %v", sb.Id, pid, err)
	}
	took := waitState(t, c, sb.Id, api.SandboxStateError, reaperReportWithin)
	c.json(t, "GET", "/v1/sandboxes/"+sb.Id, nil, http.StatusOK, &sb)
	t.Logf("shown in error %s after its VMM was killed: %q", took.Round(time.Millisecond), deref(sb.Error))
	if deref(sb.Error) == "" {
		t.Error("a sandbox in error without a reason")
	}
	resp := c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete the sandbox in error: %s", resp.Status)
	}
}

// vmmPID finds the VMM process of sandbox id: the one process whose
// command line names its directory.
func vmmPID(t *testing.T, id string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("/sandboxes/"+id+"/")) {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.Contains(filepath.Base(args[0]), "qemu") && !strings.Contains(filepath.Base(args[0]), "firecracker") {
			continue
		}
		if found != 0 {
			t.Fatalf("two VMM processes name sandbox %s", id)
		}
		found, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
	}
	if found == 0 {
		t.Fatalf("no VMM process names sandbox %s", id)
	}
	return found
}
