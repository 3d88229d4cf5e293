package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// quitWait bounds the QMP "quit" request itself during Stop.
const quitWait = 2 * time.Second

// Machine is one QEMU process. Besides vmm.Machine it offers ConsoleLogPath,
// QMP and Close (let go without stopping QEMU).
type Machine struct {
	spec vmm.Spec
	proc *vmmproc.Process
	log  *slog.Logger

	qmp *QMP

	mu       sync.Mutex // serialises Stop, Close and Snapshot
	released bool       // host-side handles let go (Stop or Close)
}

var _ vmm.Machine = (*Machine)(nil)

func newMachine(spec vmm.Spec, proc *vmmproc.Process, log *slog.Logger) *Machine {
	return &Machine{spec: spec, proc: proc, log: log}
}

// PID of the QEMU process.
func (m *Machine) PID() int { return m.proc.PID() }

// ConsoleLogPath is the file the guest's serial console is copied to
// (rotated to ConsoleLogPath()+".1" at DefaultConsoleLogMax).
func (m *Machine) ConsoleLogPath() string { return filepath.Join(m.spec.Dir, ConsoleLogName) }

// QMP is the machine's monitor connection, for commands the driver does
// not wrap.
func (m *Machine) QMP() *QMP { return m.qmp }

// exec runs a QMP command, turning "QEMU is gone" into a FailedPrecondition.
func (m *Machine) exec(ctx context.Context, what, cmd string, args, out any) error {
	err := m.qmp.Execute(ctx, cmd, args, out)
	if err == nil {
		return nil
	}
	select {
	case <-m.proc.Exited():
		return errdefs.New(errdefs.ErrFailedPrecondition, "%s vm %s: qemu (pid %d) has exited", what, m.spec.ID, m.proc.PID())
	default:
	}
	if errors.Is(err, ErrQMPClosed) {
		return errdefs.New(errdefs.ErrFailedPrecondition, "%s vm %s: %v", what, m.spec.ID, err)
	}
	return fmt.Errorf("%s vm %s: %w", what, m.spec.ID, err)
}

// Pause stops the vCPUs (QMP "stop").
func (m *Machine) Pause(ctx context.Context) error {
	return m.exec(ctx, "pause", "stop", nil, nil)
}

// Resume continues the vCPUs (QMP "cont").
func (m *Machine) Resume(ctx context.Context) error {
	return m.exec(ctx, "resume", "cont", nil, nil)
}

type statusInfo struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// Status returns QEMU's run state ("running", "paused", "prelaunch",
// "postmigrate", "inmigrate", ...).
func (m *Machine) Status(ctx context.Context) (string, error) {
	var st statusInfo
	if err := m.exec(ctx, "query status of", "query-status", nil, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// snapshotMeta describes a snapshot directory, so Restore can refuse a spec
// the saved state cannot load into.
type snapshotMeta struct {
	Version      int  `json:"version"`
	SharedMemory bool `json:"shared_memory"`
	MemoryMB     int  `json:"memory_mb"`
	VCPUs        int  `json:"vcpus"`
}

const snapshotVersion = 1

// Snapshot writes the paused guest's device state (and its RAM, unless RAM
// lives in Spec.MemoryFile) to dir/vmstate via QEMU migration to a passed
// file descriptor. With Spec.MemoryFile, the memory file as it is now is part
// of the snapshot: the caller must keep it unchanged (or copy it) before this
// machine resumes. The guest stays paused ("postmigrate") afterwards.
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	status, err := m.Status(ctx)
	if err != nil {
		return err
	}
	switch status {
	case "paused", "postmigrate", "prelaunch":
	default:
		return errdefs.New(errdefs.ErrFailedPrecondition, "snapshot vm %s: guest is %s; pause it first", m.spec.ID, status)
	}
	if status == "postmigrate" {
		// Snapshotted before and paused since: QEMU refuses to migrate a
		// VM again until it has run ("Can't migrate the vm that was paused
		// due to previous migration"), and only cont leaves that state.
		// The vCPUs run for the round trip of two commands, then halt.
		if err := m.exec(ctx, "leave the post-migration state of", "cont", nil, nil); err != nil {
			return err
		}
		if err := m.exec(ctx, "pause", "stop", nil, nil); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return errdefs.FromOS(fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err))
	}
	shared := m.spec.MemoryFile != ""
	if err := m.setIgnoreShared(ctx, shared); err != nil {
		return err
	}

	tmp := filepath.Join(dir, stateFileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return errdefs.FromOS(fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err))
	}
	defer f.Close()
	defer os.Remove(tmp) // no-op after the rename

	start := time.Now()
	if err := m.migrateToFD(ctx, f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("snapshot vm %s: sync state: %w", m.spec.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFileName)); err != nil {
		return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
	}
	meta, _ := json.Marshal(snapshotMeta{Version: snapshotVersion, SharedMemory: shared,
		MemoryMB: m.spec.MemoryMB, VCPUs: m.spec.VCPUs})
	if err := writeFileSync(filepath.Join(dir, snapshotMetaName), meta); err != nil {
		return fmt.Errorf("snapshot vm %s: %w", m.spec.ID, err)
	}
	m.log.Info("snapshot written", "dir", dir, "shared_memory", shared, "duration", time.Since(start))
	return nil
}

func (m *Machine) setIgnoreShared(ctx context.Context, on bool) error {
	args := map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": on}}}
	return m.exec(ctx, "set migration capabilities of", "migrate-set-capabilities", args, nil)
}

