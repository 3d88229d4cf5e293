// Package testenv tells tests whether this machine can run what they need
// (root, QEMU, the guest images) and skips them, naming what is missing, when
// it cannot. With WRENN_TEST_REQUIRE_VM=1 (set by `make test` as root) a
// missing prerequisite fails the test instead, so CI never passes silently.
//
// testenv imports internal/vmm/qemu (for Probe and DefaultBinary), so the
// qemu package's own tests that need it live in package qemu_test.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// Images are the guest images tests boot.
type Images struct {
	// Dir is the WRENN_DIR holding them.
	Dir    string
	Kernel kernels.Kernel
	// Rootfs is the minimal template's rootfs.ext4.
	Rootfs string
}

// Dir is where `make images` put the images: $WRENN_DIR or /var/lib/wrenn.
func Dir() string {
	if d := os.Getenv("WRENN_DIR"); d != "" {
		return d
	}
	return "/var/lib/wrenn"
}

// Missing skips tb with the reason, or fails it when WRENN_TEST_REQUIRE_VM=1.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv("WRENN_TEST_REQUIRE_VM") == "1" {
		tb.Fatalf("WRENN_TEST_REQUIRE_VM=1 but %s", what)
	}
	tb.Skip(what)
}

// RequireRoot skips (or fails) a test that must run as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "needs root")
	}
}

// LookPath returns the path of bin, or skips (or fails) tb naming it.
func LookPath(tb testing.TB, bin string) string {
	tb.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		Missing(tb, "needs "+bin+" in PATH (scripts/deps.sh installs it)")
	}
	return p
}

// Kernel returns the guest kernel new sandboxes boot (kernels.Latest in
// Dir()/kernels), or skips (or fails) tb when there is none.
func Kernel(tb testing.TB) kernels.Kernel {
	tb.Helper()
	k, err := kernels.Latest(filepath.Join(Dir(), "kernels"))
	if err != nil {
		Missing(tb, "needs a guest kernel: "+err.Error())
	}
	return k
}

// Rootfs returns the minimal template's rootfs.ext4, or skips (or fails) tb
// when it is missing.
func Rootfs(tb testing.TB) string {
	tb.Helper()
	rootfs := filepath.Join(Dir(), "images", "minimal", "rootfs.ext4")
	if _, err := os.Stat(rootfs); err != nil {
		Missing(tb, "needs the minimal rootfs at "+rootfs+" (make images)")
	}
	return rootfs
}

// RequireVM checks for everything a test that boots a real guest needs:
// root, /dev/net/tun, qemu-system-x86_64, qemu-img, a guest kernel and the
// minimal rootfs.
func RequireVM(tb testing.TB) Images {
	tb.Helper()
	RequireRoot(tb)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		Missing(tb, "needs /dev/net/tun: "+err.Error())
	}
	for _, bin := range []string{qemu.DefaultBinary, "qemu-img"} {
		LookPath(tb, bin)
	}
	return Images{Dir: Dir(), Kernel: Kernel(tb), Rootfs: Rootfs(tb)}
}

var accel struct {
	once   sync.Once
	choice qemu.AccelChoice
}

// Accel returns the accelerator tests should boot guests with: the one
// named by WRENN_TEST_ACCEL (tcg|kvm) or else qemu.Probe's choice, probed
// once per test binary because a failing KVM probe costs seconds.
func Accel(kernel string) qemu.AccelChoice {
	accel.once.Do(func() {
		if a := os.Getenv("WRENN_TEST_ACCEL"); a != "" {
			accel.choice = qemu.AccelChoice{Accel: qemu.Accel(a), Reason: "WRENN_TEST_ACCEL"}
			return
		}
		accel.choice = qemu.Probe(context.Background(), qemu.DefaultBinary, kernel)
	})
	return accel.choice
}
