package qemu

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Accel is the QEMU accelerator a driver runs guests with.
type Accel string

const (
	// AccelKVM is hardware virtualisation through /dev/kvm.
	AccelKVM Accel = "kvm"
	// AccelTCG is QEMU's software emulation; slow but works anywhere.
	AccelTCG Accel = "tcg"
)

// Names of the files a machine keeps in vmm.Spec.Dir.
const (
	QMPSocketName     = "qmp.sock"
	ConsoleSocketName = "console.sock"
	PIDFileName       = "vmm.pid"
	QEMULogName       = "qemu.log"
	ConsoleLogName    = "console.log"
)

// Files in a snapshot directory written by Machine.Snapshot.
const (
	stateFileName    = "vmstate"
	snapshotMetaName = "snapshot.json"
)

// baseKernelArgs come before vmm.Spec.KernelArgs: the serial console, and a
// panic or reboot that ends QEMU (with -no-reboot) instead of looping.
// TCGTranslationCacheMB bounds the translation cache under TCG. The agent's
// per-sandbox cgroup allows guest RAM plus an overhead (agent
// DefaultVMMOverheadMB, 256 MiB) that must cover it and QEMU's own memory.
const TCGTranslationCacheMB = 128

// no_timer_check: the kernel's boot-time check that the timer interrupt
// arrives (check_timer) fails when an emulated (TCG) guest is starved of
// CPU, and then panics ("IO-APIC + timer doesn't work"); found by the
// soak on a loaded 2-core host. VMs do not need the check.
const baseKernelArgs = "console=ttyS0 reboot=k panic=1 no_timer_check"

// sandboxArgs is QEMU's seccomp filter. spawn=deny is why snapshots migrate
// to a passed fd rather than "exec:cat > file".
const sandboxArgs = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

var (
	idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// Args returns QEMU's argv (without argv[0]) for spec. With incoming set,
// QEMU waits for migrate-incoming (Restore). The guest always starts paused
// (-S) so the caller can confine the process before any guest code runs.
// Errors are errdefs.ErrInvalidArgument and name the bad field.
func Args(spec vmm.Spec, accel Accel, incoming bool) ([]string, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	machine := "microvm,acpi=off"
	if spec.MemoryFile != "" {
		machine += ",memory-backend=mem"
	}
	var a []string
	add := func(s ...string) { a = append(a, s...) }

	if spec.ID != "" {
		add("-name", "guest="+spec.ID+",process=wrenn-"+spec.ID)
	}
	add("-M", machine)
	switch accel {
	case AccelKVM:
		// arch-capabilities off: some KVM implementations (PVM among them)
		// reject the MSR QEMU would otherwise set, aborting at start.
		add("-accel", "kvm", "-cpu", "host,-arch-capabilities")
	case AccelTCG:
		// QEMU's default TCG translation cache is 1 GiB of anonymous memory,
		// filled as the guest runs new code: a long-lived guest outgrows any
		// sensible cgroup limit and is OOM-killed (this was the "fork source
		// stops answering" bug). A bounded cache only costs retranslation.
		add("-accel", "tcg,tb-size="+strconv.Itoa(TCGTranslationCacheMB), "-cpu", "max")
	default:
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "qemu args: unknown accelerator %q", accel)
	}
	add("-smp", strconv.Itoa(spec.VCPUs), "-m", strconv.Itoa(spec.MemoryMB))
	if spec.MemoryFile != "" {
		// share=on makes guest RAM the file itself, so x-ignore-shared can
		// skip it during a snapshot.
		add("-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=on",
			spec.MemoryMB, optValue(spec.MemoryFile)))
	}
	add("-nodefaults", "-no-user-config", "-nographic", "-no-reboot")
	add("-sandbox", sandboxArgs)
	add("-S")
	add("-qmp", "unix:"+optValue(filepath.Join(spec.Dir, QMPSocketName))+",server=on,wait=off")
	add("-chardev", "socket,id=con,path="+optValue(filepath.Join(spec.Dir, ConsoleSocketName))+",server=on,wait=off")
	add("-serial", "chardev:con")
	add("-pidfile", filepath.Join(spec.Dir, PIDFileName))
	add("-kernel", spec.Kernel)
	add("-append", kernelCmdline(spec.KernelArgs))
	if d := spec.RootDisk; d.Path != "" {
		drive := fmt.Sprintf("id=root,file=%s,format=%s,if=none,cache=writeback", optValue(d.Path), d.Format)
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			// Lets a guest fstrim return space to a qcow2 overlay.
			drive += ",discard=unmap"
		}
		add("-drive", drive, "-device", "virtio-blk-device,drive=root")
	}
	if n := spec.Net; n != nil {
		hw, _ := net.ParseMAC(n.MAC) // checked by validateSpec
		// vhost=off: vhost-net is not available on every host (it is not on
		// PVM hosts) and userspace virtio-net is fast enough for a sandbox.
		add("-netdev", "tap,id=n0,ifname="+n.TAP+",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-device,netdev=n0,mac="+hw.String())
	}
	add("-object", "rng-random,filename=/dev/urandom,id=rng0", "-device", "virtio-rng-device,rng=rng0")
	if incoming {
		add("-incoming", "defer")
	}
	return a, nil
}

func kernelCmdline(extra string) string {
	extra = strings.TrimSpace(extra)
	if extra == "" {
		return baseKernelArgs
	}
	return baseKernelArgs + " " + extra
}

// optValue escapes a value inside a QEMU "key=value,..." option string, where
// a literal comma is written twice.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func validateSpec(spec vmm.Spec) error {
	bad := func(format string, args ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "qemu spec: "+format, args...)
	}
	if spec.ID != "" && !idRe.MatchString(spec.ID) {
		return bad("id %q: want 1-63 of [A-Za-z0-9._-]", spec.ID)
	}
	for _, p := range []struct{ name, path string }{
		{"dir", spec.Dir}, {"kernel", spec.Kernel},
	} {
		if !filepath.IsAbs(p.path) {
			return bad("%s %q: want an absolute path", p.name, p.path)
		}
	}
	for _, p := range []struct{ name, path string }{
		{"root disk", spec.RootDisk.Path}, {"memory file", spec.MemoryFile}, {"netns", spec.NetNS},
	} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return bad("%s %q: want an absolute path", p.name, p.path)
		}
	}
	// Sockets live in Dir; sun_path holds 107 bytes plus NUL.
	if n := len(filepath.Join(spec.Dir, ConsoleSocketName)); n > 107 {
		return bad("dir %q: too long for a unix socket path (%d > 107 bytes)", spec.Dir, n)
	}
	if spec.VCPUs < 1 || spec.VCPUs > 64 {
		return bad("vcpus %d: want 1-64", spec.VCPUs)
	}
	if spec.MemoryMB < 16 || spec.MemoryMB > 1<<20 {
		return bad("memory %d MiB: want 16-1048576", spec.MemoryMB)
	}
	if spec.RootDisk.Path != "" {
		switch spec.RootDisk.Format {
		case "raw", "qcow2":
		default:
			return bad("root disk format %q: want raw or qcow2", spec.RootDisk.Format)
		}
	}
	return spec.ValidateCommon()
}
