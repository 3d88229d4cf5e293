package qemu_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// haltKernel writes a 32-bit multiboot ELF whose only code is "hlt; jmp
// back". QEMU loads it like a kernel and the guest then sits idle forever,
// which makes lifecycle tests (pause, snapshot, attach) independent of
// the real guest kernel and its boot time.
func haltKernel(t *testing.T) string {
	t.Helper()
	const (
		base    = 0x100000
		ehSize  = 52
		phSize  = 32
		codeOff = ehSize + phSize
	)
	code := binary.LittleEndian.AppendUint32(nil, 0x1BADB002)             // multiboot magic
	code = binary.LittleEndian.AppendUint32(code, 0)                      // flags
	code = binary.LittleEndian.AppendUint32(code, 0x100000000-0x1BADB002) // checksum
	entry := uint32(base + codeOff + len(code))
	code = append(code, 0xf4, 0xeb, 0xfd) // hlt; jmp hlt
	size := uint32(codeOff + len(code))

	le := binary.LittleEndian
	b := []byte{0x7f, 'E', 'L', 'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b = le.AppendUint16(b, 2) // ET_EXEC
	b = le.AppendUint16(b, 3) // EM_386
	b = le.AppendUint32(b, 1) // EV_CURRENT
	b = le.AppendUint32(b, entry)
	b = le.AppendUint32(b, ehSize) // e_phoff
	b = le.AppendUint32(b, 0)      // e_shoff
	b = le.AppendUint32(b, 0)      // e_flags
	b = le.AppendUint16(b, ehSize)
	b = le.AppendUint16(b, phSize)
	b = le.AppendUint16(b, 1) // e_phnum
	b = le.AppendUint16(b, 40)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 1) // PT_LOAD
	b = le.AppendUint32(b, 0) // p_offset
	b = le.AppendUint32(b, base)
	b = le.AppendUint32(b, base)
	b = le.AppendUint32(b, size)
	b = le.AppendUint32(b, size)
	b = le.AppendUint32(b, 5) // R+X
	b = le.AppendUint32(b, 0x1000)
	b = append(b, code...)

	p := filepath.Join(t.TempDir(), "halt.elf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// sandboxDir is a short directory for a test VM (unix socket paths are
// limited to 107 bytes, which t.TempDir can exceed).
func sandboxDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "wq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testDriver(t *testing.T) *qemu.Driver {
	return qemu.New(qemu.Config{Binary: testenv.LookPath(t, qemu.DefaultBinary), Accel: qemu.AccelTCG, Logger: testLogger(t)})
}

func haltSpec(t *testing.T, kernel string) vmm.Spec {
	dir := sandboxDir(t)
	return vmm.Spec{ID: filepath.Base(dir), Dir: dir, Kernel: kernel, VCPUs: 1, MemoryMB: 64}
}

// stopOnCleanup makes sure a failing test leaves no QEMU behind.
func stopOnCleanup(t *testing.T, m vmm.Machine) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Stop(ctx); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
	})
}

