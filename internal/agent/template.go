package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// templateSnapshotDir is where a template's memory snapshot lives, if it
// has one: images/<template>/snapshot/.
func (m *Manager) templateSnapshotDir(name string) string {
	return filepath.Join(m.cfg.Dir, "images", name, "snapshot")
}

// hasSnapshot reports whether template name carries a memory snapshot.
func (m *Manager) hasSnapshot(name string) bool {
	_, err := os.Stat(filepath.Join(m.templateSnapshotDir(name), snapshot.ManifestName))
	return err == nil
}

// checkTeamID validates a team id a request carries ("" is none).
func checkTeamID(team string) error {
	if team != "" && !validID(team) {
		return errdefs.New(errdefs.ErrInvalidArgument, "team_id %q: use 1-40 of a-z, 0-9 and '-'", team)
	}
	return nil
}

// checkSandboxTeam refuses a request made for team on a sandbox recorded
// for another. Either side empty passes: a local caller names no team, and
// a sandbox created before teams were recorded has none (the control plane
// checks the team itself; this is the second line).
func checkSandboxTeam(r *record, team string) error {
	if team != "" && r.TeamID != "" && team != r.TeamID {
		return errdefs.New(errdefs.ErrPermissionDenied, "sandbox %s belongs to another team", r.ID)
	}
	return nil
}

// checkTemplateOwner refuses to use a snapshot template for any team but
// the one that owns it, including a request that names no team: its
// memory and disk are that team's data. Templates with no owner (taken by
// a local caller) are usable by all, like base images.
func checkTemplateOwner(name, owner, team string) error {
	if owner != "" && team != owner {
		return errdefs.New(errdefs.ErrPermissionDenied, "template %q belongs to another team", name)
	}
	return nil
}

// templateOwner reads the team that owns snapshot template name from its
// manifest ("" for none).
func (m *Manager) templateOwner(ctx context.Context, name string) (string, error) {
	snap, err := snapshot.Open(ctx, m.templateSnapshotDir(name))
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	var tpl record
	if err := json.Unmarshal(snap.Manifest.Spec, &tpl); err != nil {
		return "", fmt.Errorf("template %s: decode spec: %w", name, err)
	}
	return tpl.TeamID, nil
}

// SnapshotTemplate is SnapshotTemplateAs for a local caller: the template
// is owned by the source sandbox's team, if it has one.
func (m *Manager) SnapshotTemplate(ctx context.Context, id, name string) error {
	return m.SnapshotTemplateAs(ctx, "", id, name)
}

// SnapshotTemplateAs makes a new template from a running or paused
// sandbox: its disk and memory as they are now. Creating a sandbox from
// the template is then a restore of that state, not a boot. The source
// carries on as it was. The template is owned by team (or, when team is
// empty, by the source's team) and only that team can create from it; a
// source recorded for another team is PermissionDenied.
//
// Its files are root's alone (directories 0700, files 0600): no VMM opens
// them, since every sandbox made from it gets a private copy of its disk.
func (m *Manager) SnapshotTemplateAs(ctx context.Context, team, id, name string) error {
	if !validID(name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q: use 1-40 of a-z, 0-9 and '-'", name)
	}
	if err := checkTeamID(team); err != nil {
		return err
	}
	src, err := m.lookup(id)
	if err != nil {
		return err
	}
	if err := checkSandboxTeam(src.rec, team); err != nil {
		return err
	}
	final := filepath.Join(m.cfg.Dir, "images", name)
	if _, err := os.Stat(final); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "template %q already exists", name)
	}
	// Built beside its final place and renamed in whole, so a template is
	// either complete or absent.
	tmp := filepath.Join(m.cfg.Dir, "images", "."+name+".tmp-"+newID())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, errdefs.FromOS(err))
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	if _, _, err := m.capture(ctx, src, filepath.Join(tmp, "snapshot"), snapshot.KindTemplate, team); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	if err := restrictTree(tmp); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	// Killed here, the template is whole but unpublished (under its
	// temporary name): Recover removes it.
	m.cfg.Faults.Hit(ctx, faultpoint.AgentSnapshotWritten)
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, errdefs.FromOS(err))
	}
	m.log.Info("template snapshotted", "sandbox_id", id, "template", name, "duration", time.Since(start))
	return nil
}

// restrictTree gives everything under dir to root with no access for
// anyone else (directories 0700, files 0600). Symlinks are not followed.
func restrictTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(p, 0, 0); err != nil {
			return fmt.Errorf("restrict %s: %w", p, err)
		}
		mode := os.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("restrict %s: %w", p, err)
		}
		return nil
	})
}

// DeleteTemplate is DeleteTemplateAs for a local caller.
func (m *Manager) DeleteTemplate(ctx context.Context, name string) error {
	return m.DeleteTemplateAs(ctx, "", name)
}

