package firecracker

import (
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
)

// Names of the files a machine keeps in vmm.Spec.Dir.
const (
	APISocketName   = "firecracker.sock"
	PIDFileName     = "vmm.pid"
	ConsoleFIFOName = "console.fifo"
	ConsoleLogName  = "console.log"
)

// Files in a snapshot directory written by Machine.Snapshot.
const (
	stateFileName    = "vmstate"
	memoryFileName   = "memory"
	snapshotMetaName = "snapshot.json"
)

// baseKernelArgs come before vmm.Spec.KernelArgs: the serial console;
// reboot=k so a guest reboot (and SendCtrlAltDel) resets through the i8042
// controller, which makes Firecracker exit; panic=1 to turn a panic into
// that reboot; pci=off because Firecracker's devices are virtio-mmio.
// no_timer_check: see the QEMU driver's baseKernelArgs.
const baseKernelArgs = "console=ttyS0 reboot=k panic=1 pci=off no_timer_check"

// Device ids the driver gives Firecracker. A snapshot remembers them, so
// they must never change.
const (
	rootDriveID = "rootfs"
	netIfaceID  = "eth0"
)

var (
	// Firecracker's --id: alphanumerics and hyphens, at most 64.
	fcIDRe = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// call is one API request of a lifecycle step.
type call struct {
	Method, Path string
	Body         any
}

// bootCalls is the configuration Boot sends, in order, ending with
// InstanceStart. Firecracker needs no particular order among the pre-boot
// resources; this one is fixed so tests can pin it.
func bootCalls(spec vmm.Spec) []call {
	calls := []call{
		{http.MethodPut, "/machine-config", machineConfig{VCPUCount: spec.VCPUs, MemSizeMiB: spec.MemoryMB}},
		{http.MethodPut, "/boot-source", bootSource{KernelImagePath: spec.Kernel, BootArgs: kernelCmdline(spec.KernelArgs)}},
		{http.MethodPut, "/drives/" + rootDriveID, drive{
			DriveID: rootDriveID, PathOnHost: spec.RootDisk.Path, IsRootDevice: true, IsReadOnly: spec.RootDisk.ReadOnly,
		}},
	}
	if n := spec.Net; n != nil {
		calls = append(calls, call{http.MethodPut, "/network-interfaces/" + netIfaceID, networkInterface{
			IfaceID: netIfaceID, HostDevName: n.TAP, GuestMAC: normalMAC(n.MAC),
		}})
	}
	return append(calls, call{http.MethodPut, "/actions", instanceAction{ActionType: "InstanceStart"}})
}

// processArgs is firecracker's argv after argv[0]. Attach recognises the
// process by its --api-sock argument.
func processArgs(spec vmm.Spec) []string {
	a := []string{"--api-sock", filepath.Join(spec.Dir, APISocketName)}
	// Firecracker refuses ids it does not like; the id only names the
	// process, so an id it would refuse is left out rather than failing.
	if fcIDRe.MatchString(spec.ID) {
		a = append(a, "--id", spec.ID)
	}
	return a
}

func kernelCmdline(extra string) string {
	extra = strings.TrimSpace(extra)
	if extra == "" {
		return baseKernelArgs
	}
	return baseKernelArgs + " " + extra
}

func normalMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return s // validateSpec has rejected it already
	}
	return hw.String()
}

// validateSpec checks what Firecracker would only reject after starting,
// and what it cannot do at all (qcow2). Errors are ErrInvalidArgument.
func validateSpec(spec vmm.Spec) error {
	bad := func(format string, args ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "firecracker spec: "+format, args...)
	}
	for _, p := range []struct{ name, path string }{
		{"dir", spec.Dir}, {"kernel", spec.Kernel}, {"root disk", spec.RootDisk.Path},
	} {
		if !filepath.IsAbs(p.path) {
			return bad("%s %q: want an absolute path", p.name, p.path)
		}
	}
	if spec.NetNS != "" && !filepath.IsAbs(spec.NetNS) {
		return bad("netns %q: want an absolute path", spec.NetNS)
	}
	// sun_path holds 107 bytes plus NUL.
	if n := len(filepath.Join(spec.Dir, APISocketName)); n > 107 {
		return bad("dir %q: too long for a unix socket path (%d > 107 bytes)", spec.Dir, n)
	}
	if spec.RootDisk.Format != "raw" {
		return bad("root disk format %q: firecracker only reads raw images", spec.RootDisk.Format)
	}
	// Firecracker's limit is 32 vCPUs (machine-config vcpu_count maximum).
	if spec.VCPUs < 1 || spec.VCPUs > 32 {
		return bad("vcpus %d: want 1-32", spec.VCPUs)
	}
	if spec.MemoryMB < 16 || spec.MemoryMB > 1<<20 {
		return bad("memory %d MiB: want 16-1048576", spec.MemoryMB)
	}
	return spec.ValidateCommon()
}
