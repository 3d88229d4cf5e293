package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/disk"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/plan"
	"github.com/wrenn/wrenn/internal/tailfile"
	"github.com/wrenn/wrenn/internal/vmm"
)

// OnTimeout is what the reaper does with a sandbox idle past its timeout.
type OnTimeout string

const (
	OnTimeoutKill  OnTimeout = "kill"
	OnTimeoutPause OnTimeout = "pause"
)

// CreateRequest describes a new sandbox. Zero fields take the defaults.
type CreateRequest struct {
	// ID, when set, names the sandbox (the control plane chooses ids);
	// otherwise one is generated.
	ID       string
	Template string
	// TeamID is the team the sandbox is for, recorded with it. A snapshot
	// template owned by a team can only be used by a request for that
	// team; base images by any.
	TeamID    string
	VCPUs     int
	MemoryMB  int
	DiskMB    int
	Env       map[string]string
	Metadata  map[string]string
	Network   network.Policy
	Timeout   time.Duration
	OnTimeout OnTimeout
}

func (r *CreateRequest) normalize() error {
	if r.ID == "" {
		r.ID = newID()
	} else if !validID(r.ID) {
		return errdefs.New(errdefs.ErrInvalidArgument, "sandbox id %q: use 1-40 of a-z, 0-9 and '-'", r.ID)
	}
	if err := checkTeamID(r.TeamID); err != nil {
		return err
	}
	if r.Template == "" {
		r.Template = DefaultTemplate
	}
	if !validID(r.Template) {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name %q: use a-z, 0-9 and '-'", r.Template)
	}
	if r.VCPUs == 0 {
		r.VCPUs = DefaultVCPUs
	}
	if r.MemoryMB == 0 {
		r.MemoryMB = DefaultMemoryMB
	}
	if r.DiskMB == 0 {
		r.DiskMB = DefaultDiskMB
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultTimeout
	}
	if r.OnTimeout == "" {
		r.OnTimeout = OnTimeoutKill
	}
	switch {
	case r.VCPUs < 1 || r.VCPUs > MaxVCPUs:
		return errdefs.New(errdefs.ErrInvalidArgument, "vcpus %d: must be 1-%d", r.VCPUs, MaxVCPUs)
	case r.MemoryMB < 128 || r.MemoryMB > MaxMemoryMB:
		return errdefs.New(errdefs.ErrInvalidArgument, "memory_mb %d: must be 128-%d", r.MemoryMB, MaxMemoryMB)
	case r.DiskMB < 256 || r.DiskMB > MaxDiskMB:
		return errdefs.New(errdefs.ErrInvalidArgument, "disk_mb %d: must be 256-%d", r.DiskMB, MaxDiskMB)
	case r.Timeout < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "timeout must not be negative")
	case r.OnTimeout != OnTimeoutKill && r.OnTimeout != OnTimeoutPause:
		return errdefs.New(errdefs.ErrInvalidArgument, "on_timeout %q: must be kill or pause", r.OnTimeout)
	}
	return r.Network.Validate()
}

