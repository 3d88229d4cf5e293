package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/snapshot"
)

// MaxForks bounds one Fork call.
const MaxForks = 32

// forkParallelism bounds how many forks restore at once.
const forkParallelism = 4

// Fork is ForkAs for a local caller (no team check).
func (m *Manager) Fork(ctx context.Context, id string, n int) ([]Info, error) {
	return m.ForkAs(ctx, "", id, n)
}

// ForkAs makes n new, independent sandboxes from a running or paused one,
// memory and disk included: each continues from the source's state at the
// moment of the fork, with its own network slot, identity (id and envd
// access token; WRENN_SANDBOX_ID in its environment) and files. The source
// keeps running (or stays paused); it is frozen only while its state,
// memory and disk are copied. A fork of a fork works. A team, when given,
// must be the source's (PermissionDenied otherwise); the forks belong to
// the source's team.
func (m *Manager) ForkAs(ctx context.Context, team, id string, n int) ([]Info, error) {
	if n < 1 || n > MaxForks {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "fork count %d: must be 1-%d", n, MaxForks)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = newID()
	}
	return m.fork(ctx, team, id, ids)
}

// ForkNamed is ForkAs with the forks' ids chosen by the caller (the
// control plane, which records them before the forks exist): each well
// formed, distinct and not in use here, else InvalidArgument or
// AlreadyExists and no fork is made.
func (m *Manager) ForkNamed(ctx context.Context, team, id string, ids []string) ([]Info, error) {
	if len(ids) < 1 || len(ids) > MaxForks {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "fork count %d: must be 1-%d", len(ids), MaxForks)
	}
	seen := make(map[string]bool, len(ids))
	for _, fid := range ids {
		if !validID(fid) || fid == id || seen[fid] {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "fork id %.64q: want distinct ids of 1-40 of a-z, 0-9 and '-', not the source's", fid)
		}
		seen[fid] = true
		if _, err := m.lookup(fid); err == nil {
			return nil, errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s already exists", fid)
		}
	}
	return m.fork(ctx, team, id, ids)
}

func (m *Manager) fork(ctx context.Context, team, id string, ids []string) ([]Info, error) {
	n := len(ids)
	if err := checkTeamID(team); err != nil {
		return nil, err
	}
	src, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	if err := checkSandboxTeam(src.rec, team); err != nil {
		return nil, err
	}
	release, err := m.admit(ctx, "fork-"+id+"-"+newID(), n, src.rec.MemoryMB, src.rec.DiskMB)
	if err != nil {
		return nil, err
	}
	defer release()
	start := time.Now()
	dir := filepath.Join(m.cfg.Dir, "snapshots", forkSnapshotPrefix+id+"-"+newID())
	snap, srcRec, err := m.capture(ctx, src, dir, snapshot.KindForkSource, team)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := snapshot.Remove(snap.Dir); err != nil {
			m.log.Warn("remove fork snapshot", "sandbox_id", id, "err", err)
		}
	}()
	captured := time.Since(start)

	infos := make([]Info, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(forkParallelism)
	for i := range n {
		g.Go(func() error {
			info, err := m.restoreFork(gctx, ids[i], snap, srcRec)
			infos[i] = info
			return err
		})
	}
	err = g.Wait()
	if err == nil {
		// Every fork is up and still recorded starting. Killed here, a
		// restarted agent removes them all (and the fork snapshot) and
		// reports them stopped: the fork never answered.
		m.cfg.Faults.Hit(ctx, faultpoint.AgentForkRestored)
		err = m.forksRunning(ctx, infos)
	}
	if err != nil {
		// All or nothing: the forks that did come up go again.
		var errs []error
		for _, in := range infos {
			if in.ID != "" {
				errs = append(errs, m.Destroy(context.WithoutCancel(ctx), in.ID))
			}
		}
		return nil, errors.Join(append([]error{fmt.Errorf("fork %s: %w", id, err)}, errs...)...)
	}
	m.log.Info("sandbox forked", "sandbox_id", id, "forks", n, "source_frozen", captured, "duration", time.Since(start))
	return infos, nil
}

