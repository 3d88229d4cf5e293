package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// DefaultBinary is the firecracker executable used when Config.Binary is
// empty (the seed's production path).
const DefaultBinary = "/usr/local/bin/firecracker"

// DefaultStopGrace is how long Stop waits for the guest to react to
// SendCtrlAltDel before it kills firecracker.
const DefaultStopGrace = 3 * time.Second

// Config configures a Driver.
type Config struct {
	// Binary is the firecracker executable; DefaultBinary when empty.
	// Tests point it at a stand-in (see fctest.Main).
	Binary string
	// Env is added to the agent's environment for firecracker.
	Env []string
	// Logger receives driver events; discarded when nil.
	Logger *slog.Logger
	// ConsoleLogMax caps console.log before rotation; DefaultConsoleLogMax
	// when zero.
	ConsoleLogMax int64
	// StopGrace bounds the graceful part of Stop; DefaultStopGrace when zero.
	StopGrace time.Duration
}

// Driver starts Firecracker guests. It holds no per-machine state, so any
// number of Drivers (or agents) may manage the same host, one machine each.
type Driver struct {
	cfg Config
	log *slog.Logger
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a Driver for cfg.
func New(cfg Config) *Driver {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConsoleLogMax <= 0 {
		cfg.ConsoleLogMax = DefaultConsoleLogMax
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	return &Driver{cfg: cfg, log: cfg.Logger}
}

// Name is "firecracker".
func (d *Driver) Name() string { return "firecracker" }

// Boot starts firecracker, configures the machine, disk and network over
// the API, and starts the guest. spec.MemoryFile is not used: Firecracker
// backs a booted guest with anonymous memory.
func (d *Driver) Boot(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	start := time.Now()
	m, err := d.launch(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("boot vm %s: %w", spec.ID, err)
	}
	for _, c := range bootCalls(spec) {
		if err := m.do(ctx, "boot", c.Method, c.Path, c.Body, nil); err != nil {
			return nil, errors.Join(err, m.kill())
		}
	}
	d.log.Info("vm booted", "sandbox_id", spec.ID, "pid", m.PID(), "duration", time.Since(start))
	return m, nil
}

// Restore starts a fresh firecracker and loads dir's snapshot into it
// before any other configuration, resuming the guest. spec must match the
// snapshot's vCPUs, memory, root disk path and MAC: Firecracker takes all of
// them from the snapshot and reopens the disk at its snapshot-time path. A
// different TAP name is passed as a network override.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Machine, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	meta, err := readSnapshotMeta(dir)
	if err != nil {
		return nil, fmt.Errorf("restore vm %s: %w", spec.ID, err)
	}
	load, err := loadCall(spec, dir, meta)
	if err != nil {
		return nil, fmt.Errorf("restore vm %s: %w", spec.ID, err)
	}
	for _, name := range []string{stateFileName, memoryFileName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return nil, errdefs.FromOS(fmt.Errorf("restore vm %s: snapshot %s: %w", spec.ID, dir, err))
		}
	}
	start := time.Now()
	m, err := d.launch(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("restore vm %s: %w", spec.ID, err)
	}
	// A failed load ends firecracker by itself; kill covers the rest.
	if err := m.do(ctx, "restore", load.Method, load.Path, load.Body, nil); err != nil {
		return nil, errors.Join(err, m.kill())
	}
	d.log.Info("vm restored", "sandbox_id", spec.ID, "pid", m.PID(), "duration", time.Since(start))
	return m, nil
}

// loadCall is the snapshot/load request for restoring meta's snapshot in
// dir as spec, or ErrInvalidArgument if spec contradicts the snapshot.
func loadCall(spec vmm.Spec, dir string, meta snapshotMeta) (call, error) {
	bad := func(format string, args ...any) (call, error) {
		return call{}, errdefs.New(errdefs.ErrInvalidArgument, "snapshot %s: "+format, append([]any{dir}, args...)...)
	}
	if meta.VCPUs != spec.VCPUs || meta.MemoryMB != spec.MemoryMB {
		return bad("has %d vcpus and %d MiB, spec has %d and %d", meta.VCPUs, meta.MemoryMB, spec.VCPUs, spec.MemoryMB)
	}
	if meta.RootDisk != spec.RootDisk.Path {
		return bad("firecracker reopens root disk %s; spec has %s", meta.RootDisk, spec.RootDisk.Path)
	}
	var overrides []networkOverride
	switch {
	case (meta.TAP == "") != (spec.Net == nil):
		return bad("network device: snapshot tap %q, spec net %v", meta.TAP, spec.Net)
	case spec.Net != nil && normalMAC(spec.Net.MAC) != meta.MAC:
		return bad("guest mac is %s; spec has %s", meta.MAC, spec.Net.MAC)
	case spec.Net != nil && spec.Net.TAP != meta.TAP:
		overrides = []networkOverride{{IfaceID: netIfaceID, HostDevName: spec.Net.TAP}}
	}
	return call{http.MethodPut, "/snapshot/load", snapshotLoad{
		SnapshotPath:     filepath.Join(dir, stateFileName),
		MemBackend:       memoryBackend{BackendType: "File", BackendPath: filepath.Join(dir, memoryFileName)},
		ResumeVM:         true,
		NetworkOverrides: overrides,
	}}, nil
}