// Create boots a sandbox and returns once its envd answers and holds the
// sandbox's access token and environment.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (Info, error) {
	// A tenant's allow_out may not reach past the operator's egress
	// ceiling: refuse it here, before anything is built (network.Pool.Setup
	// enforces the ceiling but does not refuse, for recorded policies).
	if err := m.cfg.Network.CheckPolicy(req.Network); err != nil {
		return Info{}, err
	}
	if req.Template == "" {
		req.Template = DefaultTemplate
	}
	if validID(req.Template) && m.hasSnapshot(req.Template) {
		if req.ID == "" {
			req.ID = newID()
		}
		return m.createFromTemplate(ctx, req)
	}
	var tc *TemplateConfig
	if validID(req.Template) {
		var err error
		if tc, err = m.templateConfig(req.Template); err != nil {
			return Info{}, err
		}
	}
	env := maps.Clone(req.Env)
	if tc != nil {
		if err := checkTemplateOwner(req.Template, tc.TeamID, req.TeamID); err != nil {
			return Info{}, err
		}
		m.touchCopy(req.Template)
		env = templateDefaults(tc, &req)
	}
	if err := req.normalize(); err != nil {
		return Info{}, err
	}
	release, err := m.admit(ctx, req.ID, 1, req.MemoryMB, req.DiskMB)
	if err != nil {
		return Info{}, err
	}
	defer release()
	base := filepath.Join(m.cfg.Dir, "images", req.Template, "rootfs.ext4")
	if _, err := os.Stat(base); err != nil {
		return Info{}, errdefs.New(errdefs.ErrNotFound, "template %q not found", req.Template)
	}
	kernel, err := kernels.Latest(filepath.Join(m.cfg.Dir, "kernels"))
	if err != nil {
		return Info{}, err
	}

	sb := &sandbox{
		owner: m,
		dir:   m.sandboxDir(req.ID),
		rec: &record{
			ID: req.ID, TeamID: req.TeamID, Template: req.Template, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
			DiskMB: req.DiskMB, Env: env, Metadata: maps.Clone(req.Metadata),
			Network: req.Network, Timeout: req.Timeout, OnTimeout: req.OnTimeout,
			State: state.Starting, KernelVersion: kernel.Version, AccessToken: newToken(),
			CreatedAt: m.cfg.Clock.Now().UTC(),
		},
	}
	if tc != nil {
		sb.rec.User, sb.rec.Workdir = tc.User, tc.Workdir
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	m.mu.Lock()
	if _, exists := m.sandboxes[req.ID]; exists {
		m.mu.Unlock()
		return Info{}, errdefs.New(errdefs.ErrAlreadyExists, "sandbox %s already exists", req.ID)
	}
	m.sandboxes[req.ID] = sb
	m.mu.Unlock()

	log := m.log.With("sandbox_id", req.ID)
	start := time.Now()
	if err := plan.Run(ctx, log, m.createSteps(sb, m.overlayDiskStep(sb, base), kernel, sb.rec.init())); err != nil {
		m.forget(req.ID)
		log.Warn("sandbox create failed", "err", err, "duration", time.Since(start))
		return Info{}, fmt.Errorf("create sandbox %s: %w", req.ID, err)
	}
	sb.touch(m.cfg.Clock.Now())
	log.Info("sandbox created", "duration", time.Since(start), "address", sb.slot.HostIP())
	return sb.info(), nil
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sandboxes, id)
}

// createSteps boots a sandbox. Every resource's undo sits beside its
// creation, so a failure at any step leaves nothing behind.
func (m *Manager) createSteps(sb *sandbox, diskStep plan.Step, kernel kernels.Kernel, init envdclient.InitRequest) []plan.Step {
	r := sb.rec
	return []plan.Step{
		{
			Name: "dir",
			Do: func(context.Context) error {
				if err := os.Mkdir(sb.dir, 0o700); err != nil {
					return err
				}
				return os.Mkdir(vmDir(sb.dir), 0o700)
			},
			Undo: func(context.Context) error { return os.RemoveAll(sb.dir) },
		},
		{
			Name: "record",
			Do:   func(context.Context) error { return writeRecord(sb.dir, r) },
		},
		diskStep,
		m.networkStep(sb),
		m.confineStep(sb),
		{
			Name: "memory",
			Do:   func(ctx context.Context) error { return m.prepareMemory(ctx, sb, "") },
			Undo: func(context.Context) error { return m.removeMemory(r.ID) },
		},
		m.cgroupStep(sb),
		{
			Name: "boot",
			Do: func(ctx context.Context) error {
				mach, err := m.cfg.Driver.Boot(ctx, m.vmSpec(sb, kernel.Path))
				if err != nil {
					return err
				}
				sb.machine = mach
				return writeRecord(sb.dir, r)
			},
			Undo: func(ctx context.Context) error { return m.stopMachine(ctx, sb) },
		},
		m.envdStep(sb, init),
		// Killed here, the VM runs under a starting record: Recover
		// stops it and reports the sandbox stopped (the create never
		// answered).
		m.faultStep(faultpoint.AgentCreateBooted),
		runningStep(sb),
	}
}

