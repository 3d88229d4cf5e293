package agent

// Build VMs: the microVMs a template build runs its recipe's steps in
// (internal/templates/builder drives them). A build VM is a sandbox the
// agent keeps to itself: it is never listed to the control plane, sends
// no events, is not reaped while a step runs, and does not survive an
// agent restart (its build ended with the agent's stream to the control
// plane).
//
// Its root disk is an overlay on the build's private work image, moved
// into the VM's directory while it runs (so only this VM's identity can
// read it, as a template's private copy is for its sandboxes). SaveLayer
// keeps what the VM has written so far as a cached layer after each step;
// Finish folds it into the work image and hands the work image back.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/snapshot"
	"github.com/wrenn/wrenn/internal/templates/builder"
)

// PurposeBuild marks a build VM's record.
const PurposeBuild = "build"

// buildVMTimeout is a build VM's idle timeout: far beyond any step, so
// the reaper only ever takes a VM whose builder is gone.
const buildVMTimeout = 6 * time.Hour

// BuildVM is a running build VM.
type BuildVM struct {
	m    *Manager
	id   string
	work string // where Work goes back to ("" for a template VM)
}

// workImageName is the work image's name inside the VM's directory.
const workImageName = "work.raw"

// StartBuildVM boots a build VM and returns once its envd answers.
func (m *Manager) StartBuildVM(ctx context.Context, spec builder.VMSpec) (builder.VM, error) {
	if err := m.cfg.Network.CheckPolicy(spec.Network); err != nil {
		return nil, err
	}
	if (spec.Work == "") == (spec.Template == "") {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "build vm %s: give a work image or a template, not both", spec.ID)
	}
	req := CreateRequest{
		ID: spec.ID, Template: spec.Template, TeamID: spec.TeamID, VCPUs: spec.VCPUs, MemoryMB: spec.MemoryMB,
		DiskMB: spec.DiskMB, Env: spec.Env, Network: spec.Network, Timeout: buildVMTimeout,
	}
	if req.Template == "" {
		req.Template = DefaultTemplate // only for normalize; the disk is the work image
	}
	if err := req.normalize(); err != nil {
		return nil, err
	}
	release, err := m.admit(ctx, req.ID, 1, req.MemoryMB, req.DiskMB)
	if err != nil {
		return nil, err
	}
	defer release()
	kernel, err := kernels.Latest(filepath.Join(m.cfg.Dir, "kernels"))
	if err != nil {
		return nil, err
	}
	sb := &sandbox{
		owner: m,
		dir:   m.sandboxDir(req.ID),
		rec: &record{
			ID: req.ID, TeamID: req.TeamID, Template: spec.Template, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
			DiskMB: req.DiskMB, Env: maps.Clone(req.Env), Network: req.Network, Timeout: req.Timeout,
			OnTimeout: OnTimeoutKill, State: state.Starting, KernelVersion: kernel.Version,
			AccessToken: newToken(), CreatedAt: m.cfg.Clock.Now().UTC(), Purpose: PurposeBuild,
			User: spec.User, Workdir: spec.Workdir,
		},
	}
	var diskStep plan.Step
	if spec.Work != "" {
		diskStep = m.workDiskStep(sb, spec.Work)
	} else {
		base := filepath.Join(m.cfg.Dir, "images", spec.Template, "rootfs.ext4")
		if _, err := os.Stat(base); err != nil {
			return nil, errdefs.New(errdefs.ErrNotFound, "template %q not found", spec.Template)
		}
		diskStep = m.overlayDiskStep(sb, base)
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	m.mu.Lock()
	if _, exists := m.sandboxes[req.ID]; exists {
		m.mu.Unlock()
		return nil, errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s already exists", req.ID)
	}
	m.sandboxes[req.ID] = sb
	m.mu.Unlock()
	start := time.Now()
	if err := plan.Run(ctx, m.log.With("sandbox_id", req.ID, "purpose", PurposeBuild), m.createSteps(sb, diskStep, kernel, sb.rec.init())); err != nil {
		m.forget(req.ID)
		return nil, fmt.Errorf("start build vm %s: %w", req.ID, err)
	}
	sb.touch(m.cfg.Clock.Now())
	m.log.Info("build vm started", "sandbox_id", req.ID, "duration", time.Since(start))
	return &BuildVM{m: m, id: req.ID, work: spec.Work}, nil
}

// workDiskStep moves the work image into the VM's directory (readable
// there by the VM's identity alone) and puts the VM's overlay on it.
func (m *Manager) workDiskStep(sb *sandbox, work string) plan.Step {
	r := sb.rec
	inside := filepath.Join(vmDir(sb.dir), workImageName)
	return plan.Step{
		Name: "disk",
		Do: func(ctx context.Context) error {
			if err := os.Rename(work, inside); err != nil {
				return fmt.Errorf("take work image: %w", errdefs.FromOS(err))
			}
			if err := os.Chmod(inside, 0o444); err != nil {
				return fmt.Errorf("take work image: %w", errdefs.FromOS(err))
			}
			d, err := disk.NewOverlay(ctx, inside, overlayPath(sb.dir), r.DiskMB)
			if err != nil {
				return err
			}
			r.Disk, r.DiskFormat = d.Path, string(disk.QCOW2)
			return nil
		},
		Undo: func(context.Context) error {
			if r.Disk != "" {
				_ = disk.Remove(r.Disk)
			}
			return giveBack(inside, work)
		},
	}
}

