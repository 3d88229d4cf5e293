// Package hostinfo measures this host for the control plane: what it is
// (specs: CPUs, memory, disk, VMM, kernel, images, agent version) and how
// loaded it is (usage: sandboxes by state, resources reserved by them and
// still available). GetHostStatus and the heartbeat report the same
// figures from here.
package hostinfo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/version"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Sandboxes is what the collector reads from the sandbox manager.
type Sandboxes interface {
	List(ctx context.Context) ([]agent.Info, error)
	Templates(ctx context.Context) ([]agent.Template, error)
}

// Config describes the host to a Collector.
type Config struct {
	// Dir is WRENN_DIR: disk figures are its filesystem's, the kernel
	// version is the newest under Dir/kernels.
	Dir string
	// VMM is the driver in use ("qemu" or "firecracker").
	VMM string
	// Accelerator is "kvm" or "tcg".
	Accelerator string
	Sandboxes   Sandboxes
	// ProcDir is where meminfo and loadavg are read; "/proc" when empty.
	ProcDir string
	// MemoryDir is the tmpfs holding guest RAM (the manager's MemoryDir);
	// its size and free space are reported for admission. Empty: not
	// reported.
	MemoryDir string
}

// Collector takes readings of the host.
type Collector struct {
	cfg Config
}

// New returns a Collector.
func New(cfg Config) *Collector {
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	return &Collector{cfg: cfg}
}

// Status is one reading, in the control plane's types.
type Status struct {
	Specs     *hostagentv1.HostSpecs
	Usage     *hostagentv1.HostUsage
	Templates []*hostagentv1.Template
	// SandboxIDs are every sandbox the agent holds, in creation order.
	SandboxIDs []string
	// SandboxStates are their states, by id.
	SandboxStates map[string]hostagentv1.SandboxState
	// SandboxVersions are their states' versions (agent.Event.Version).
	SandboxVersions map[string]int64
}

// Collect reads specs, usage, templates and sandboxes. It fails rather
// than report a partial picture: the control plane reconciles against the
// sandbox list, and a missing sandbox there would look like a lost one.
func (c *Collector) Collect(ctx context.Context) (Status, error) {
	infos, err := c.cfg.Sandboxes.List(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("list sandboxes: %w", err)
	}
	tmpls, err := c.cfg.Sandboxes.Templates(ctx)
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // no images/ yet: no templates
		return Status{}, fmt.Errorf("list templates: %w", err)
	}
	mem, err := c.meminfo()
	if err != nil {
		return Status{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c.cfg.Dir, &st); err != nil {
		return Status{}, fmt.Errorf("statfs %s: %w", c.cfg.Dir, err)
	}
	load1, err := c.load1()
	if err != nil {
		return Status{}, err
	}

	out := Status{
		Specs: &hostagentv1.HostSpecs{
			Arch:         runtime.GOARCH,
			Cpus:         int32(runtime.NumCPU()),
			MemoryBytes:  mem["MemTotal"],
			DiskBytes:    int64(st.Blocks) * int64(st.Bsize),
			Vmm:          c.cfg.VMM,
			Accelerator:  c.cfg.Accelerator,
			AgentVersion: version.Version,
		},
		Usage: &hostagentv1.HostUsage{
			MemoryAvailableBytes: mem["MemAvailable"],
			DiskAvailableBytes:   int64(st.Bavail) * int64(st.Bsize),
			Load1:                load1,
		},
	}
	// No kernel is reported as none: the host then cannot boot sandboxes,
	// which the control plane should see rather than a failed heartbeat.
	if k, err := kernels.Latest(filepath.Join(c.cfg.Dir, "kernels")); err == nil {
		out.Specs.KernelVersion = k.Version
	}
	for _, t := range tmpls {
		out.Templates = append(out.Templates, Template(t))
		// Images are the built-ins every team may use: a snapshot
		// template is one team's memory and disk, and a built template
		// one team's image, never one of them.
		if !t.Snapshot && t.Owner == "" {
			out.Specs.Images = append(out.Specs.Images, t.Name)
		}
	}
	slices.Sort(out.Specs.Images)
	out.SandboxStates = make(map[string]hostagentv1.SandboxState, len(infos))
	out.SandboxVersions = make(map[string]int64, len(infos))
	var live []string
	for _, in := range infos {
		if in.Purpose != "" {
			// A build VM holds room on the host but is no tenant's
			// sandbox: the control plane has no row for it.
			addUsage(out.Usage, in)
			continue
		}
		out.SandboxIDs = append(out.SandboxIDs, in.ID)
		out.SandboxStates[in.ID] = SandboxState(in.State)
		if in.Version > 0 {
			out.SandboxVersions[in.ID] = in.Version
		}
		addUsage(out.Usage, in)
		if in.State != state.Stopped {
			live = append(live, in.ID)
		}
	}
	if c.cfg.MemoryDir != "" {
		size, avail, err := agent.FSRoom(c.cfg.MemoryDir)
		if err != nil {
			return Status{}, fmt.Errorf("guest memory tmpfs: %w", err)
		}
		out.Usage.GuestMemoryBytes, out.Usage.GuestMemoryAvailableBytes = size, avail
	}
	used, err := agent.SandboxDiskUsed(ctx, c.cfg.Dir, live)
	if err != nil {
		return Status{}, fmt.Errorf("sandbox disk usage: %w", err)
	}
	out.Usage.SandboxDiskUsedBytes = used
	return out, nil
}