// capture freezes a running or paused sandbox just long enough to save its
// device state and copy its memory and disk into dir (which must not
// exist), sealed with a manifest of the given kind, then lets it carry on
// as it was. It returns the verified snapshot and the source's record.
// The manifest's spec (and the returned record) name owner as the team,
// or the source's own team when owner is empty.
func (m *Manager) capture(ctx context.Context, src *sandbox, dir string, kind snapshot.Kind, owner string) (*snapshot.Snapshot, record, error) {
	if err := lockCtx(ctx, &src.mu); err != nil {
		return nil, record{}, err
	}
	defer src.mu.Unlock()
	r := src.rec
	if r.State != state.Running && r.State != state.Paused {
		return nil, record{}, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is %s: only a running or paused sandbox can be forked or snapshotted", r.ID, r.State)
	}
	if r.MemoryDropped {
		// Forking from the disk alone would be a cold boot of a copy;
		// not offered: resume it (a cold boot), then fork the running one.
		return nil, record{}, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is paused without its memory (a filesystem-only pause): resume it, then fork or snapshot it", r.ID)
	}
	if rootDisk(r).Format != string(disk.QCOW2) {
		return nil, record{}, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has a raw disk: forks and template snapshots need qcow2 disks (the qemu driver)", r.ID)
	}
	if r.State == state.Running {
		if err := src.machine.Pause(ctx); err != nil {
			return nil, record{}, fmt.Errorf("fork %s: pause: %w", r.ID, err)
		}
		defer func() {
			if err := src.machine.Resume(context.WithoutCancel(ctx)); err != nil {
				m.log.Error("resume fork source", "sandbox_id", r.ID, "err", err)
			}
		}()
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, record{}, fmt.Errorf("fork %s: %w", r.ID, errdefs.FromOS(err))
	}
	err := func() error {
		if err := src.machine.Snapshot(ctx, dir); err != nil {
			return fmt.Errorf("save device state: %w", err)
		}
		if err := snapshot.CopySparse(ctx, m.memoryPath(r.ID), filepath.Join(dir, snapshot.MemoryName)); err != nil {
			return fmt.Errorf("copy memory: %w", err)
		}
		if _, _, err := disk.Freeze(ctx, r.Disk, filepath.Join(dir, snapshotDiskName)); err != nil {
			return fmt.Errorf("freeze disk: %w", err)
		}
		spec := *r
		if owner != "" {
			spec.TeamID = owner
		}
		return m.writeManifest(ctx, dir, kind, &spec, "")
	}()
	if err != nil {
		return nil, record{}, errors.Join(fmt.Errorf("fork %s: %w", r.ID, err), snapshot.Remove(dir))
	}
	snap, err := m.openSnapshot(ctx, dir, r.KernelVersion)
	if err != nil {
		return nil, record{}, errors.Join(fmt.Errorf("fork %s: %w", r.ID, err), snapshot.Remove(dir))
	}
	out := *r
	if owner != "" {
		out.TeamID = owner
	}
	return snap, out, nil
}

// restoreFork brings up one fork from a fork snapshot.
func (m *Manager) restoreFork(ctx context.Context, id string, snap *snapshot.Snapshot, src record) (Info, error) {
	rec := src
	rec.ID = id
	rec.Env = maps.Clone(src.Env)
	rec.Metadata = maps.Clone(src.Metadata)
	rec.State = state.Starting
	rec.Version = 0 // a new sandbox: its own versions
	rec.Slot = 0
	rec.CreatedAt = m.cfg.Clock.Now().UTC()
	// The guest's envd still holds the source's token: the client presents
	// it once to install the fork's own.
	token := newToken()
	rec.AccessToken = src.AccessToken
	sb := &sandbox{owner: m, dir: m.sandboxDir(id), rec: &rec}
	if err := m.register(sb); err != nil {
		return Info{}, err
	}
	defer sb.mu.Unlock()

	env := maps.Clone(src.Env)
	if env == nil {
		env = map[string]string{}
	}
	env[sandboxIDEnv] = id
	rec.Env = env
	steps := append(m.diskFromSnapshotSteps(sb, filepath.Join(snap.Dir, snapshotDiskName)),
		m.restoreSteps(sb, snap, envdclient.InitRequest{AccessToken: token, EnvVars: env})...)
	if err := plan.Run(ctx, m.log.With("sandbox_id", id), steps); err != nil {
		m.forget(id)
		return Info{}, fmt.Errorf("restore fork %s: %w", id, err)
	}
	sb.touch(m.cfg.Clock.Now())
	return sb.info(), nil
}

// snapshotDiskName is the frozen disk inside a fork or template snapshot.
const snapshotDiskName = "disk.qcow2"

// sandboxIDEnv tells the guest its own sandbox id.
const sandboxIDEnv = "WRENN_SANDBOX_ID"

// register adds a new sandbox to the manager, locked by the caller's
// goroutine until it unlocks sb.mu; an id in use is AlreadyExists.
func (m *Manager) register(sb *sandbox) error {
	sb.mu.Lock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, exists := m.sandboxes[sb.rec.ID]; exists {
		sb.mu.Unlock()
		return errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s already exists", sb.rec.ID)
	}
	m.sandboxes[sb.rec.ID] = sb
	return nil
}

// diskFromSnapshotSteps make a new sandbox's directory and its disk: a
// private copy of the snapshot's frozen disk (base.qcow2, so the sandbox
// never depends on another's files) with a writable overlay on top.
func (m *Manager) diskFromSnapshotSteps(sb *sandbox, frozen string) []plan.Step {
	r := sb.rec
	base := filepath.Join(vmDir(sb.dir), "base.qcow2")
	return []plan.Step{
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
			Do:   func(context.Context) error { return writeRecord(sb.dir, r) },
		},
		{
			Name: "disk",
			Do: func(ctx context.Context) error {
				fd, _, err := disk.Freeze(ctx, frozen, base)
				if err != nil {
					return err
				}
				d, err := disk.CloneFrozen(ctx, fd, overlayPath(sb.dir))
				if err != nil {
					return err
				}
				r.Disk, r.DiskFormat = d.Path, string(disk.QCOW2)
				return nil
			},
		},
	}
}
