package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
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

// SnapshotTemplate makes a new template from a running or paused sandbox:
// its disk and memory as they are now. Creating a sandbox from the
// template is then a restore of that state, not a boot. The source carries
// on as it was.
func (m *Manager) SnapshotTemplate(ctx context.Context, id, name string) error {
	if !validID(name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q: use 1-40 of a-z, 0-9 and '-'", name)
	}
	src, err := m.lookup(id)
	if err != nil {
		return err
	}
	final := filepath.Join(m.cfg.Dir, "images", name)
	if _, err := os.Stat(final); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "template %q already exists", name)
	}
	// Built beside its final place and renamed in whole, so a template is
	// either complete or absent.
	tmp := filepath.Join(m.cfg.Dir, "images", "."+name+".tmp-"+newID())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, errdefs.FromOS(err))
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	if _, _, err := m.capture(ctx, src, filepath.Join(tmp, "snapshot"), snapshot.KindTemplate); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	// The VMMs of sandboxes made from the template read its disk (their
	// overlay's backing file) under their own identities.
	if err := os.Chmod(filepath.Join(tmp, "snapshot"), 0o755); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, errdefs.FromOS(err))
	}
	m.log.Info("template snapshotted", "sandbox_id", id, "template", name, "duration", time.Since(start))
	return nil
}

// DeleteTemplate removes a template made by SnapshotTemplate, with its
// disk and memory. A template that sandboxes still use (their disks lie
// over its disk) is FailedPrecondition; base images are not deleted here.
func (m *Manager) DeleteTemplate(ctx context.Context, name string) error {
	if !validID(name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q", name)
	}
	if !m.hasSnapshot(name) {
		return errdefs.New(errdefs.ErrNotFound, "template %q has no snapshot to delete", name)
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
	if err := os.RemoveAll(filepath.Join(m.cfg.Dir, "images", name)); err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	return nil
}

// createFromTemplate restores a new sandbox from a template's snapshot.
// vCPUs, memory and disk are the template's; a request asking for others
// is InvalidArgument (a snapshot cannot change them).
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
		dir: m.sandboxDir(req.ID),
		rec: &record{
			ID: req.ID, Template: req.Template, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
			DiskMB: req.DiskMB, Env: env, Metadata: maps.Clone(req.Metadata),
			Network: req.Network, Timeout: req.Timeout, OnTimeout: req.OnTimeout,
			State: state.Starting, KernelVersion: tpl.KernelVersion,
			// The restored envd holds the template source's token until
			// init installs this sandbox's own.
			AccessToken: tpl.AccessToken,
			CreatedAt:   m.cfg.Clock.Now().UTC(),
		},
	}
	if err := m.register(sb); err != nil {
		return Info{}, err
	}
	defer sb.mu.Unlock()
	log := m.log.With("sandbox_id", req.ID, "template", req.Template)
	start := time.Now()
	frozen := filepath.Join(snapDir, snapshotDiskName)
	steps := append([]plan.Step{
		{
			Name: "dir",
			Do: func(context.Context) error {
				if err := os.Mkdir(sb.dir, 0o700); err != nil {
					return errdefs.FromOS(err)
				}
				return os.Mkdir(vmDir(sb.dir), 0o700)
			},
			Undo: func(context.Context) error { return os.RemoveAll(sb.dir) },
		},
		{
			Name: "record",
			Do:   func(context.Context) error { return writeRecord(sb.dir, sb.rec) },
		},
		{
			// An O(1) overlay over the template's frozen disk, which the
			// template keeps (DeleteTemplate refuses while it is in use).
			Name: "disk",
			Do: func(ctx context.Context) error {
				d, err := disk.Clone(ctx, frozen, overlayPath(sb.dir))
				if err != nil {
					return err
				}
				sb.rec.Disk, sb.rec.DiskFormat = d.Path, string(disk.QCOW2)
				return nil
			},
		},
	}, m.restoreSteps(sb, snap, envdclient.InitRequest{AccessToken: newToken(), EnvVars: env, DefaultUser: defaultUser})...)
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
		out = append(out, t)
	}
	return out, ctx.Err()
}
