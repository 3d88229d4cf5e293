//go:build linux

package agent_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// TestTemplateOwnedByTeam: a snapshot template belongs to the team of the
// request that made it. Only that team can create from it, fork, resume
// or snapshot its sandboxes; its files are root's alone; and a sandbox
// made from it still runs (its VMM never opens the template's files).
// Before templates carried an owner, team B's create from team A's
// template restored A's memory and disk.
func TestTemplateOwnedByTeam(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)
	const teamA, teamB = "1c7f3e0a-4b1d-4a5e-9f6b-2d8c1e7a9b01", "7e2a9c4d-0f3b-4d8e-a1c6-5b9f2e8d3c02"
	src, err := m.Create(ctx, agent.CreateRequest{MemoryMB: 256, TeamID: teamA})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, code := run(ctx, t, m, src.ID, "echo team-a-secret > secret"); code != 0 {
		t.Fatal("write secret")
	}

	// Another team cannot reach team A's sandbox through the agent.
	if err := m.SnapshotTemplateAs(ctx, teamB, src.ID, "t-stolen"); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("team B snapshots team A's sandbox = %v, want PermissionDenied", err)
	}
	if _, err := m.ForkAs(ctx, teamB, src.ID, 1); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("team B forks team A's sandbox = %v, want PermissionDenied", err)
	}
	if err := m.ResumeAs(ctx, teamB, src.ID); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("team B resumes team A's sandbox = %v, want PermissionDenied", err)
	}

	const tpl = "t-owned"
	if err := m.SnapshotTemplateAs(ctx, teamA, src.ID, tpl); err != nil {
		t.Fatalf("snapshot template: %v", err)
	}
	if err := m.Destroy(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	// No one but root may read a team's memory and disk on the host.
	err = filepath.WalkDir(filepath.Join(h.dir, "images", tpl), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %s: group or others can open a team's template", p, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, team := range []string{teamB, ""} {
		if _, err := m.Create(ctx, agent.CreateRequest{Template: tpl, TeamID: team}); !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Fatalf("create from team A's template for team %q = %v, want PermissionDenied", team, err)
		}
	}
	if err := m.DeleteTemplateAs(ctx, teamB, tpl); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("team B deletes team A's template = %v, want PermissionDenied", err)
	}

	sb, err := m.Create(ctx, agent.CreateRequest{Template: tpl, TeamID: teamA})
	if err != nil {
		t.Fatalf("create from the team's own template: %v", err)
	}
	if out, _, _ := run(ctx, t, m, sb.ID, "cat secret"); out != "team-a-secret\n" {
		t.Fatalf("sandbox from template reads %q", out)
	}
	// Its forks belong to team A too.
	if _, err := m.ForkAs(ctx, teamB, sb.ID, 1); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("team B forks a sandbox made from team A's template = %v, want PermissionDenied", err)
	}
	if err := m.Destroy(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteTemplateAs(ctx, teamA, tpl); err != nil {
		t.Fatalf("delete template: %v", err)
	}
}
