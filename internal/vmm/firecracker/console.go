package firecracker

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/vmm/vmmproc"
)

// DefaultConsoleLogMax is the size at which console.log is rotated to
// console.log.1 (the one older generation kept).
const DefaultConsoleLogMax = vmmproc.DefaultConsoleLogMax

// Firecracker writes the guest's serial console (and its own log) to its
// stdout. That stdout is a FIFO in Spec.Dir rather than a pipe to the agent,
// so a later agent can open it again after Attach; while no agent reads,
// Firecracker's writes fail with EPIPE and that output is lost, but the
// guest never blocks on a full pipe.

// makeConsoleFIFO creates a fresh FIFO at path, replacing a stale one.
func makeConsoleFIFO(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale console fifo: %w", err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return fmt.Errorf("create console fifo %s: %w", path, err)
	}
	return nil
}

// openConsoleReader opens the FIFO's read end without waiting for a writer.
// The fd is non-blocking, so the os.File uses the runtime poller and Close
// interrupts a pending Read, as vmmproc.StartConsole needs.
func openConsoleReader(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open console fifo %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openConsoleWriter opens the FIFO's write end for firecracker's stdout. A
// reader must be open already (else open would block). The fd stays in
// blocking mode, as a program expects of its stdout.
func openConsoleWriter(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open console fifo %s for writing: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}
