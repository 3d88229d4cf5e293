package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// stateWait bounds the GET / that Stop asks before choosing how to stop.
const stateWait = 2 * time.Second

// Machine is one firecracker process. Besides vmm.Machine it offers State,
// ConsoleLogPath, API and Close (let go without stopping firecracker).
type Machine struct {
	spec  vmm.Spec
	proc  *vmmproc.Process
	log   *slog.Logger
	grace time.Duration

	api *Client

	mu       sync.Mutex // serialises Stop, Close and Snapshot
	released bool       // host-side handles let go (Stop or Close)
}

var _ vmm.Machine = (*Machine)(nil)

func (d *Driver) newMachine(spec vmm.Spec, proc *vmmproc.Process, log *slog.Logger) *Machine {
	return &Machine{
		spec: spec, proc: proc, log: log,
		grace: d.cfg.StopGrace,
		api:   NewClient(filepath.Join(spec.Dir, APISocketName)),
	}
}

// PID of the firecracker process.
func (m *Machine) PID() int { return m.proc.PID() }

// ConsoleLogPath is the file firecracker's stdout and stderr (the guest's
// serial console and Firecracker's own log) are copied to, rotated to
// ConsoleLogPath()+".1".
func (m *Machine) ConsoleLogPath() string { return filepath.Join(m.spec.Dir, ConsoleLogName) }

// API is the machine's API client, for requests the driver does not wrap.
func (m *Machine) API() *Client { return m.api }

// State is the instance state Firecracker reports: "Not started",
// "Running" or "Paused".
func (m *Machine) State(ctx context.Context) (string, error) {
	var info instanceInfo
	if err := m.do(ctx, "query", http.MethodGet, "/", nil, &info); err != nil {
		return "", err
	}
	return info.State, nil
}

// do sends one API request. An answer is wrapped as "<what> vm <id>: ..."; a
// transport failure from a firecracker that has exited becomes
// ErrFailedPrecondition.
func (m *Machine) do(ctx context.Context, what, method, path string, body, out any) error {
	err := m.api.Do(ctx, method, path, body, out)
	if err == nil {
		return nil
	}
	if !isAPIError(err) {
		select {
		case <-m.proc.Exited():
			return errdefs.New(errdefs.ErrFailedPrecondition, "%s vm %s: firecracker (pid %d) has exited", what, m.spec.ID, m.PID())
		default:
		}
	}
	return fmt.Errorf("%s vm %s: %w", what, m.spec.ID, err)
}

// Pause freezes the vCPUs (PATCH /vm Paused). Pausing a paused guest
// succeeds.
func (m *Machine) Pause(ctx context.Context) error {
	return m.do(ctx, "pause", http.MethodPatch, "/vm", vmState{State: "Paused"}, nil)
}

// Resume continues a paused guest (PATCH /vm Resumed).
func (m *Machine) Resume(ctx context.Context) error {
	return m.do(ctx, "resume", http.MethodPatch, "/vm", vmState{State: "Resumed"}, nil)
}