// addUsage counts one sandbox. Starting sandboxes count as running and
// hibernated ones as paused (the proto has the two user-facing buckets).
// vCPUs and memory are reserved while a VMM holds them (starting, running,
// paused); disk while the sandbox exists at all.
func addUsage(u *hostagentv1.HostUsage, in agent.Info) {
	holdsVMM := false
	switch in.State {
	case state.Starting, state.Running:
		u.SandboxesRunning++
		holdsVMM = true
	case state.Paused:
		u.SandboxesPaused++
		// Paused without its memory: only its disk is held.
		holdsVMM = !in.MemoryDropped
	case state.Hibernated:
		u.SandboxesPaused++
	}
	if holdsVMM {
		u.ReservedVcpus += int32(in.VCPUs)
		u.ReservedMemoryBytes += int64(in.MemoryMB) << 20
	}
	if in.State != state.Stopped {
		u.ReservedDiskBytes += int64(in.DiskMB) << 20
	}
}

// Template converts a manager template to the wire.
func Template(t agent.Template) *hostagentv1.Template {
	return &hostagentv1.Template{Name: t.Name, Snapshot: t.Snapshot, DiskBytes: t.DiskBytes, TeamId: t.Owner}
}

// meminfo reads /proc/meminfo into bytes by field name.
func (c *Collector) meminfo() (map[string]int64, error) {
	path := filepath.Join(c.cfg.ProcDir, "meminfo")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// "MemAvailable:   12345678 kB"
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		out[k] = n
	}
	for _, k := range []string{"MemTotal", "MemAvailable"} {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("read %s: no %s", path, k)
		}
	}
	return out, nil
}

// load1 reads the one-minute load average.
func (c *Collector) load1() (float64, error) {
	path := filepath.Join(c.cfg.ProcDir, "loadavg")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("read %s: empty", path)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return v, nil
}

// SandboxState maps lifecycle states to the wire. Stopping has no wire state: a sandbox
// being destroyed is reported as stopped, which is where it is going and
// what the control plane must not schedule onto.
func SandboxState(s state.State) hostagentv1.SandboxState {
	switch s {
	case state.Starting:
		return hostagentv1.SandboxState_SANDBOX_STATE_STARTING
	case state.Running:
		return hostagentv1.SandboxState_SANDBOX_STATE_RUNNING
	case state.Paused:
		return hostagentv1.SandboxState_SANDBOX_STATE_PAUSED
	case state.Hibernated:
		return hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED
	case state.Stopping, state.Stopped:
		return hostagentv1.SandboxState_SANDBOX_STATE_STOPPED
	case state.Error:
		return hostagentv1.SandboxState_SANDBOX_STATE_ERROR
	}
	return hostagentv1.SandboxState_SANDBOX_STATE_UNSPECIFIED
}