// overlayDiskStep gives the sandbox its own copy-on-write disk over base.
func (m *Manager) overlayDiskStep(sb *sandbox, base string) plan.Step {
	r := sb.rec
	return plan.Step{
		Name: "disk",
		Do: func(ctx context.Context) error {
			if m.rawDisks() {
				// Firecracker reads raw files only: a reflink where
				// the filesystem has them, else a sparse copy.
				d, _, err := disk.NewRaw(ctx, base, filepath.Join(vmDir(sb.dir), "rootfs.raw"), r.DiskMB)
				if err != nil {
					return err
				}
				r.Disk, r.DiskFormat = d.Path, string(disk.Raw)
				return nil
			}
			d, err := disk.NewOverlay(ctx, base, overlayPath(sb.dir), r.DiskMB)
			if err != nil {
				return err
			}
			r.Disk, r.DiskFormat = d.Path, string(disk.QCOW2)
			return nil
		},
		Undo: func(context.Context) error {
			if r.Disk == "" {
				return nil
			}
			return disk.Remove(r.Disk)
		},
	}
}

// limits derives the VMM's cgroup limits from the sandbox's size.
func (m *Manager) limits(r *record) cgroup.Limits {
	return cgroup.Limits{
		CPUQuota:    float64(r.VCPUs),
		MemoryBytes: int64(r.MemoryMB+m.cfg.VMMOverheadMB) << 20,
		Pids:        vmmPids,
	}
}

func (m *Manager) vmSpec(sb *sandbox, kernelPath string) vmm.Spec {
	r := sb.rec
	spec := vmm.Spec{
		ID:         r.ID,
		Dir:        vmDir(sb.dir),
		Kernel:     kernelPath,
		KernelArgs: "root=/dev/vda rw init=/usr/local/sbin/wrenn-init quiet wrenn.hostname=" + r.ID + " " + m.cfg.KernelArgs,
		RootDisk:   rootDisk(r),
		VCPUs:      r.VCPUs,
		MemoryMB:   r.MemoryMB,
		MemoryFile: m.memoryPath(r.ID),
		// Every guest has the same MAC as it has the same IP: the slot's
		// namespace isolates them, and a snapshot resumes anywhere.
		Net: &vmm.NetDevice{TAP: network.TapName, MAC: network.GuestMAC.String()},
	}
	spec.UID, spec.GID = m.vmmIdentity(r.Slot)
	spec.Groups = m.vmmGroups()
	if sb.slot != nil {
		spec.NetNS = sb.slot.NetNSPath()
	}
	if sb.group != nil {
		spec.Confine = sb.group.Add
	}
	return spec
}

// rootDisk is the sandbox's root disk as the VMM sees it.
func rootDisk(r *record) vmm.Disk {
	format := r.DiskFormat
	if format == "" {
		format = string(disk.QCOW2)
	}
	return vmm.Disk{Path: r.Disk, Format: format}
}

// rawDisks reports whether the VMM driver needs raw disk files.
func (m *Manager) rawDisks() bool { return m.cfg.Driver.Name() == "firecracker" }

// overlayPath is the sandbox's qcow2 root disk, in the VMM's directory.
func overlayPath(sandboxDir string) string { return filepath.Join(vmDir(sandboxDir), "rootfs.qcow2") }

// envdClient reaches the guest through its slot's host address.
func (m *Manager) envdClient(sb *sandbox) *envdclient.Client {
	url := "http://" + net.JoinHostPort(sb.slot.HostIP().String(), fmt.Sprint(envdclient.Port))
	return envdclient.New(url,
		envdclient.WithAccessToken(sb.rec.AccessToken),
		envdclient.WithUser(defaultUser),
	)
}

