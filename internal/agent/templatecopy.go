package agent

// Copies of built templates between hosts: the home host exports a
// version (transfer.Pack), the control plane relays it, and the host that
// will run a sandbox of it imports it: verified (the image's digest, the
// snapshot's manifest), its snapshot's frozen disk pointed at the image's
// path here, and published under the same name.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/snapshot"
	"github.com/wrenn/wrenn/internal/templates/transfer"
)

// ExportTemplate writes built template name, which team must own, to w.
func (m *Manager) ExportTemplate(ctx context.Context, team, name string, w io.Writer) error {
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
	if tc == nil {
		return errdefs.New(errdefs.ErrNotFound, "built template %q not found", name)
	}
	if err := checkTemplateOwner(name, tc.TeamID, team); err != nil {
		return err
	}
	if tc.Pending {
		return errdefs.New(errdefs.ErrFailedPrecondition, "template %q is still being built", name)
	}
	return transfer.Pack(ctx, filepath.Join(m.cfg.Dir, "images", name), w)
}

// ImportTemplate reads a version exported by another host as template
// name, for team, and publishes it once it checks out: its image must
// have digest. A template already here with that digest is success.
func (m *Manager) ImportTemplate(ctx context.Context, team, name, digest string, r io.Reader) error {
	if !validID(name) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q", name)
	}
	if err := checkTeamID(team); err != nil {
		return err
	}
	if digest == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "import template %s: no digest to check it against", name)
	}
	final := filepath.Join(m.cfg.Dir, "images", name)
	if tc, err := m.templateConfig(name); err == nil && tc != nil && tc.Digest == digest && !tc.Pending {
		return nil // a concurrent import (or the home host itself)
	}
	if _, err := os.Lstat(final); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "template %q exists here with other content", name)
	}
	tmp := filepath.Join(m.cfg.Dir, "images", "."+name+".tmp-"+newID())
	if err := transfer.Unpack(ctx, r, tmp, digest); err != nil {
		return fmt.Errorf("import template %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	tc, err := readTemplateConfig(tmp)
	if err != nil {
		return fmt.Errorf("import template %s: %w", name, err)
	}
	if tc.TeamID != team || tc.Pending {
		return errdefs.New(errdefs.ErrPermissionDenied, "import template %s: it is not a finished template of team %s", name, team)
	}
	// The mark of a copy: CollectCopies removes copies nobody uses; its
	// time is the copy's last use.
	if err := os.WriteFile(filepath.Join(tmp, importedMark), nil, 0o600); err != nil {
		return fmt.Errorf("import template %s: %w", name, err)
	}
	snapDir := filepath.Join(tmp, "snapshot")
	if _, err := os.Stat(snapDir); err == nil {
		if err := m.adoptSnapshot(ctx, snapDir, filepath.Join(final, "rootfs.ext4")); err != nil {
			return fmt.Errorf("import template %s: %w", name, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if errors.Is(err, os.ErrExist) {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q was imported meanwhile", name)
		}
		return fmt.Errorf("import template %s: %w", name, errdefs.FromOS(err))
	}
	ok = true
	m.log.Info("template imported", "template", name, "team_id", team)
	return nil
}

// adoptSnapshot makes a received template snapshot this host's (its
// bytes were checked on the way: transfer.Unpack): its frozen disk is
// pointed at image (the path it will have here), its manifest sealed again
// over the changed disk header and the files as written here (holes
// where the sender had zeros), checked, and made root's alone.
func (m *Manager) adoptSnapshot(ctx context.Context, dir, image string) error {
	b, err := os.ReadFile(filepath.Join(dir, snapshot.ManifestName))
	if err != nil {
		return fmt.Errorf("received snapshot: %w", err)
	}
	var man snapshot.Manifest
	if err := json.Unmarshal(b, &man); err != nil {
		return fmt.Errorf("received snapshot: decode its manifest: %w", err)
	}
	if man.Driver != m.cfg.Driver.Name() {
		return errdefs.New(errdefs.ErrFailedPrecondition, "the template's snapshot was written by VMM driver %q; this host runs %q", man.Driver, m.cfg.Driver.Name())
	}
	if _, err := kernels.Find(filepath.Join(m.cfg.Dir, "kernels"), man.KernelVersion); err != nil {
		return fmt.Errorf("the template's snapshot needs guest kernel %s: %w", man.KernelVersion, err)
	}
	if err := disk.Repoint(ctx, transfer.FrozenDisk(filepath.Dir(dir)), image, disk.Raw); err != nil {
		return err
	}
	if _, err := snapshot.Write(ctx, dir, man); err != nil {
		return fmt.Errorf("seal received snapshot: %w", err)
	}
	if _, err := snapshot.Open(ctx, dir); err != nil {
		return fmt.Errorf("received snapshot: %w", err)
	}
	return restrictTree(dir)
}

// readTemplateConfig reads dir's template.json.
func readTemplateConfig(dir string) (*TemplateConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, templateConfigName))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", templateConfigName, err)
	}
	var c TemplateConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", templateConfigName, err)
	}
	return &c, nil
}

// importedMark marks a template directory as a copy from another host.
const importedMark = ".imported"

// DefaultCopyTTL is how long a copy of another host's template stays
// without a create from it.
const DefaultCopyTTL = 24 * time.Hour

// touchCopy records a use of template name if it is a copy.
func (m *Manager) touchCopy(name string) {
	now := m.cfg.Clock.Now()
	_ = os.Chtimes(filepath.Join(m.cfg.Dir, "images", name, importedMark), now, now)
}

// CollectCopies removes the copies of other hosts' templates that no
// create used for ttl and that nothing here reads (no sandbox of them, no
// disk backed by their image); the control plane copies one again when it
// needs it. It returns the names removed.
func (m *Manager) CollectCopies(ctx context.Context, ttl time.Duration) ([]string, error) {
	marks, err := filepath.Glob(filepath.Join(m.cfg.Dir, "images", "*", importedMark))
	if err != nil {
		return nil, fmt.Errorf("find template copies: %w", err)
	}
	var removed []string
	var errs []error
	for _, mark := range marks {
		fi, err := os.Stat(mark)
		if err != nil || m.cfg.Clock.Now().Sub(fi.ModTime()) < ttl {
			continue
		}
		name := filepath.Base(filepath.Dir(mark))
		list, err := m.List(ctx)
		if err != nil {
			return removed, err
		}
		inUse := slices.ContainsFunc(list, func(in Info) bool { return in.Template == name })
		if !inUse {
			user, err := m.imageUser(ctx, filepath.Join(m.cfg.Dir, "images", name, "rootfs.ext4"))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			inUse = user != ""
		}
		if inUse {
			continue
		}
		if err := os.RemoveAll(filepath.Dir(mark)); err != nil {
			errs = append(errs, fmt.Errorf("remove template copy %s: %w", name, err))
			continue
		}
		m.log.Info("unused template copy removed", "template", name, "last_used", fi.ModTime())
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}
