// Package faults is issue 19's fault-injection suite: for each of create,
// fork, pause, resume, hibernate, snapshot-as-template and destroy, it
// stops wrenn-cp or wrenn-agent at a named point inside the operation
// (internal/faultpoint), kills the control plane, the agent or PostgreSQL
// there with SIGKILL, lets internal/devstack restart what died, and checks
// within a bounded time that the control plane and the agent agree on
// every sandbox, that the sandbox is usable or cleanly gone as the API
// said, and, once everything is deleted through the API, that nothing is
// left on the host (internal/leakcheck).
//
// One stack with its own names, address ranges, uids and PostgreSQL port
// serves the whole package. It needs root, QEMU and the images (make
// images): without them the test skips and says why, or fails under
// WRENN_TEST_REQUIRE_VM=1.
package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/leakcheck"
	"github.com/wrenn/wrenn/internal/testenv"
)

// The stack's own resources: nothing here collides with make up, tests/e2e
// (we2e, 10.90/10.91, 400000, 5433) or tests/security.
const (
	agentName  = "wfault"
	vmmUIDBase = 440000
	pgPort     = 5437
)

// stackEnv is one running stack and what the suite needs to reach into it.
type stackEnv struct {
	st *devstack.Stack
	// dir is WRENN_DIR; faults the fault-point directory both daemons use.
	dir, faults string
	scope       leakcheck.Scope
}

// startStack builds the binaries and brings the stack up; the returned
// function stops it and removes its files.
func startStack(t *testing.T, images testenv.Images) (*stackEnv, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ws, err := stacktest.New(ctx, images, "wrenn-faults-", "wrenn-cp", "wrenn-agent")
	if err != nil {
		t.Fatalf("prepare stack: %v", err)
	}
	t.Logf("built binaries in %s", ws.BuildTime.Round(time.Millisecond))
	faults := filepath.Join(ws.Root, "faultpoints")
	if err := os.MkdirAll(faults, 0o755); err != nil {
		os.RemoveAll(ws.Root)
		t.Fatal(err)
	}
	cfg := devstack.Config{
		Dir:       ws.Dir,
		BinDir:    ws.Bin,
		CPAddr:    stacktest.FreeAddr(),
		AgentAddr: stacktest.FreeAddr(),
		PGPort:    pgPort,
		// Not the test log: the supervisors write after tests end.
		Out: os.Stderr,
		CPEnv: []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + stacktest.FreeAddr(),
			"WRENN_CP_FAULTPOINT_DIR=" + faults},
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=" + agentName,
			"WRENN_AGENT_REAPER_INTERVAL=1s", "WRENN_AGENT_HEARTBEAT_INTERVAL=1s",
			"WRENN_AGENT_HOST_CIDR=10.98.0.0/16", "WRENN_AGENT_VETH_CIDR=10.99.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + stacktest.FreeAddr(), fmt.Sprintf("WRENN_AGENT_VMM_UID_BASE=%d", vmmUIDBase),
			"WRENN_AGENT_FAULTPOINT_DIR=" + faults},
		// Every scenario kills something: restart quickly, and never give
		// up within the suite.
		Restart: devstack.RestartPolicy{Backoff: 200 * time.Millisecond, MaxBackoff: time.Second, Window: time.Minute, MaxCrashes: 1000},
	}
	st, err := devstack.Up(ctx, cfg)
	if err != nil {
		os.RemoveAll(ws.Root)
		t.Fatalf("start stack: %v", err)
	}
	env := &stackEnv{st: st, dir: ws.Dir, faults: faults,
		scope: leakcheck.Scope{Dir: ws.Dir, AgentName: agentName, VMMUIDBase: vmmUIDBase}}
	return env, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := st.Close(ctx); err != nil {
			t.Logf("stop stack: %v", err)
		}
		removeAgentLeftovers(ctx, t)
		if os.Getenv("WRENN_FAULTS_KEEP") == "" {
			os.RemoveAll(ws.Root)
		} else {
			t.Logf("kept %s", ws.Root)
		}
	}
}

// removeAgentLeftovers removes what a stopped agent keeps for its next
// start (leakcheck's per-agent resources: its nft table, its cgroup
// parent, its guest-memory tmpfs), which nothing else would remove: this
// agent has no next start.
func removeAgentLeftovers(ctx context.Context, t *testing.T) {
	if out, err := exec.CommandContext(ctx, "nft", "delete", "table", "inet", agentName).CombinedOutput(); err != nil {
		t.Logf("remove nft table inet %s: %v %s", agentName, err, out)
	}
	mem := filepath.Join("/dev/shm", agentName)
	_ = unix.Unmount(mem, unix.MNT_DETACH)
	_ = os.Remove(mem)
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", c, agentName))
	}
	rs, err := leakcheck.List(ctx, leakcheck.Scope{AgentName: agentName, Dir: "/nonexistent", VMMUIDBase: vmmUIDBase})
	if err == nil && len(rs) > 0 {
		t.Logf("left on the host after the stack stopped:\n%s", leakcheck.Format(rs))
	}
}
