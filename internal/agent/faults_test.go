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

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/faultpoint"
)

const (
	faultOpEnv     = "WRENN_AGENT_FAULT_OP"
	faultDirEnv    = "WRENN_AGENT_FAULT_DIR"
	faultTemplate  = "killed-tpl"
	faultMarkerCmd = "echo planted > marker"
)

// faultOps are the operations TestKilledInsideOperation cuts short, each
// at its fault point.
var faultOps = map[string]string{
	"pause":     faultpoint.AgentPauseStopped,
	"hibernate": faultpoint.AgentHibernateWritten,
	"resume":    faultpoint.AgentResumeRestored,
	"template":  faultpoint.AgentSnapshotWritten,
	"fork":      faultpoint.AgentForkRestored,
}

// TestFaultHelper is the agent process TestKilledInsideOperation kills:
// it creates a sandbox with a marker file, prepares it for the operation
// (a hibernated one for resume), reports its id, and runs the operation,
// which stops at the armed fault point until the SIGKILL.
func TestFaultHelper(t *testing.T) {
	op := os.Getenv(faultOpEnv)
	if op == "" {
		t.Skip("helper process: runs only when started by TestKilledInsideOperation")
	}
	runID, err := strconv.Atoi(os.Getenv(helperRunEnv))
	if err != nil {
		t.Fatalf("%s: %v", helperRunEnv, err)
	}
	dir := os.Getenv(helperDirEnv)
	h := newHarnessIn(t, dir, runID)
	h.faults = os.Getenv(faultDirEnv)
	ctx := context.Background()
	m := h.agent(ctx)
	info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, code := run(ctx, t, m, info.ID, faultMarkerCmd); code != 0 {
		t.Fatalf("plant marker: exit %d", code)
	}
	if op == "hibernate" || op == "resume" {
		if err := m.Pause(ctx, info.ID); err != nil {
			t.Fatal(err)
		}
	}
	if op == "resume" {
		if err := m.Hibernate(ctx, info.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, idsFile), []byte(info.ID), 0o600); err != nil {
		t.Fatal(err)
	}
	switch op {
	case "pause":
		err = m.Pause(ctx, info.ID)
	case "hibernate":
		err = m.Hibernate(ctx, info.ID)
	case "resume":
		err = m.Resume(ctx, info.ID)
	case "template":
		err = m.SnapshotTemplate(ctx, info.ID, faultTemplate)
	case "fork":
		_, err = m.Fork(ctx, info.ID, 1)
	}
	t.Fatalf("%s returned (%v) instead of stopping at its fault point", op, err)
}

// TestKilledInsideOperation: an agent killed with SIGKILL inside pause,
// hibernate, resume from hibernation, a template snapshot or a fork (at
// the operation's fault point) comes back with the sandbox in a state it
// reports truthfully and usable, and nothing half done on the host: a
// pause cut short leaves running vCPUs under a running record, a
// hibernation cut short a paused sandbox without its snapshot, a resume
// cut short a running sandbox (the resume is finished), a template cut short no
// template and no temporary directory, a fork cut short no fork and no
// fork snapshot.
func TestKilledInsideOperation(t *testing.T) {
	for _, op := range []string{"pause", "hibernate", "resume", "template", "fork"} {
		t.Run(op, func(t *testing.T) {
			h := newHarness(t)
			ctx := ctxFor(t, 10*time.Minute)
			faults := t.TempDir()
			point := faultOps[op]
			if err := faultpoint.Arm(faults, point); err != nil {
				t.Fatal(err)
			}
			child := exec.Command(os.Args[0], "-test.run=^TestFaultHelper$", "-test.v")
			child.Env = append(os.Environ(), helperDirEnv+"="+h.dir, helperRunEnv+"="+strconv.Itoa(h.run),
				faultOpEnv+"="+op, faultDirEnv+"="+faults, "WRENN_TEST_ACCEL="+string(h.accel))
			var out bytes.Buffer
			child.Stdout, child.Stderr = &out, &out
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = child.Wait(); close(exited) }()
			hctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			pid, err := faultpoint.WaitHit(hctx, faults, point)
			cancel()
			if err != nil {
				_ = child.Process.Kill()
				<-exited
				t.Fatalf("helper agent never reached %s: %v\n%s", point, err, out.String())
			}
			if pid != child.Process.Pid {
				t.Fatalf("%s hit by pid %d, not the helper agent (%d)", point, pid, child.Process.Pid)
			}
			if err := child.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-exited
			b, err := os.ReadFile(filepath.Join(h.dir, idsFile))
			if err != nil {
				t.Fatal(err)
			}
			id := strings.TrimSpace(string(b))
			t.Logf("helper agent killed at %s during %s of %s", point, op, id)

			m := h.agent(ctx) // Recover
			list, err := m.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].ID != id {
				t.Fatalf("after the restart the agent holds %+v, want only %s", list, id)
			}
			info := list[0]
			want := map[string]state.State{"pause": state.Running, "hibernate": state.Paused, "resume": state.Running,
				"template": state.Running, "fork": state.Running}[op]
			if info.State != want {
				t.Fatalf("sandbox %s is %s after the restart, want %s", id, info.State, want)
			}
			if _, err := os.Stat(filepath.Join(h.dir, "snapshots", id)); err == nil {
				t.Errorf("snapshots/%s left beside a %s sandbox", id, info.State)
			}
			for _, pat := range []string{"snapshots/fork-*", "images/.*.tmp-*", "images/" + faultTemplate} {
				if left, _ := filepath.Glob(filepath.Join(h.dir, pat)); len(left) > 0 {
					t.Errorf("left on the host after the restart: %v", left)
				}
			}
			if tpls, err := m.Templates(ctx); err == nil {
				for _, tp := range tpls {
					if tp.Name == faultTemplate {
						t.Errorf("template %s listed after a snapshot cut short", faultTemplate)
					}
				}
			}
			if info.State != state.Running {
				if err := m.Resume(ctx, id); err != nil {
					t.Fatalf("resume the %s sandbox: %v", info.State, err)
				}
			}
			// Running vCPUs: a command answers (it would hang on halted
			// ones), and the file planted before the operation is there.
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			got, _, code := run(rctx, t, m, id, "cat marker")
			rcancel()
			if code != 0 || strings.TrimSpace(got) != "planted" {
				t.Fatalf("marker after the restart: %q (exit %d)", got, code)
			}
			if err := m.Destroy(ctx, id); err != nil {
				t.Fatal(err)
			}
			// assertNoLeftovers (t.Cleanup) checks the host.
		})
	}
}
