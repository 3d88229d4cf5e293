package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// attachGreetingWait bounds the wait for QMP's greeting on Attach. A live
// QEMU with a free monitor greets at once.
const attachGreetingWait = 5 * time.Second

// DefaultBinary is looked up in PATH when Config.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// Config configures a Driver.
type Config struct {
	// Binary is the QEMU executable; DefaultBinary from PATH when empty.
	Binary string
	// Accel is the accelerator every guest uses, normally Probe's choice.
	Accel Accel
	// Logger receives driver events; discarded when nil.
	Logger *slog.Logger
	// ConsoleLogMax caps console.log before rotation; DefaultConsoleLogMax
	// when zero.
	ConsoleLogMax int64
}

// Driver starts QEMU microvm guests. It holds no per-machine state, so any
// number of Drivers (or agents) may manage the same host, one machine each.
type Driver struct {
	cfg Config
	log *slog.Logger
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a Driver for cfg.
func New(cfg Config) *Driver {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConsoleLogMax <= 0 {
		cfg.ConsoleLogMax = DefaultConsoleLogMax
	}
	return &Driver{cfg: cfg, log: cfg.Logger}
}

// Name is "qemu".
func (d *Driver) Name() string { return "qemu" }

// Boot starts a fresh guest and returns once it runs.
func (d *Driver) Boot(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	args, err := Args(spec, d.cfg.Accel, false)
	if err != nil {
		return nil, err
	}
	m, err := d.launch(ctx, spec, args)
	if err != nil {
		return nil, fmt.Errorf("boot vm %s: %w", spec.ID, err)
	}
	if err := m.Resume(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("boot vm %s: %w", spec.ID, err), m.kill())
	}
	return m, nil
}

// Restore starts QEMU waiting for an incoming migration, feeds it dir's
// saved state, and continues the guest. spec must match the snapshot's
// memory size, vCPU count and memory mode (Spec.MemoryFile set or not); with
// Spec.MemoryFile the file must hold the snapshot's RAM, and must not be
// used by another running guest.
func (d *Driver) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Machine, error) {
	meta, err := readSnapshotMeta(dir)
	if err != nil {
		return nil, err
	}
	if meta.SharedMemory != (spec.MemoryFile != "") || meta.MemoryMB != spec.MemoryMB || meta.VCPUs != spec.VCPUs {
		return nil, errdefs.New(errdefs.ErrInvalidArgument,
			"restore vm %s: snapshot %s has memory %d MiB, %d vcpus, shared memory %t; spec has %d MiB, %d vcpus, memory file %q",
			spec.ID, dir, meta.MemoryMB, meta.VCPUs, meta.SharedMemory, spec.MemoryMB, spec.VCPUs, spec.MemoryFile)
	}
	if spec.MemoryFile != "" {
		if _, err := os.Stat(spec.MemoryFile); err != nil {
			return nil, errdefs.FromOS(fmt.Errorf("restore vm %s: memory file: %w", spec.ID, err))
		}
	}
	state, err := os.Open(filepath.Join(dir, stateFileName))
	if err != nil {
		return nil, errdefs.FromOS(fmt.Errorf("restore vm %s: %w", spec.ID, err))
	}
	defer state.Close()

	args, err := Args(spec, d.cfg.Accel, true)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	m, err := d.launch(ctx, spec, args)
	if err != nil {
		return nil, fmt.Errorf("restore vm %s: %w", spec.ID, err)
	}
	fail := func(err error) (vmm.Machine, error) {
		return nil, errors.Join(fmt.Errorf("restore vm %s: %w", spec.ID, err), m.kill())
	}
	// The target must agree with the source on x-ignore-shared, or QEMU
	// rejects the stream ("Capability x-ignore-shared is off, but received
	// capability is on").
	if err := m.setIgnoreShared(ctx, meta.SharedMemory); err != nil {
		return fail(err)
	}
	if err := m.qmp.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": migrateFDName}, nil, int(state.Fd())); err != nil {
		return fail(fmt.Errorf("pass state fd: %w", err))
	}
	if err := m.exec(ctx, "restore", "migrate-incoming", map[string]string{"uri": "fd:" + migrateFDName}, nil); err != nil {
		return fail(err)
	}
	// With -S, a finished incoming migration leaves the guest "paused".
	if err := m.waitStatus(ctx, "restore", "paused"); err != nil {
		return fail(err)
	}
	loaded := time.Since(start)
	if err := m.Resume(ctx); err != nil {
		return fail(err)
	}
	d.log.Info("vm restored", "sandbox_id", spec.ID, "pid", m.PID(), "state_loaded", loaded, "duration", time.Since(start))
	return m, nil
}