// migrateFDName is the name under which the snapshot fd is handed to QEMU.
const migrateFDName = "wrenn-migrate"

// migrateToFD streams the migration into f. QEMU 7.2 has no file: URI and
// -sandbox spawn=deny rules out exec:, so the fd travels over QMP.
func (m *Machine) migrateToFD(ctx context.Context, f *os.File) error {
	if err := m.qmp.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": migrateFDName}, nil, int(f.Fd())); err != nil {
		return fmt.Errorf("snapshot vm %s: pass state fd: %w", m.spec.ID, err)
	}
	// The default bandwidth cap (128 MiB/s) and downtime target exist to
	// protect a running guest during live migration; this guest is paused
	// and the target is a local file.
	params := map[string]any{"max-bandwidth": int64(1) << 40, "downtime-limit": 2000}
	if err := m.exec(ctx, "snapshot", "migrate-set-parameters", params, nil); err != nil {
		return err
	}
	if err := m.exec(ctx, "snapshot", "migrate", map[string]string{"uri": "fd:" + migrateFDName}, nil); err != nil {
		// QEMU only consumes the fd once migration starts.
		_ = m.qmp.Execute(context.WithoutCancel(ctx), "closefd", map[string]string{"fdname": migrateFDName}, nil)
		return err
	}
	err := m.pollMigration(ctx, "snapshot")
	if err != nil && ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), quitWait)
		_ = m.qmp.Execute(cctx, "migrate_cancel", nil, nil)
		cancel()
	}
	return err
}

// pollMigration polls query-migrate until the migration (outgoing or
// incoming) completes or fails. QEMU emits MIGRATION events only with the
// "events" capability; polling needs no extra state.
func (m *Machine) pollMigration(ctx context.Context, what string) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := m.exec(ctx, what, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("%s vm %s: migration %s: %s", what, m.spec.ID, st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s vm %s: migration still %q: %w", what, m.spec.ID, st.Status, ctx.Err())
		case <-m.proc.Exited():
			return errdefs.New(errdefs.ErrFailedPrecondition, "%s vm %s: qemu exited during migration: %s",
				what, m.spec.ID, logTail(filepath.Join(m.spec.Dir, QEMULogName)))
		case <-tick.C:
		}
	}
}

// waitStatus polls query-status until QEMU reports want.
func (m *Machine) waitStatus(ctx context.Context, what, want string) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s vm %s: status still %q, want %q: %w", what, m.spec.ID, st, want, ctx.Err())
		case <-m.proc.Exited():
			return errdefs.New(errdefs.ErrFailedPrecondition, "%s vm %s: qemu exited: %s",
				what, m.spec.ID, logTail(filepath.Join(m.spec.Dir, QEMULogName)))
		case <-tick.C:
		}
	}
}

// Stop ends QEMU: QMP "quit" (QEMU flushes disks and exits; a microvm
// without ACPI has no guest-visible power button), SIGTERM if QMP does not
// answer, then SIGKILL once ctx is done. It then removes the sockets and pid
// file. Stopping a stopped machine succeeds.
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
		m.terminate(ctx)
	}
	select {
	case <-m.proc.Exited():
	case <-ctx.Done():
		if err := m.sigkill(); err != nil {
			return err
		}
	}
	return m.cleanup()
}

// sigkill kills QEMU and waits (bounded) until it is gone.
func (m *Machine) sigkill() error {
	if err := m.proc.Kill(); err != nil {
		return fmt.Errorf("stop vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// cleanup releases the host-side handles of an exited QEMU and removes the
// files it leaves in Dir.
func (m *Machine) cleanup() error {
	err := m.release()
	for _, name := range []string{QMPSocketName, ConsoleSocketName, PIDFileName} {
		if rerr := os.Remove(filepath.Join(m.spec.Dir, name)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("stop vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// terminate asks QEMU to exit, by QMP or else by SIGTERM (which QEMU also
// handles as an orderly shutdown).
func (m *Machine) terminate(ctx context.Context) {
	if m.qmp != nil {
		qctx, cancel := context.WithTimeout(ctx, quitWait)
		err := m.qmp.Execute(qctx, "quit", nil, nil)
		cancel()
		// The reply and QEMU closing the socket race; either means quit.
		if err == nil || errors.Is(err, ErrQMPClosed) {
			return
		}
		m.log.Warn("qmp quit failed; sending SIGTERM", "pid", m.proc.PID(), "err", err)
	}
	if err := m.proc.Signal(syscall.SIGTERM); err != nil {
		m.log.Warn("sigterm qemu failed", "pid", m.proc.PID(), "err", err)
	}
}

// Wait blocks until QEMU exits. It fails if ctx ends first or the machine
// was Closed (its exit is then no longer observed).
func (m *Machine) Wait(ctx context.Context) error {
	if err := m.proc.Wait(ctx); err != nil {
		return fmt.Errorf("wait vm %s: %w", m.spec.ID, err)
	}
	return nil
}

// Close lets go of QEMU without stopping it: the QMP and console
// connections, the exit watcher and the pidfd. QEMU keeps running and a
// later Attach (from this agent or the next) takes it over; QEMU accepts
// only one QMP client, so Close the old Machine first.
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
	var errs []error
	if m.qmp != nil {
		errs = append(errs, m.qmp.Close())
	}
	errs = append(errs, m.proc.Release())
	return errors.Join(errs...)
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
