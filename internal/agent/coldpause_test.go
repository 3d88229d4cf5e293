//go:build linux

package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/clocktest"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestPauseDropMemory: a filesystem-only pause (E2B's memory: false) of a
// real microVM stops its VMM and frees its memory (no memory file is
// kept), survives an agent restart, and resume cold-boots it from its own
// disk: the file written before the pause is there, the background process
// is not, exec works, and the address, access token and env are the same.
// Fork and hibernate refuse it. Along the way the metrics sampler samples
// it only while it runs and keeps its history across the pause.
func TestPauseDropMemory(t *testing.T) {
	h := newHarness(t)
	clock := clocktest.New(time.Now())
	h.clock, h.metricsInterval = clock, 5*time.Second
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)

	info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256, Env: map[string]string{"GREETING": "hello"},
		Metadata: map[string]string{"k": "v"}, Timeout: 7 * time.Minute, OnTimeout: agent.OnTimeoutPause})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := info.ID
	t.Cleanup(func() { _ = m.Destroy(ctxFor(t, time.Minute), id) })

	// Written without a sync of its own: the pause must make it durable.
	if _, _, code := run(ctx, t, m, id, "echo kept > /home/user/kept.txt"); code != 0 {
		t.Fatalf("write file: exit %d", code)
	}
	c, err := m.Envd(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, envdclient.RunRequest{Cmd: "/bin/sh", Args: []string{"-c", "while true; do sleep 1; done"}, Tag: "bg"}); err != nil {
		t.Fatalf("start background process: %v", err)
	}
	m.SampleMetrics(ctx)
	if hist, _ := m.MetricsHistory(id, time.Time{}, time.Time{}); len(hist) != 1 || hist[0].MemTotal <= 0 || hist[0].CPUCount != 1 {
		t.Fatalf("history of the running sandbox: %+v", hist)
	}

	if err := m.PauseDropMemory(ctx, id); err != nil {
		t.Fatalf("pause without memory: %v", err)
	}
	paused, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if paused.State != state.Paused || !paused.MemoryDropped || paused.PID != 0 || paused.Address != info.Address {
		t.Fatalf("after the pause: %+v", paused)
	}
	if err := syscall.Kill(info.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("VMM pid %d after the pause: kill -0 = %v, want ESRCH (gone)", info.PID, err)
	}
	if _, err := os.Stat(filepath.Join(h.memoryDir(), id+".mem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("guest memory file after the pause: %v, want none", err)
	}
	if snaps, _ := filepath.Glob(filepath.Join(h.dir, "snapshots", "*")); len(snaps) != 0 {
		t.Fatalf("snapshots kept by a pause without memory: %v", snaps)
	}
	for name, err := range map[string]error{
		"second pause":     m.PauseDropMemory(ctx, id),
		"memory pause":     m.Pause(ctx, id),
		"hibernate":        m.Hibernate(ctx, id),
		"snapshot":         m.SnapshotTemplate(ctx, id, "from-dropped"),
		"fork":             func() error { _, err := m.Fork(ctx, id, 1); return err }(),
		"envd (exec path)": func() error { _, err := m.Envd(ctx, id); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("%s of a sandbox paused without memory: %v, want FailedPrecondition", name, err)
		}
	}
	// Not sampled while paused, history kept.
	clock.Advance(5 * time.Second)
	m.SampleMetrics(ctx)
	if hist, _ := m.MetricsHistory(id, time.Time{}, time.Time{}); len(hist) != 1 {
		t.Fatalf("history while paused: %+v", hist)
	}

	// An agent restart keeps it paused without memory, on its slot.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = h.agent(ctx)
	if got, err := m.Get(ctx, id); err != nil || got.State != state.Paused || !got.MemoryDropped || got.Address != info.Address {
		t.Fatalf("after an agent restart: %+v, %v", got, err)
	}

	start := time.Now()
	if err := m.Resume(ctx, id); err != nil {
		t.Fatalf("resume (cold boot): %v", err)
	}
	t.Logf("cold resume took %v", time.Since(start))
	got, err := m.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != state.Running || got.MemoryDropped || got.Address != info.Address || got.AccessToken != info.AccessToken ||
		got.PID == 0 || got.PID == info.PID || got.Metadata["k"] != "v" || got.Timeout != 7*time.Minute || got.OnTimeout != agent.OnTimeoutPause {
		t.Fatalf("after the resume: %+v (before: %+v)", got, info)
	}
	if out, _, _ := run(ctx, t, m, id, "cat /home/user/kept.txt; echo $GREETING"); out != "kept\nhello\n" {
		t.Fatalf("after the resume: file and env = %q", out)
	}
	c, err = m.Envd(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	procs, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.Tag == "bg" {
			t.Fatalf("the background process survived a pause without memory: %+v", procs)
		}
	}
	if _, err := os.Stat(filepath.Join(h.memoryDir(), id+".mem")); err != nil {
		t.Fatalf("guest memory file of the resumed sandbox: %v", err)
	}
	// Sampled again once running (the history starts afresh after the
	// restart: it is kept in memory only).
	clock.Advance(5 * time.Second)
	m.SampleMetrics(ctx)
	if hist, _ := m.MetricsHistory(id, time.Time{}, time.Time{}); len(hist) != 1 {
		t.Fatalf("history after the resume: %+v", hist)
	}
	if err := m.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}

// TestPauseDropMemoryInterrupted: an agent that died inside a pause
// without memory, after recording it but before its VMM was stopped (or
// inside the cold boot of a resume), leaves a record that says paused
// without memory and a VMM that still runs. The next agent stops that VMM,
// frees its memory and keeps the sandbox paused without memory, resumable.
func TestPauseDropMemoryInterrupted(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)
	info, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	id := info.ID
	if err := m.Close(); err != nil { // the agent goes; the VMM runs on
		t.Fatal(err)
	}
	recPath := filepath.Join(h.dir, "sandboxes", id, "sandbox.json")
	b, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec["state"], rec["memory_dropped"] = "paused", true
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recPath, b, 0o600); err != nil {
		t.Fatal(err)
	}

	m = h.agent(ctx)
	t.Cleanup(func() { _ = m.Destroy(ctxFor(t, time.Minute), id) })
	got, err := m.Get(ctx, id)
	if err != nil || got.State != state.Paused || !got.MemoryDropped || got.PID != 0 || got.Address != info.Address {
		t.Fatalf("after the restart: %+v, %v", got, err)
	}
	// The VMM was this test process's child (the first "agent" booted it
	// in-process and let go of it), so once stopped it is a zombie until
	// the test exits; a real restarted agent is not its parent.
	if st := procState(info.PID); st != "" && st != "Z" {
		t.Fatalf("VMM pid %d left running by the restart: state %s", info.PID, st)
	}
	if _, err := os.Stat(filepath.Join(h.memoryDir(), id+".mem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("guest memory file after the restart: %v, want none", err)
	}
	if err := m.Resume(ctx, id); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if out, _, _ := run(ctx, t, m, id, "echo up"); out != "up\n" {
		t.Fatalf("exec after the resume: %q", out)
	}
	if err := m.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy: %v", err)
	}
}

// procState is a process's state letter from /proc/<pid>/stat ("R", "S",
// "Z", ...), or "" when there is no such process.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}