func status(t *testing.T, m vmm.Machine) string {
	t.Helper()
	st, err := m.(*qemu.Machine).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func pidAlive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

func TestLifecycle(t *testing.T) {
	kernel := haltKernel(t)
	d := testDriver(t)
	tests := []struct {
		name   string
		shared bool
	}{
		{name: "full RAM in state file"},
		{name: "RAM in shared memory file", shared: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			spec := haltSpec(t, kernel)
			if tt.shared {
				spec.MemoryFile = filepath.Join(spec.Dir, "mem")
			}
			confined := 0
			spec.Confine = func(pid int) error { confined = pid; return nil }

			t0 := time.Now()
			m, err := d.Boot(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, m)
			t.Logf("boot (process start to running): %s", time.Since(t0))
			if m.PID() <= 0 || confined != m.PID() {
				t.Fatalf("pid %d, confined %d", m.PID(), confined)
			}
			if st := status(t, m); st != "running" {
				t.Fatalf("status after boot = %q", st)
			}
			if _, err := d.Boot(ctx, spec); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Fatalf("second boot in the same dir: err = %v, want AlreadyExists", err)
			}

			if err := m.Snapshot(ctx, t.TempDir()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("snapshot of a running guest: err = %v, want FailedPrecondition", err)
			}
			t0 = time.Now()
			if err := m.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("pause: %s", time.Since(t0))
			if st := status(t, m); st != "paused" {
				t.Fatalf("status after pause = %q", st)
			}
			if err := m.Resume(ctx); err != nil {
				t.Fatal(err)
			}
			if st := status(t, m); st != "running" {
				t.Fatalf("status after resume = %q", st)
			}
			if err := m.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			snap := t.TempDir()
			t0 = time.Now()
			if err := m.Snapshot(ctx, snap); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(filepath.Join(snap, qemu.StateFileName))
			t.Logf("snapshot: %s, state file %d bytes", time.Since(t0), st.Size())
			// A second snapshot of the still-paused VM (a fork after a
			// template snapshot): QEMU refuses to migrate straight after a
			// migration unless the VM ran between.
			if err := m.Snapshot(ctx, t.TempDir()); err != nil {
				t.Fatalf("second snapshot while paused: %v", err)
			}
			if st := status(t, m); st != "paused" && st != "postmigrate" {
				t.Fatalf("status after a second snapshot = %q, want it still halted", st)
			}
			if !tt.shared {
				// The source may carry on after a snapshot (RAM is in the
				// state file, so the snapshot stays valid).
				if err := m.Resume(ctx); err != nil {
					t.Fatalf("resume after snapshot: %v", err)
				}
				if st := status(t, m); st != "running" {
					t.Fatalf("status after resume from snapshot = %q", st)
				}
			}

			t0 = time.Now()
			if err := m.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("stop: %s", time.Since(t0))
			if err := m.Wait(ctx); err != nil {
				t.Fatalf("wait after stop: %v", err)
			}
			if err := m.Stop(ctx); err != nil {
				t.Fatalf("second stop: %v", err)
			}
			for _, name := range []string{qemu.QMPSocketName, qemu.ConsoleSocketName, qemu.PIDFileName} {
				if _, err := os.Stat(filepath.Join(spec.Dir, name)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind after stop (%v)", name, err)
				}
			}

			bad := spec
			bad.MemoryMB = 128
			if _, err := d.Restore(ctx, bad, snap); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("restore with other memory size: err = %v, want InvalidArgument", err)
			}
			t0 = time.Now()
			r, err := d.Restore(ctx, spec, snap)
			if err != nil {
				t.Fatal(err)
			}
			stopOnCleanup(t, r)
			t.Logf("restore (process start to running): %s", time.Since(t0))
			if st := status(t, r); st != "running" {
				t.Fatalf("status after restore = %q", st)
			}
		})
	}
}

func TestBootErrors(t *testing.T) {
	kernel := haltKernel(t)
	d := testDriver(t)
	ctx := context.Background()

	t.Run("invalid spec", func(t *testing.T) {
		spec := haltSpec(t, kernel)
		spec.VCPUs = 0
		if _, err := d.Boot(ctx, spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("err = %v, want InvalidArgument", err)
		}
	})
	t.Run("qemu rejects the kernel", func(t *testing.T) {
		spec := haltSpec(t, filepath.Join(t.TempDir(), "missing-vmlinux"))
		_, err := d.Boot(ctx, spec)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("err = %v, want FailedPrecondition with qemu's message", err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("confine fails", func(t *testing.T) {
		spec := haltSpec(t, kernel)
		pid := 0
		spec.Confine = func(p int) error { pid = p; return errors.New("cgroup full") }
		_, err := d.Boot(ctx, spec)
		if err == nil {
			t.Fatal("boot succeeded although confine failed")
		}
		if pid == 0 || pidAlive(pid) {
			t.Fatalf("qemu pid %d still alive after a failed boot", pid)
		}
	})
	t.Run("attach with nothing running", func(t *testing.T) {
		spec := haltSpec(t, kernel)
		if _, err := d.Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want NotFound", err)
		}
		// A stale pid file naming some other live process (ourselves).
		if err := os.WriteFile(filepath.Join(spec.Dir, qemu.PIDFileName), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("stale pid file: err = %v, want NotFound", err)
		}
	})
	t.Run("restore from missing snapshot", func(t *testing.T) {
		spec := haltSpec(t, kernel)
		if _, err := d.Restore(ctx, spec, t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("err = %v, want NotFound", err)
		}
	})
}