// DeleteTemplateAs removes a template made by SnapshotTemplate, with its
// disk and memory. A template that sandboxes still use is
// FailedPrecondition; base images are not deleted here. A team, when
// given, must own the template (PermissionDenied otherwise).
func (m *Manager) DeleteTemplateAs(ctx context.Context, team, name string) error {
	if !validID(name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q", name)
	}
	if err := checkTeamID(team); err != nil {
		return err
	}
	tc, err := m.templateConfig(name)
	if err != nil {
		return err
	}
	if !m.hasSnapshot(name) && tc == nil {
		return errdefs.New(errdefs.ErrNotFound, "template %q is neither a snapshot nor a built template", name)
	}
	if team != "" {
		var owner string
		if tc != nil {
			owner = tc.TeamID
		} else if owner, err = m.templateOwner(ctx, name); err != nil {
			return err
		}
		if err := checkTemplateOwner(name, owner, team); err != nil {
			return err
		}
	}
	list, err := m.List(ctx)
	if err != nil {
		return err
	}
	for _, in := range list {
		if in.Template == name {
			return errdefs.New(errdefs.ErrFailedPrecondition, "template %q is in use by sandbox %s", name, in.ID)
		}
	}
	if tc != nil {
		// A built template's image may back other disks than its own
		// sandboxes': a snapshot template taken from one of them, and
		// every sandbox created from that.
		user, err := m.imageUser(ctx, filepath.Join(m.cfg.Dir, "images", name, "rootfs.ext4"))
		if err != nil {
			return err
		}
		if user != "" {
			return errdefs.New(errdefs.ErrFailedPrecondition, "template %q is in use: %s reads its image", name, user)
		}
	}
	if err := os.RemoveAll(filepath.Join(m.cfg.Dir, "images", name)); err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	return nil
}

