// Package vmm defines the contract between the host agent and a virtual
// machine monitor (QEMU or Firecracker): boot a guest from a kernel and a
// root disk, pause and resume it, save and restore its memory and device
// state, stop it, and re-attach to one that outlived the agent.
//
// Drivers live in subpackages (vmm/qemu, vmm/firecracker); New picks one.
package vmm

import (
	"context"
	"time"
)

// Spec is everything a driver needs to start (or restore) one guest. All
// paths are absolute host paths.
type Spec struct {
	// ID names the sandbox; used for process titles and logs.
	ID string
	// Dir is the sandbox's private directory: control sockets, console log,
	// pid file. It exists before Boot is called.
	Dir string
	// Kernel is the uncompressed vmlinux to boot.
	Kernel string
	// KernelArgs are appended to the driver's base command line
	// (console, reboot, panic and virtio-mmio settings come from the driver).
	// They must not contain "--": QEMU appends its virtio-mmio device list
	// after them, and anything past "--" goes to init instead of the kernel.
	KernelArgs string
	// RootDisk is the guest's root block device (/dev/vda).
	RootDisk Disk
	// VCPUs and MemoryMB size the guest.
	VCPUs    int
	MemoryMB int
	// MemoryFile, when set, backs guest RAM with this shared file so that a
	// pause or snapshot need not copy memory (QEMU x-ignore-shared). It is
	// created by the driver if missing. The file's content at snapshot time
	// is part of the snapshot: a caller that resumes the source or restores
	// twice must give each guest its own copy.
	MemoryFile string
	// Net attaches one virtio-net device to an existing TAP device.
	Net *NetDevice
	// NetNS, when set, is the path of a network namespace (e.g.
	// /run/netns/wrenn-3) the VMM process runs in; the TAP lives there.
	NetNS string
	// Confine places the started VMM process into its resource limits
	// (cgroup) before the guest runs. May be nil.
	Confine func(pid int) error
	// UID and GID, when non-zero, are the unprivileged identity the VMM
	// process runs as.
	UID, GID uint32
	// Groups are that identity's supplementary groups (the group that may
	// open /dev/kvm); none when empty.
	Groups []uint32
}

// Disk is a block device backing file.
type Disk struct {
	Path string
	// Format is "raw" or "qcow2" (QEMU only).
	Format   string
	ReadOnly bool
}

// NetDevice is a guest network interface backed by a TAP.
type NetDevice struct {
	TAP string
	MAC string
}

// Driver starts guests. Each method returns once the VMM process runs and
// its control channel answers; the guest's own readiness (envd) is the
// caller's to poll.
type Driver interface {
	// Name identifies the driver ("qemu", "firecracker").
	Name() string
	// Boot starts a fresh guest.
	Boot(ctx context.Context, spec Spec) (Machine, error)
	// Restore starts a guest from a snapshot written by Machine.Snapshot into
	// dir. The guest runs (not paused) when Restore returns.
	Restore(ctx context.Context, spec Spec, dir string) (Machine, error)
	// Attach re-adopts a VMM process started by an earlier agent, found
	// through spec.Dir. It fails with errdefs.ErrNotFound if none runs.
	Attach(ctx context.Context, spec Spec) (Machine, error)
}

// Machine is one running VMM process.
type Machine interface {
	// PID of the VMM process.
	PID() int
	// Pause freezes the vCPUs; memory and device state stay in place.
	Pause(ctx context.Context) error
	// Resume continues a paused guest.
	Resume(ctx context.Context) error
	// Snapshot writes the device state (and memory, unless it lives in
	// Spec.MemoryFile) of a paused guest into dir, ready for Restore. A
	// running guest is errdefs.ErrFailedPrecondition.
	Snapshot(ctx context.Context, dir string) error
	// Stop ends the VMM process (gracefully, then by force once ctx is
	// done) and releases its resources. Stopping a stopped machine succeeds.
	Stop(ctx context.Context) error
	// Wait blocks until the VMM process exits.
	Wait(ctx context.Context) error
	// Close lets go of the VMM without stopping it (agent shutdown leaves
	// guests running; a later Attach finds them again).
	Close() error
}

// BootTimeout bounds how long a driver waits for its own control channel.
const BootTimeout = 30 * time.Second