// Snapshot writes a full snapshot (device state and all guest memory) of a
// paused guest into dir, which must exist and be writable by the VMM's
// user. The guest stays paused. Firecracker writes to temporary names that
// are renamed into place, so overwriting the snapshot this guest was
// restored from (whose memory file still backs the guest) is safe, and
// snapshot.json, written last, marks a complete snapshot.
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !filepath.IsAbs(dir) {
		return errdefs.New(errdefs.ErrInvalidArgument, "snapshot vm %s: dir %q is not absolute", m.spec.ID, dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return errdefs.New(errdefs.ErrInvalidArgument, "snapshot vm %s: %s is not a directory", m.spec.ID, dir)
	}
	st, err := m.State(ctx)
	if err != nil {
		return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
	}
	if st != "Paused" {
		return errdefs.New(errdefs.ErrFailedPrecondition, "snapshot vm %s: guest is %s, not paused", m.spec.ID, st)
	}
	meta := snapshotMeta{
		Version: snapshotVersion, VCPUs: m.spec.VCPUs, MemoryMB: m.spec.MemoryMB, RootDisk: m.spec.RootDisk.Path,
	}
	if n := m.spec.Net; n != nil {
		meta.TAP, meta.MAC = n.TAP, normalMAC(n.MAC)
	}
	// A crash part-way must not leave an old snapshot.json vouching for
	// new, half-written files.
	if err := os.Remove(filepath.Join(dir, snapshotMetaName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
	}
	start := time.Now()
	files := []string{stateFileName, memoryFileName}
	tmp := func(name string) string { return filepath.Join(dir, name+".tmp") }
	err = m.do(ctx, "snapshot", http.MethodPut, "/snapshot/create", snapshotCreate{
		SnapshotType: "Full", SnapshotPath: tmp(stateFileName), MemFilePath: tmp(memoryFileName),
	}, nil)
	if err != nil {
		for _, name := range files {
			_ = os.Remove(tmp(name))
		}
		return err
	}
	for _, name := range files {
		if err := syncFile(tmp(name)); err != nil {
			return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
		}
		if err := os.Rename(tmp(name), filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
		}
	}
	b, _ := json.Marshal(meta)
	if err := writeFileSync(filepath.Join(dir, snapshotMetaName), b); err != nil {
		return fmt.Errorf("snapshot vm %s: write %s: %w", m.spec.ID, snapshotMetaName, err)
	}
	if err := syncFile(dir); err != nil {
		return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
	}
	m.log.Info("vm snapshot written", "pid", m.PID(), "dir", dir, "duration", time.Since(start))
	return nil
}

// Stop ends firecracker: a running guest gets SendCtrlAltDel (with
// reboot=k the guest resets and Firecracker exits) and StopGrace to go;
// then, or at once for a paused guest that cannot react, or when ctx ends,
// SIGKILL. It then removes the socket, FIFO and pid file. Stopping a
// stopped machine succeeds.
func (m *Machine) Stop(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.released {
		select {
		case <-m.proc.Exited():
			return nil
		default:
			return errdefs.New(errdefs.ErrFailedPrecondition, "stop vm %s: machine was closed; attach again", m.spec.ID)
		}
	}
	select {
	case <-m.proc.Exited():
	default:
		if m.askToStop(ctx) {
			t := time.NewTimer(m.grace)
			select {
			case <-m.proc.Exited():
			case <-t.C:
				m.log.Warn("guest ignored ctrl-alt-del; killing firecracker", "pid", m.PID(), "grace", m.grace)
			case <-ctx.Done():
			}
			t.Stop()
		}
		if err := m.sigkill(); err != nil {
			return err
		}
	}
	return m.cleanup()
}

// askToStop sends SendCtrlAltDel to a running guest and reports whether it
// did.
func (m *Machine) askToStop(ctx context.Context) bool {
	sctx, cancel := context.WithTimeout(ctx, stateWait)
	defer cancel()
	st, err := m.State(sctx)
	if err != nil || st != "Running" {
		return false
	}
	err = m.do(sctx, "stop", http.MethodPut, "/actions", instanceAction{ActionType: "SendCtrlAltDel"}, nil)
	if err != nil {
		m.log.Warn("send ctrl-alt-del failed", "pid", m.PID(), "err", err)
		return false
	}
	return true
}

// sigkill kills firecracker (if still there) and waits, bounded, until it
// is gone.
func (m *Machine) sigkill() error {
	if err := m.proc.Kill(); err != nil {
		return fmt.Errorf("stop vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// kill ends a machine that failed part-way through start.
func (m *Machine) kill() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.sigkill(); err != nil {
		return err
	}
	return m.cleanup()
}

// cleanup releases the host-side handles of an exited firecracker and
// removes the files it leaves in Dir (console.log stays).
func (m *Machine) cleanup() error {
	err := m.release()
	for _, name := range []string{APISocketName, ConsoleFIFOName, PIDFileName} {
		if rerr := os.Remove(filepath.Join(m.spec.Dir, name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("stop vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// Wait blocks until firecracker exits. It fails if ctx ends first or the
// machine was Closed (its exit is then no longer observed).
func (m *Machine) Wait(ctx context.Context) error {
	if err := m.proc.Wait(ctx); err != nil {
		return fmt.Errorf("wait vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// Close lets go of firecracker without stopping it: the API connections,
// the console copy, the exit watcher and the pidfd. Firecracker keeps
// running, and a later Attach (from this agent or the next) takes it over.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.release()
}

func (m *Machine) release() error {
	if m.released {
		return nil
	}
	m.released = true
	m.api.Close()
	return m.proc.Release()
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
