package qemu

import "github.com/wrenn/wrenn/internal/vmm/vmmproc"

// Internals the external tests (package qemu_test, which may import
// internal/testenv; testenv imports this package) look at.

// StateFileName is the snapshot file holding the migration stream.
const StateFileName = stateFileName

// KVMDevice and PVMModule are what Probe inspects.
const (
	KVMDevice = kvmDevice
	PVMModule = pvmModule
)

// IsQEMUFor reports whether pid is the QEMU whose -pidfile is pidFile.
func IsQEMUFor(pid int, pidFile string) bool { return vmmproc.Matches(pid, qemuFor(pidFile)) }

// Exited is closed once m's QEMU is gone.
func Exited(m *Machine) <-chan struct{} { return m.proc.Exited() }
