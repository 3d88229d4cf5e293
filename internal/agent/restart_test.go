//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/envdclient"
)

const (
	helperDirEnv = "WRENN_AGENT_HELPER_DIR"
	helperRunEnv = "WRENN_AGENT_HELPER_RUN"
	idsFile      = "ids.txt"
	restartCount = 3
)

// TestAgentProcessHelper is the "first agent" of TestRestartAdopts, run in
// a child process that the parent kills with SIGKILL: it creates sandboxes,
// leaves a file and a running counter in each, reports their ids, and
// blocks.
func TestAgentProcessHelper(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process: runs only when started by TestRestartAdopts")
	}
	run, err := strconv.Atoi(os.Getenv(helperRunEnv))
	if err != nil {
		t.Fatalf("%s: %v", helperRunEnv, err)
	}
	h := newHarnessIn(t, dir, run)
	ctx := context.Background()
	m := h.agent(ctx)
	ids := make([]string, restartCount)
	var g errgroup.Group
	g.SetLimit(2)
	for i := range ids {
		g.Go(func() error {
			info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
			if err != nil {
				return err
			}
			c, err := m.Envd(ctx, info.ID)
			if err != nil {
				return err
			}
			if err := c.Upload(ctx, "marker", strings.NewReader(info.ID)); err != nil {
				return err
			}
			_, err = c.Start(ctx, envdclient.RunRequest{
				Cmd: "/bin/sh", Args: []string{"-c", "i=0; while true; do i=$((i+1)); echo $i > count.new && mv count.new count; sleep 0.2; done"},
				Tag: "counter",
			})
			ids[i] = info.ID
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("helper agent: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, idsFile), []byte(strings.Join(ids, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	select {} // until SIGKILL
}

// TestRestartAdopts: kill -9 of the agent with 3 running sandboxes; a new
// agent re-adopts all 3 with their processes and files intact, and
// destroying them afterwards leaves nothing behind.
func TestRestartAdopts(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)

	child := exec.Command(os.Args[0], "-test.run=^TestAgentProcessHelper$", "-test.v")
	child.Env = append(os.Environ(), helperDirEnv+"="+h.dir, helperRunEnv+"="+strconv.Itoa(h.run))
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	deadline := time.Now().Add(5 * time.Minute)
	for len(ids) == 0 {
		if b, err := os.ReadFile(filepath.Join(h.dir, idsFile)); err == nil {
			ids = strings.Fields(string(b))
			break
		}
		if time.Now().After(deadline) || child.ProcessState != nil {
			_ = child.Process.Kill()
			_ = child.Wait()
			t.Fatalf("helper agent never reported its sandboxes:\n%s", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	t.Logf("first agent killed with SIGKILL holding %v", ids)

	m := h.agent(ctx) // a new agent: Recover re-adopts
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != restartCount {
		t.Fatalf("re-adopted %d sandboxes, want %d: %+v", len(list), restartCount, list)
	}
	for _, id := range ids {
		info, err := m.Get(ctx, id)
		if err != nil || info.State != state.Running {
			t.Fatalf("sandbox %s after restart: %+v, %v", id, info, err)
		}
		if out, _, _ := run(ctx, t, m, id, "cat marker"); out != id {
			t.Errorf("sandbox %s: marker file = %q", id, out)
		}
		c, _ := m.Envd(ctx, id)
		procs, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range procs {
			found = found || p.Tag == "counter"
		}
		if !found {
			t.Errorf("sandbox %s: the counter process is gone after the restart: %+v", id, procs)
		}
		if !counterAdvances(ctx, t, m, id) {
			t.Errorf("sandbox %s: the counter does not advance after the restart", id)
		}
	}

	for _, id := range ids {
		if err := m.Destroy(ctx, id); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	}
	// assertNoLeftovers (t.Cleanup) checks netns, veths, cgroups, nftables, files.
}

// counterAdvances polls the sandbox's count file until it grows.
func counterAdvances(ctx context.Context, t *testing.T, m *agent.Manager, id string) bool {
	read := func() int {
		out, _, _ := run(ctx, t, m, id, "cat count")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	first := read()
	for range 50 {
		if read() > first {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