// Attach re-adopts the QEMU recorded in spec.Dir's pid file, after checking
// that the process is alive and really this sandbox's QEMU. It reconnects
// QMP and the console. errdefs.ErrNotFound when none runs.
func (d *Driver) Attach(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if !filepath.IsAbs(spec.Dir) {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "attach vm %s: dir %q is not absolute", spec.ID, spec.Dir)
	}
	pidFile := filepath.Join(spec.Dir, PIDFileName)
	log := d.log.With("sandbox_id", spec.ID)
	proc, err := vmmproc.Adopt(pidFile, qemuFor(pidFile), log)
	if err != nil {
		return nil, fmt.Errorf("attach vm %s: %w", spec.ID, err)
	}
	pid := proc.PID()
	m := newMachine(spec, proc, log)
	// QEMU serves one QMP client at a time and greets a second one only
	// when the first leaves, so a silent socket means someone else holds it.
	dctx, cancel := context.WithTimeout(ctx, attachGreetingWait)
	defer cancel()
	m.qmp, err = DialQMP(dctx, filepath.Join(spec.Dir, QMPSocketName))
	if err != nil {
		if dctx.Err() != nil && ctx.Err() == nil {
			err = errdefs.New(errdefs.ErrUnavailable,
				"qemu pid %d did not greet within %s: another QMP client (an older agent, or an unclosed Machine) holds the monitor", pid, attachGreetingWait)
		}
		return nil, errors.Join(fmt.Errorf("attach vm %s: %w", spec.ID, err), m.Close())
	}
	if _, err := m.Status(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("attach vm %s: %w", spec.ID, err), m.Close())
	}
	if err := m.startConsole(d.cfg.ConsoleLogMax); err != nil {
		// The guest is fine without a console copy; do not fail adoption.
		m.log.Warn("console not attached", "err", err)
	}
	d.log.Info("vm attached", "sandbox_id", spec.ID, "pid", pid)
	return m, nil
}

// launch starts QEMU with the guest held by -S, connects QMP and the
// console, and applies spec.Confine. On error nothing is left running.
func (d *Driver) launch(ctx context.Context, spec vmm.Spec, args []string) (*Machine, error) {
	bin := d.cfg.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	bin, err := exec.LookPath(bin)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "find qemu: %v", err)
	}
	if st, err := os.Stat(spec.Dir); err != nil || !st.IsDir() {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "sandbox dir %s: not a directory", spec.Dir)
	}
	pidFile := filepath.Join(spec.Dir, PIDFileName)
	if pid, err := vmmproc.Running(pidFile, qemuFor(pidFile)); err == nil {
		return nil, errdefs.New(errdefs.ErrAlreadyExists, "qemu pid %d already runs for %s", pid, spec.Dir)
	}
	// Leftovers of a QEMU that died without cleaning up.
	for _, name := range []string{QMPSocketName, ConsoleSocketName, PIDFileName} {
		if err := os.Remove(filepath.Join(spec.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale %s: %w", name, err)
		}
	}
	if spec.MemoryFile != "" {
		if err := prepareMemoryFile(spec); err != nil {
			return nil, err
		}
	}
	jail, err := jailFor(spec, bin, d.cfg.Accel)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(spec.Dir, QEMULogName)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open qemu log: %w", err)
	}
	fmt.Fprintf(logf, "--- %s %s %q\n", time.Now().UTC().Format(time.RFC3339), bin, args)
	t0 := time.Now()
	log := d.log.With("sandbox_id", spec.ID)
	proc, err := vmmproc.Start(vmmproc.Command{
		Path: bin, Args: args, Output: logf, NetNS: spec.NetNS, UID: spec.UID, GID: spec.GID, Groups: spec.Groups,
		Jail: jail,
	}, log)
	logf.Close() // QEMU has its own copy
	if err != nil {
		return nil, err
	}
	pid := proc.PID()
	m := newMachine(spec, proc, log)
	fail := func(err error) (*Machine, error) { return nil, errors.Join(err, m.kill()) }

	if m.qmp, err = m.dialQMP(ctx); err != nil {
		return fail(err)
	}
	// The guest has not run yet: no console output is lost by connecting now.
	if err := m.startConsole(d.cfg.ConsoleLogMax); err != nil {
		return fail(err)
	}
	if spec.Confine != nil {
		if err := spec.Confine(pid); err != nil {
			return fail(fmt.Errorf("confine qemu pid %d: %w", pid, err))
		}
	}
	log.Info("qemu started", "pid", pid, "accel", d.cfg.Accel, "startup", time.Since(t0))
	return m, nil
}

// dialQMP polls until QEMU's QMP socket answers, QEMU exits, or
// vmm.BootTimeout passes.
func (m *Machine) dialQMP(ctx context.Context) (*QMP, error) {
	ctx, cancel := context.WithTimeout(ctx, vmm.BootTimeout)
	defer cancel()
	path := filepath.Join(m.spec.Dir, QMPSocketName)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		q, err := DialQMP(ctx, path)
		if err == nil {
			return q, nil
		}
		select {
		case <-m.proc.Exited():
			return nil, errdefs.New(errdefs.ErrFailedPrecondition, "qemu exited at start: %s",
				logTail(filepath.Join(m.spec.Dir, QEMULogName)))
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for qmp: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// kill ends a machine that failed half-way through start: SIGKILL, wait,
// release, remove sockets.
func (m *Machine) kill() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.sigkill(); err != nil {
		return err
	}
	return m.cleanup()
}

// prepareMemoryFile creates the RAM backing file, owned by the VMM's user,
// so QEMU (possibly unprivileged) can open it.
func prepareMemoryFile(spec vmm.Spec) error {
	f, err := os.OpenFile(spec.MemoryFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return errdefs.FromOS(fmt.Errorf("create memory file: %w", err))
	}
	defer f.Close()
	if spec.UID != 0 || spec.GID != 0 {
		if err := f.Chown(int(spec.UID), int(spec.GID)); err != nil {
			return fmt.Errorf("chown memory file: %w", err)
		}
	}
	return nil
}

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
