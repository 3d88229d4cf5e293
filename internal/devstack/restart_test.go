package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/pgcluster"
	"github.com/wrenn/wrenn/internal/testenv"
)

// syncBuffer collects the stack's progress lines, written by its
// supervisors while the test reads them.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRestartKilledDaemons: on a whole stack with one sandbox (a real
// VM), SIGKILL wrenn-cp, then wrenn-agent, then PostgreSQL. Each is
// restarted by the stack, which says so; the API answers again; and the
// sandbox created before is still listed as running and still the same VM
// (a file written before reads back), because the VMM outlives its agent
// and the new agent adopts it.
func TestRestartKilledDaemons(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, wrenn-cp, wrenn-agent and a VM: not in -short")
	}
	images := testenv.RequireVM(t)
	if _, err := pgcluster.BinDir(); err != nil {
		testenv.Missing(t, err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	ws, err := stacktest.New(ctx, images, "wrenn-restart-", "wrenn-cp", "wrenn-agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ws.Root) })
	var progress syncBuffer
	st, err := devstack.Up(ctx, devstack.Config{
		Dir: ws.Dir, BinDir: ws.Bin, CPAddr: freeAddr(t), AgentAddr: freeAddr(t), PGPort: 5442,
		Out:   &progress,
		CPEnv: []string{"WRENN_METRICS_ADDR=" + freeAddr(t)},
		// Its own names and ranges: tests/e2e (we2e), tests/security
		// (wsec), the TLS tests here (wtls) or make up may run alongside.
		AgentEnv: []string{"WRENN_AGENT_NAME=wrst", "WRENN_AGENT_HOST_CIDR=10.104.0.0/16", "WRENN_AGENT_VETH_CIDR=10.105.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + freeAddr(t), "WRENN_AGENT_VMM_UID_BASE=440000"},
		Restart: devstack.RestartPolicy{Backoff: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("up: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		if _, err := st.DestroySandboxes(cctx); err != nil {
			t.Errorf("destroy sandboxes: %v", err)
		}
		if err := st.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	api := apiClient{t: t, ctx: ctx, st: st}

	var sb struct {
		ID string `json:"id"`
	}
	api.do(http.MethodPost, "/v1/sandboxes", map[string]any{"template": "minimal"}, http.StatusCreated, &sb)
	if out := api.exec(sb.ID, "echo kept > /tmp/marker && cat /tmp/marker"); out != "kept\n" {
		t.Fatalf("exec before the kills: %q", out)
	}

	for _, name := range []string{devstack.CP, devstack.Agent, devstack.Postgres} {
		pid := st.PID(name)
		if pid == 0 {
			t.Fatalf("%s: no pid", name)
		}
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", name, err)
		}
		// The agent pays its KVM probe's deadline on every start (TCG
		// here), on a machine other sessions load: bound it generously.
		deadline := time.Now().Add(4 * time.Minute)
		for st.Restarts(name) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s not restarted within 4 min of SIGKILL; output:\n%s", name, progress.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("%s killed and healthy again in %s", name, time.Since(killed).Round(10*time.Millisecond))
		if p := st.PID(name); p == 0 || p == pid {
			t.Errorf("%s after its restart: pid %d, killed %d", name, p, pid)
		}
		want := name + " exited: signal: killed; restarting (attempt 1)"
		if name == devstack.Postgres {
			want = "postgresql stopped (its server is gone); restarting (attempt 1)"
		}
		if !strings.Contains(progress.String(), want) {
			t.Errorf("the stack did not say %q:\n%s", want, progress.String())
		}

		// The control plane's pool may still hold connections to the
		// killed PostgreSQL: the API is given a few seconds to answer.
		var got struct {
			State string `json:"state"`
		}
		deadline = time.Now().Add(30 * time.Second)
		for code := api.get("/v1/sandboxes/"+sb.ID, &got); code != http.StatusOK; code = api.get("/v1/sandboxes/"+sb.ID, &got) {
			if time.Now().After(deadline) {
				t.Fatalf("after %s's restart GET /v1/sandboxes/%s answers %d", name, sb.ID, code)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got.State != "running" {
			t.Errorf("after %s's restart the sandbox is %q, want running", name, got.State)
		}
		if out := api.exec(sb.ID, "cat /tmp/marker"); out != "kept\n" {
			t.Errorf("after %s's restart the sandbox's file reads %q, want the one written before", name, out)
		}
	}
	// Each daemon was restarted once, and none of the others was.
	for _, name := range []string{devstack.CP, devstack.Agent, devstack.Postgres} {
		if n := st.Restarts(name); n != 1 {
			t.Errorf("%s restarted %d times, want 1:\n%s", name, n, progress.String())
		}
	}
}

type apiClient struct {
	t   *testing.T
	ctx context.Context
	st  *devstack.Stack
}

func (c apiClient) do(method, path string, body any, want int, out any) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.ctx, method, c.st.URL+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.st.Admin.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// get does a GET and decodes a 200 answer into out; it returns the status
// (0 when the request failed).
func (c apiClient) get(path string, out any) int {
	c.t.Helper()
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.st.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.st.Admin.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			c.t.Fatalf("GET %s: decode: %v", path, err)
		}
	}
	return resp.StatusCode
}

// exec runs a shell command line in the sandbox and returns its stdout.
func (c apiClient) exec(id, cmd string) string {
	c.t.Helper()
	var res struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
	}
	c.do(http.MethodPost, "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": cmd}, http.StatusOK, &res)
	if res.ExitCode != 0 {
		c.t.Errorf("exec %q: exit %d, stderr %q", cmd, res.ExitCode, res.Stderr)
	}
	return res.Stdout
}