// Attach re-adopts the firecracker recorded in spec.Dir's pid file, after
// checking that the process is alive and really this sandbox's. It checks
// the API answers and reopens the console. ErrNotFound when none runs.
func (d *Driver) Attach(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if !filepath.IsAbs(spec.Dir) {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "attach vm %s: dir %q is not absolute", spec.ID, spec.Dir)
	}
	sock := filepath.Join(spec.Dir, APISocketName)
	log := d.log.With("sandbox_id", spec.ID)
	proc, err := vmmproc.Adopt(filepath.Join(spec.Dir, PIDFileName), firecrackerFor(sock), log)
	if err != nil {
		return nil, fmt.Errorf("attach vm %s: %w", spec.ID, err)
	}
	pid := proc.PID()
	m := d.newMachine(spec, proc, log)
	actx, cancel := context.WithTimeout(ctx, vmm.BootTimeout)
	defer cancel()
	st, err := m.State(actx)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("attach vm %s: %w", spec.ID, err), m.Close())
	}
	if r, err := openConsoleReader(filepath.Join(spec.Dir, ConsoleFIFOName)); err != nil {
		// The guest is fine without a console copy; do not fail adoption.
		m.log.Warn("console not attached", "err", err)
	} else if err := m.proc.StartConsole(r, m.ConsoleLogPath(), d.cfg.ConsoleLogMax); err != nil {
		m.log.Warn("console not attached", "err", err)
	}
	d.log.Info("vm attached", "sandbox_id", spec.ID, "pid", pid, "state", st)
	return m, nil
}

// launch starts a firecracker process for spec with its console, pid file
// and confinement in place, and returns once its API socket accepts
// connections. Nothing is configured yet. On error nothing is left running.
func (d *Driver) launch(ctx context.Context, spec vmm.Spec) (*Machine, error) {
	if !Available(d.cfg.Binary) {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "firecracker binary %s: missing or not executable", d.cfg.Binary)
	}
	if st, err := os.Stat(spec.Dir); err != nil || !st.IsDir() {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "sandbox dir %s: not a directory", spec.Dir)
	}
	pidFile := filepath.Join(spec.Dir, PIDFileName)
	if pid, err := vmmproc.Running(pidFile, firecrackerFor(filepath.Join(spec.Dir, APISocketName))); err == nil {
		return nil, errdefs.New(errdefs.ErrAlreadyExists, "firecracker pid %d already runs for %s", pid, spec.Dir)
	}
	// Firecracker refuses to start if its API socket path exists.
	for _, name := range []string{APISocketName, PIDFileName} {
		if err := os.Remove(filepath.Join(spec.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale %s: %w", name, err)
		}
	}
	fifo := filepath.Join(spec.Dir, ConsoleFIFOName)
	if err := makeConsoleFIFO(fifo); err != nil {
		return nil, err
	}
	r, err := openConsoleReader(fifo)
	if err != nil {
		return nil, err
	}
	w, err := openConsoleWriter(fifo)
	if err != nil {
		r.Close()
		return nil, err
	}
	t0 := time.Now()
	log := d.log.With("sandbox_id", spec.ID)
	proc, err := vmmproc.Start(vmmproc.Command{
		Path: d.cfg.Binary, Args: processArgs(spec), Env: d.cfg.Env, Dir: spec.Dir,
		Output: w, NetNS: spec.NetNS, UID: spec.UID, GID: spec.GID, Groups: spec.Groups,
	}, log)
	w.Close() // firecracker holds its own copy; ours would hide its exit from the reader
	if err != nil {
		r.Close()
		return nil, err
	}
	pid := proc.PID()
	m := d.newMachine(spec, proc, log)
	fail := func(err error) (*Machine, error) { return nil, errors.Join(err, m.kill()) }
	// Nothing can be lost by starting the copy now: no guest runs yet.
	if err := m.proc.StartConsole(r, m.ConsoleLogPath(), d.cfg.ConsoleLogMax); err != nil {
		return fail(err)
	}
	if err := vmmproc.WritePIDFile(pidFile, pid); err != nil {
		return fail(err)
	}
	if spec.Confine != nil {
		if err := spec.Confine(pid); err != nil {
			return fail(fmt.Errorf("confine firecracker pid %d: %w", pid, err))
		}
	}
	if err := m.waitAPI(ctx); err != nil {
		return fail(err)
	}
	m.log.Info("firecracker started", "pid", pid, "startup", time.Since(t0))
	return m, nil
}

// waitAPI polls until the API socket accepts a connection, firecracker
// exits, or vmm.BootTimeout passes.
func (m *Machine) waitAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, vmm.BootTimeout)
	defer cancel()
	sock := filepath.Join(m.spec.Dir, APISocketName)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-m.proc.Exited():
			return errdefs.New(errdefs.ErrFailedPrecondition, "firecracker exited at start (see %s)", m.ConsoleLogPath())
		case <-ctx.Done():
			return fmt.Errorf("wait for firecracker api socket: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// snapshotMeta is what Snapshot records beside Firecracker's files, so that
// Restore can check the spec against it before starting anything.
type snapshotMeta struct {
	Version  int    `json:"version"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memory_mb"`
	RootDisk string `json:"root_disk"`
	TAP      string `json:"tap,omitempty"`
	MAC      string `json:"mac,omitempty"`
}

const snapshotVersion = 1

func readSnapshotMeta(dir string) (snapshotMeta, error) {
	var meta snapshotMeta
	b, err := os.ReadFile(filepath.Join(dir, snapshotMetaName))
	if err != nil {
		return meta, errdefs.FromOS(fmt.Errorf("read snapshot %s: %w", dir, err))
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, errdefs.New(errdefs.ErrInvalidArgument, "read snapshot %s: bad %s: %v", dir, snapshotMetaName, err)
	}
	if meta.Version != snapshotVersion {
		return meta, errdefs.New(errdefs.ErrInvalidArgument, "read snapshot %s: version %d, want %d", dir, meta.Version, snapshotVersion)
	}
	return meta, nil
}
