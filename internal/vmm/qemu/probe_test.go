package qemu_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// TestProbeThisHost runs the real probe. On a host without working KVM
// (such as the PVM CI machines) it must choose TCG and say why.
func TestProbeThisHost(t *testing.T) {
	kernel := testenv.Kernel(t).Path
	bin := testenv.LookPath(t, qemu.DefaultBinary)
	got := qemu.Probe(context.Background(), bin, kernel)
	t.Logf("probe chose %s: %s", got.Accel, got.Reason)
	if got.Reason == "" {
		t.Fatal("probe gave no reason")
	}
	_, devErr := os.Stat(qemu.KVMDevice)
	_, pvmErr := os.Stat(qemu.PVMModule)
	switch {
	case devErr != nil:
		if got.Accel != qemu.AccelTCG || !strings.Contains(got.Reason, "/dev/kvm") {
			t.Fatalf("no /dev/kvm here but probe said %+v", got)
		}
	case pvmErr == nil:
		if got.Accel != qemu.AccelTCG || !strings.Contains(got.Reason, "PVM") {
			t.Fatalf("PVM host (stock kernels cannot run) but probe said %+v", got)
		}
	default:
		fmt.Printf("probe on a host with /dev/kvm and no PVM: %+v\n", got)
	}
}