// giveBack returns the work image to the build's directory (root's alone).
func giveBack(inside, work string) error {
	if err := os.Chmod(inside, 0o600); err != nil {
		return fmt.Errorf("return work image: %w", errdefs.FromOS(err))
	}
	if err := os.Rename(inside, work); err != nil {
		return fmt.Errorf("return work image: %w", errdefs.FromOS(err))
	}
	return nil
}

// ID is the VM's sandbox id.
func (b *BuildVM) ID() string { return b.id }

// Envd is a client of the VM's envd.
func (b *BuildVM) Envd(ctx context.Context) (*envdclient.Client, error) {
	return b.m.Envd(ctx, b.id)
}

// Address is where the host reaches the guest's ports.
func (b *BuildVM) Address(ctx context.Context) (string, error) {
	in, err := b.m.Get(ctx, b.id)
	if err != nil {
		return "", err
	}
	return in.Address, nil
}

// Touch keeps the VM from the reaper while a long step runs.
func (b *BuildVM) Touch() { _ = b.m.Touch(b.id) }

// flush writes the guest's page cache to its virtual disk; sb.mu is held.
func (m *Manager) flushGuest(ctx context.Context, sb *sandbox) error {
	if sb.envd == nil {
		return nil
	}
	res, err := sb.envd.Run(ctx, envdclient.RunRequest{Cmd: "/bin/sync", User: "root"})
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("sync exited with %d", res.ExitCode)
	}
	if err != nil {
		return fmt.Errorf("flush the guest's disk: %w", err)
	}
	return nil
}

// SaveLayer keeps what the VM's disk holds now as a cached layer: a qcow2
// at layer whose backing file is parent (of parentFormat), the image the
// VM's work image was made from. The guest is flushed and paused while its
// overlay is copied, so the layer is what the guest had written when
// SaveLayer was called. A layer holds every change since the VM started,
// not only the last step's, which keeps backing chains one file deep per
// VM however many steps it ran.
func (b *BuildVM) SaveLayer(ctx context.Context, layer, parent string, parentFormat disk.Format) error {
	m := b.m
	sb, err := m.acquire(ctx, b.id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	if err := m.flushGuest(ctx, sb); err != nil {
		return fmt.Errorf("save layer: %w", err)
	}
	if err := sb.machine.Pause(ctx); err != nil {
		return fmt.Errorf("save layer: pause: %w", err)
	}
	err = disk.SaveLayer(ctx, sb.rec.Disk, layer, parent, parentFormat)
	if rerr := sb.machine.Resume(context.WithoutCancel(ctx)); rerr != nil {
		err = errors.Join(err, fmt.Errorf("save layer: resume: %w", rerr))
	}
	return err
}

// Finish ends the VM's steps: the guest is flushed and its VM stopped,
// what it wrote is folded into the work image, and the work image goes
// back where StartBuildVM took it from. The VM is destroyed either way.
func (b *BuildVM) Finish(ctx context.Context) error {
	if b.work == "" {
		return errdefs.New(errdefs.ErrFailedPrecondition, "build vm %s has no work image", b.id)
	}
	m := b.m
	sb, err := m.acquire(ctx, b.id)
	if err != nil {
		return err
	}
	defer sb.mu.Unlock()
	if err := m.flushGuest(ctx, sb); err != nil {
		return errors.Join(fmt.Errorf("finish build vm: %w", err), m.destroyLocked(ctx, sb))
	}
	if err := m.stopMachine(ctx, sb); err != nil {
		return errors.Join(fmt.Errorf("finish build vm: %w", err), m.destroyLocked(ctx, sb))
	}
	inside := filepath.Join(vmDir(sb.dir), workImageName)
	err = func() error {
		if err := disk.CommitInto(ctx, sb.rec.Disk); err != nil {
			return err
		}
		return giveBack(inside, b.work)
	}()
	if err != nil {
		return errors.Join(fmt.Errorf("finish build vm: %w", err), m.destroyLocked(ctx, sb))
	}
	return m.destroyLocked(ctx, sb)
}

// SnapshotTemplate takes the running VM's memory and disk as the memory
// snapshot of template name, whose image the VM booted from: creating a
// sandbox from the template then restores this state.
func (b *BuildVM) SnapshotTemplate(ctx context.Context, name string) error {
	m := b.m
	sb, err := m.lookup(b.id)
	if err != nil {
		return err
	}
	final := m.templateSnapshotDir(name)
	if _, err := os.Stat(final); err == nil {
		return errdefs.New(errdefs.ErrAlreadyExists, "template %q already has a snapshot", name)
	}
	tmp := filepath.Join(m.cfg.Dir, "images", name, ".snapshot.tmp-"+newID())
	defer os.RemoveAll(tmp)
	if _, _, err := m.capture(ctx, sb, tmp, snapshot.KindTemplate, sb.rec.TeamID); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	if err := restrictTree(tmp); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("snapshot template %s: %w", name, errdefs.FromOS(err))
	}
	return nil
}

// Discard destroys the VM and, with it, the work image it holds.
func (b *BuildVM) Discard(ctx context.Context) error {
	err := b.m.Destroy(ctx, b.id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// The Manager is the builder's source of VMs.
var _ builder.VMs = (*Manager)(nil)
