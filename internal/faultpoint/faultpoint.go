// Package faultpoint lets a test stop a daemon at a named point inside an
// operation, so that it can kill the daemon (or PostgreSQL, or the other
// daemon) exactly there and check what the system does after the restart.
//
// A daemon is armed only when its configuration names a fault-point
// directory (WRENN_CP_FAULTPOINT_DIR, WRENN_AGENT_FAULTPOINT_DIR); without
// one every Hit is a nil-pointer no-op. The protocol is files, so the test
// and the daemon need no channel between them beyond the directory:
//
//	test:   touch DIR/<point>.arm
//	daemon: at the point, renames <point>.arm to <point>.hit (one-shot:
//	        only the first caller to get there stops), writes its pid into
//	        it, and waits
//	test:   sees <point>.hit, does its damage (SIGKILL the daemon, stop
//	        PostgreSQL, ...), then touches DIR/<point>.release
//	daemon: if still alive, removes <point>.release and carries on
//
// Points are named by the constants below, each placed where a crash
// leaves the most to repair; tests/faults drives them.
package faultpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The points. cp- points are in the control plane's sandbox service,
// agent- points in the host agent's sandbox manager.
const (
	// CPCreateRecorded: the sandbox row is inserted (starting); the agent
	// has not been asked yet.
	CPCreateRecorded = "cp-create-recorded"
	// CPCreateStarted: the agent created the VM; the row still says
	// starting.
	CPCreateStarted = "cp-create-started"
	// CPForkStarted: the agent forked; the forks' rows are not written.
	CPForkStarted = "cp-fork-started"
	// CPTransitionDone: the agent paused, resumed or hibernated the
	// sandbox; the row still has the old state.
	CPTransitionDone = "cp-transition-done"
	// CPSnapshotStarted: the agent wrote the snapshot template; the
	// template row is not written.
	CPSnapshotStarted = "cp-snapshot-started"
	// CPDeleteDestroyed: the agent destroyed the VM; the row is not
	// stopped yet.
	CPDeleteDestroyed = "cp-delete-destroyed"

	// AgentCreateBooted: the VM runs and its record says starting; the
	// create has not answered.
	AgentCreateBooted = "agent-create-booted"
	// AgentForkRestored: the forks' VMs are restored; none has answered.
	AgentForkRestored = "agent-fork-restored"
	// AgentPauseStopped: the VM is stopped (vCPUs halted) and its record
	// still says running.
	AgentPauseStopped = "agent-pause-stopped"
	// AgentResumeRestored: a hibernated sandbox's VM is restored; its
	// record says starting (the resume under way), not yet running.
	AgentResumeRestored = "agent-resume-restored"
	// AgentHibernateWritten: the memory snapshot is on disk; the VM still
	// runs (paused) and the record says paused.
	AgentHibernateWritten = "agent-hibernate-written"
	// AgentSnapshotWritten: a template's snapshot files are written, not
	// yet published under the template's name.
	AgentSnapshotWritten = "agent-snapshot-written"
	// AgentDestroyStopping: the record says stopping; the VM still runs.
	AgentDestroyStopping = "agent-destroy-stopping"
)

// Points is one daemon's armed-points directory. A nil *Points is valid
// and never stops.
type Points struct {
	dir  string
	log  *slog.Logger
	poll time.Duration
}

// New returns the points under dir, or nil when dir is empty.
func New(dir string, log *slog.Logger) *Points {
	if dir == "" {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Points{dir: dir, log: log, poll: 10 * time.Millisecond}
}

// Hit stops the caller at point name when a test armed it, until the test
// releases it or ctx ends.
func (p *Points) Hit(ctx context.Context, name string) {
	if p == nil {
		return
	}
	arm, hit := p.path(name, "arm"), p.path(name, "hit")
	if err := os.Rename(arm, hit); err != nil {
		return // not armed, or another caller took it
	}
	if err := os.WriteFile(hit, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		p.log.Warn("fault point: record the hit", "point", name, "err", err)
	}
	p.log.Warn("fault point reached; waiting for the test", "point", name)
	release := p.path(name, "release")
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		if err := os.Remove(release); err == nil {
			p.log.Warn("fault point released", "point", name)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Points) path(name, suffix string) string {
	return filepath.Join(p.dir, name+"."+suffix)
}

// The test's side.

// Arm makes the next Hit of point in a daemon using dir stop.
func Arm(dir, point string) error {
	return os.WriteFile(filepath.Join(dir, point+".arm"), nil, 0o644)
}

// Disarm removes an arm nobody reached (a test's cleanup).
func Disarm(dir, point string) error {
	err := os.Remove(filepath.Join(dir, point+".arm"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// WaitHit waits until a daemon stops at point and returns its pid.
func WaitHit(ctx context.Context, dir, point string) (int, error) {
	path := filepath.Join(dir, point+".hit")
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid, nil
			}
			// Renamed but the pid not written yet: look again.
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for fault point %s: %w", point, ctx.Err())
		case <-t.C:
		}
	}
}

// Release lets the daemon stopped at point go on (if it still lives) and
// clears the hit, so the point can be armed again.
func Release(dir, point string) error {
	if err := os.Remove(filepath.Join(dir, point+".hit")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear fault point %s: %w", point, err)
	}
	return os.WriteFile(filepath.Join(dir, point+".release"), nil, 0o644)
}