// networkStep takes a network slot and builds its network with the
// sandbox's egress policy.
func (m *Manager) networkStep(sb *sandbox) plan.Step {
	r := sb.rec
	return plan.Step{
		Name: "network",
		Do: func(ctx context.Context) error {
			slot, err := m.cfg.Network.Acquire(ctx)
			if err != nil {
				return err
			}
			if err := m.cfg.Network.Setup(ctx, slot, r.Network); err != nil {
				return errors.Join(err, m.cfg.Network.Release(ctx, slot))
			}
			sb.slot, r.Slot = slot, slot.Index
			// Recorded at once: an agent killed later in the boot or
			// restore finds the slot its VMM uses (Recover adopts the
			// slot of a resume it finishes).
			if err := writeRecord(sb.dir, r); err != nil {
				return errors.Join(err, m.releaseSlot(ctx, sb))
			}
			return nil
		},
		Undo: func(ctx context.Context) error { return m.releaseSlot(ctx, sb) },
	}
}

// confineStep hands the VM's files and TAP to the VMM identity of the
// sandbox's slot; from here on only it (and root) can open them. Undone,
// the files go back to root: the next sandbox in this slot runs as the
// same identity and must not be able to open them.
func (m *Manager) confineStep(sb *sandbox) plan.Step {
	return plan.Step{
		Name: "confine",
		Do: func(ctx context.Context) error {
			if err := resetVMDir(sb.dir); err != nil {
				return err
			}
			uid, gid := m.vmmIdentity(sb.rec.Slot)
			if err := m.cfg.Network.SetTAPOwner(ctx, sb.slot, uid, gid); err != nil {
				return err
			}
			return confineDirs(sb.dir, sb.rec.Disk, uid, gid)
		},
		Undo: func(context.Context) error { return unconfineDirs(sb.dir) },
	}
}

// cgroupStep puts the sandbox's resource limits in place for its VMM.
func (m *Manager) cgroupStep(sb *sandbox) plan.Step {
	return plan.Step{
		Name: "cgroup",
		Do: func(ctx context.Context) error {
			g, err := m.cfg.Cgroups.Create(ctx, sb.rec.ID, m.limits(sb.rec))
			if err != nil {
				return err
			}
			sb.group = g
			return nil
		},
		Undo: func(ctx context.Context) error { return m.removeGroup(ctx, sb) },
	}
}

// envdStep waits for the guest's envd and sends it init. An access token
// in init replaces the one the client holds once envd accepts it.
// errVMMExitedBooting ends the wait for envd when the VMM has exited.
var errVMMExitedBooting = errdefs.New(errdefs.ErrUnavailable, "the VM exited before its envd answered (the guest crashed while booting)")

func (m *Manager) envdStep(sb *sandbox, init envdclient.InitRequest) plan.Step {
	return plan.Step{
		Name: "envd",
		Do: func(ctx context.Context) error {
			sb.envd = m.envdClient(sb)
			readyCtx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
			defer cancel()
			// A guest that dies while booting (a kernel panic exits QEMU,
			// which runs with -no-reboot) ends the wait at once rather
			// than after ReadyTimeout.
			readyCtx, stop := context.WithCancelCause(readyCtx)
			mach := sb.machine // the watcher must not read sb after the step
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				if mach != nil && mach.Wait(readyCtx) == nil {
					stop(errVMMExitedBooting)
				}
			}()
			defer func() {
				stop(nil)
				<-watched
			}()
			if err := sb.envd.WaitReady(readyCtx); err != nil {
				if cause := context.Cause(readyCtx); errors.Is(cause, errVMMExitedBooting) {
					err = cause
				}
				// The directory goes on failure: keep what explains it.
				console, _ := tailfile.Read(filepath.Join(vmDir(sb.dir), "console.log"), 2048)
				return fmt.Errorf("wait for envd at %s: %w (console tail: %q)", sb.slot.HostIP(), err, console)
			}
			if err := sb.envd.Init(ctx, init); err != nil {
				return err
			}
			if init.AccessToken != "" {
				sb.rec.AccessToken = init.AccessToken
			}
			return nil
		},
	}
}