// imageUser names a disk on this host outside img's own directory whose
// backing chain holds img: a sandbox's, a hibernated sandbox's or another
// template's snapshot ("" for none).
func (m *Manager) imageUser(ctx context.Context, img string) (string, error) {
	img = filepath.Clean(img)
	own := filepath.Dir(img) + string(filepath.Separator)
	var disks []string
	for _, pattern := range []string{
		filepath.Join(m.cfg.Dir, "sandboxes", "*", vmDirName, "*.qcow2"),
		filepath.Join(m.cfg.Dir, "snapshots", "*", "*.qcow2"),
		filepath.Join(m.cfg.Dir, "images", "*", "snapshot", "*.qcow2"),
	} {
		found, err := filepath.Glob(pattern)
		if err != nil {
			return "", fmt.Errorf("find disks: %w", err)
		}
		disks = append(disks, found...)
	}
	for _, d := range disks {
		if strings.HasPrefix(d, own) {
			continue
		}
		chain, err := disk.Chain(ctx, d)
		if err != nil {
			if _, serr := os.Stat(d); errors.Is(serr, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			return "", err
		}
		if slices.Contains(chain[1:], img) {
			rel, _ := filepath.Rel(m.cfg.Dir, d)
			return rel, nil
		}
	}
	return "", nil
}

// createFromTemplate restores a new sandbox from a template's snapshot.
// vCPUs, memory and disk are the template's; a request asking for others
// is InvalidArgument (a snapshot cannot change them). A request for any
// team but the template's owner is PermissionDenied.
func (m *Manager) createFromTemplate(ctx context.Context, req CreateRequest) (Info, error) {
	snapDir := m.templateSnapshotDir(req.Template)
	snap, err := snapshot.Open(ctx, snapDir)
	if err != nil {
		return Info{}, fmt.Errorf("template %s: %w", req.Template, err)
	}
	var tpl record
	if err := json.Unmarshal(snap.Manifest.Spec, &tpl); err != nil {
		return Info{}, fmt.Errorf("template %s: decode spec: %w", req.Template, err)
	}
	if err := checkTemplateOwner(req.Template, tpl.TeamID, req.TeamID); err != nil {
		return Info{}, err
	}
	tc, err := m.templateConfig(req.Template)
	if err != nil {
		return Info{}, err
	}
	if tc != nil {
		m.touchCopy(req.Template)
	}
	for _, f := range []struct {
		name      string
		req, have *int
	}{{"vcpus", &req.VCPUs, &tpl.VCPUs}, {"memory_mb", &req.MemoryMB, &tpl.MemoryMB}, {"disk_mb", &req.DiskMB, &tpl.DiskMB}} {
		if *f.req == 0 {
			*f.req = *f.have
		} else if *f.req != *f.have {
			return Info{}, errdefs.New(errdefs.ErrInvalidArgument,
				"template %s is a snapshot with %s %d: leave %s unset or ask for %d", req.Template, f.name, *f.have, f.name, *f.have)
		}
	}
	if err := req.normalize(); err != nil {
		return Info{}, err
	}
	release, err := m.admit(ctx, req.ID, 1, req.MemoryMB, req.DiskMB)
	if err != nil {
		return Info{}, err
	}
	defer release()
	if err := snap.Compatible(m.cfg.Driver.Name(), tpl.KernelVersion); err != nil {
		return Info{}, err
	}

	env := maps.Clone(tpl.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, req.Env)
	env[sandboxIDEnv] = req.ID
	sb := &sandbox{
		owner: m,
		dir:   m.sandboxDir(req.ID),
		rec: &record{
			ID: req.ID, TeamID: req.TeamID, Template: req.Template, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
			DiskMB: req.DiskMB, Env: env, Metadata: maps.Clone(req.Metadata),
			Network: req.Network, Timeout: req.Timeout, OnTimeout: req.OnTimeout,
			State: state.Starting, KernelVersion: tpl.KernelVersion,
			// The restored envd holds the template source's token until
			// init installs this sandbox's own.
			AccessToken: tpl.AccessToken,
			CreatedAt:   m.cfg.Clock.Now().UTC(),
		},
	}
	if tc != nil {
		sb.rec.User, sb.rec.Workdir = tc.User, tc.Workdir
	}
	if err := m.register(sb); err != nil {
		return Info{}, err
	}
	defer sb.mu.Unlock()
	log := m.log.With("sandbox_id", req.ID, "template", req.Template)
	start := time.Now()
	// A private copy of the template's frozen disk (a reflink where the
	// filesystem has them), as for a fork: the template's files stay
	// root's alone, never opened by a VMM, so no other sandbox's VMM (of
	// whatever team) can read them.
	frozen := filepath.Join(snapDir, snapshotDiskName)
	steps := append(m.diskFromSnapshotSteps(sb, frozen),
		m.restoreSteps(sb, snap, envdclient.InitRequest{AccessToken: newToken(), EnvVars: env, DefaultUser: sb.rec.init().DefaultUser, DefaultWorkdir: sb.rec.Workdir})...)
	steps = append(steps, runningStep(sb))
	if err := plan.Run(ctx, log, steps); err != nil {
		m.forget(req.ID)
		log.Warn("sandbox create from template failed", "err", err)
		return Info{}, fmt.Errorf("create sandbox %s from template %s: %w", req.ID, req.Template, err)
	}
	sb.touch(m.cfg.Clock.Now())
	log.Info("sandbox created from template snapshot", "duration", time.Since(start), "address", sb.slot.HostIP())
	return sb.info(), nil
}

// Template is one template on this host.
type Template struct {
	Name string
	// Snapshot is true when creating from it is a restore, not a boot.
	Snapshot bool
	// DiskBytes is what the template takes on the host's disk.
	DiskBytes int64
	// Owner is the team a built template belongs to ("" for base images
	// and snapshot templates, whose owner is in their manifest).
	Owner string
}

// Templates lists the templates on this host: base images and snapshots.
func (m *Manager) Templates(ctx context.Context) ([]Template, error) {
	entries, err := os.ReadDir(filepath.Join(m.cfg.Dir, "images"))
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	var out []Template
	for _, e := range entries {
		name := e.Name()
		if !validID(name) {
			continue // in-progress builds (".x.tmp-...") and strays
		}
		dir, err := filepath.EvalSymlinks(filepath.Join(m.cfg.Dir, "images", name))
		if err != nil {
			continue
		}
		t := Template{Name: name, Snapshot: m.hasSnapshot(name)}
		if _, err := os.Stat(filepath.Join(dir, "rootfs.ext4")); err != nil && !t.Snapshot {
			continue
		}
		t.DiskBytes, _ = snapshot.DirUsage(dir)
		if tc, err := m.templateConfig(name); err == nil && tc != nil {
			t.Owner = tc.TeamID
		}
		out = append(out, t)
	}
	return out, ctx.Err()
}

// restrictOldTemplates makes the files of snapshot templates taken before
// templates were private (their directories 0755, the disk 0444) root's
// alone, as SnapshotTemplateAs makes new ones. A template that a sandbox
// still reads directly (made from it before sandboxes got a private copy
// of the template's disk: its overlay's backing file is the template's)
// is left as it is, or that sandbox's VMM could not reopen its disk; the
// next start after it is gone restricts it. Run after adoption.
func (m *Manager) restrictOldTemplates() error {
	images := filepath.Join(m.cfg.Dir, "images")
	entries, err := os.ReadDir(images)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	inUse := map[string]bool{}
	m.mu.Lock()
	for _, sb := range m.sandboxes {
		// Template and dir never change after a sandbox is made.
		if _, err := os.Stat(filepath.Join(vmDir(sb.dir), "base.qcow2")); err != nil {
			inUse[sb.rec.Template] = true
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, e := range entries {
		name := e.Name()
		// A symlink is a base image kept elsewhere, never a snapshot. A
		// built template's image is read by its sandboxes' VMMs (as base
		// images are); its snapshot was made private when it was taken.
		if !validID(name) || !e.IsDir() || inUse[name] || !m.hasSnapshot(name) {
			continue
		}
		if tc, err := m.templateConfig(name); err != nil || tc != nil {
			continue
		}
		dir := filepath.Join(images, name)
		st, err := os.Lstat(dir)
		if err != nil || st.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := restrictTree(dir); err != nil {
			errs = append(errs, fmt.Errorf("restrict template %s: %w", name, err))
			continue
		}
		m.log.Info("template files made private", "template", name)
	}
	return errors.Join(errs...)
}
