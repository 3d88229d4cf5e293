package drivers

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// host is a fake machine: which binaries exist and what the KVM probe says.
type host struct {
	qemu, firecracker bool
	accel             qemu.AccelChoice

	probes     int
	probedBin  string
	probedKern string
	checkedFC  string
	lookedQEMU string
}

func (h *host) config(vmmName string) Config {
	return Config{
		VMM:         vmmName,
		ProbeKernel: "/k/vmlinux",
		lookPath: func(file string) (string, error) {
			h.lookedQEMU = file
			if !h.qemu {
				return "", exec.ErrNotFound
			}
			return "/usr/bin/" + file, nil
		},
		fcAvailable: func(bin string) bool { h.checkedFC = bin; return h.firecracker },
		probe: func(_ context.Context, bin, kernel string) qemu.AccelChoice {
			h.probes++
			h.probedBin, h.probedKern = bin, kernel
			return h.accel
		},
	}
}

func TestNew(t *testing.T) {
	kvm := qemu.AccelChoice{Accel: qemu.AccelKVM, Reason: "KVM probe guest booted"}
	tcg := qemu.AccelChoice{Accel: qemu.AccelTCG, Reason: "/dev/kvm missing"}
	tests := []struct {
		name string
		vmm  string
		host host
		// wantDriver empty means an error of kind wantErr.
		wantDriver string
		wantAccel  qemu.Accel
		wantReason []string
		wantErr    error
	}{
		{name: "auto picks firecracker when installed", vmm: Auto, host: host{qemu: true, firecracker: true, accel: kvm},
			wantDriver: Firecracker, wantReason: []string{"auto", "is installed"}},
		{name: "empty means auto", vmm: "", host: host{qemu: true, firecracker: true},
			wantDriver: Firecracker, wantReason: []string{"auto"}},
		{name: "auto falls back to qemu with kvm", vmm: Auto, host: host{qemu: true, accel: kvm},
			wantDriver: QEMU, wantAccel: qemu.AccelKVM, wantReason: []string{"not installed", "KVM probe guest booted"}},
		{name: "auto falls back to qemu with tcg", vmm: Auto, host: host{qemu: true, accel: tcg},
			wantDriver: QEMU, wantAccel: qemu.AccelTCG, wantReason: []string{"not installed", "/dev/kvm missing"}},
		{name: "qemu even when firecracker is installed", vmm: QEMU, host: host{qemu: true, firecracker: true, accel: tcg},
			wantDriver: QEMU, wantAccel: qemu.AccelTCG, wantReason: []string{"WRENN_VMM=qemu", "/dev/kvm missing"}},
		{name: "firecracker when installed", vmm: Firecracker, host: host{firecracker: true},
			wantDriver: Firecracker, wantReason: []string{"WRENN_VMM=firecracker"}},
		{name: "firecracker missing", vmm: Firecracker, host: host{qemu: true}, wantErr: errdefs.ErrFailedPrecondition},
		{name: "qemu missing", vmm: QEMU, host: host{firecracker: true}, wantErr: errdefs.ErrFailedPrecondition},
		{name: "auto with nothing installed", vmm: Auto, host: host{}, wantErr: errdefs.ErrFailedPrecondition},
		{name: "unknown name", vmm: "kvmtool", host: host{qemu: true, firecracker: true}, wantErr: errdefs.ErrInvalidArgument},
		{name: "names are case sensitive", vmm: "QEMU", host: host{qemu: true}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.host
			d, choice, err := New(context.Background(), h.config(tt.vmm))
			if tt.wantDriver == "" {
				if !errors.Is(err, tt.wantErr) || d != nil {
					t.Fatalf("New = %v, %v; want no driver and %v", d, err, tt.wantErr)
				}
				if h.probes != 0 {
					t.Errorf("probed KVM %d times for a failed choice", h.probes)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if d.Name() != tt.wantDriver || choice.Driver != tt.wantDriver || choice.Accel != tt.wantAccel {
				t.Errorf("New = driver %s, choice %+v; want %s with accel %q", d.Name(), choice, tt.wantDriver, tt.wantAccel)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(choice.Reason, w) {
					t.Errorf("reason %q does not mention %q", choice.Reason, w)
				}
			}
			switch tt.wantDriver {
			case QEMU:
				if h.probes != 1 || h.probedBin != "/usr/bin/"+qemu.DefaultBinary || h.probedKern != "/k/vmlinux" {
					t.Errorf("probe ran %d times with %q %q; want once with the resolved binary and the probe kernel",
						h.probes, h.probedBin, h.probedKern)
				}
			case Firecracker:
				if h.probes != 0 {
					t.Errorf("probed QEMU's accelerator %d times for firecracker", h.probes)
				}
			}
		})
	}
}

func TestNewDefaultsBinaries(t *testing.T) {
	h := host{qemu: true, accel: qemu.AccelChoice{Accel: qemu.AccelTCG}}
	if _, _, err := New(context.Background(), h.config(Auto)); err != nil {
		t.Fatal(err)
	}
	if h.checkedFC != "/usr/local/bin/firecracker" || h.lookedQEMU != qemu.DefaultBinary {
		t.Errorf("checked firecracker %q and qemu %q; want the packages' defaults", h.checkedFC, h.lookedQEMU)
	}
	cfg := h.config(Auto)
	cfg.FirecrackerBinary, cfg.QEMUBinary = "/opt/fc", "qemu-custom"
	if _, _, err := New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if h.checkedFC != "/opt/fc" || h.lookedQEMU != "qemu-custom" {
		t.Errorf("checked firecracker %q and qemu %q; want the configured ones", h.checkedFC, h.lookedQEMU)
	}
}

func TestKnown(t *testing.T) {
	for _, tt := range []struct {
		name string
		want bool
	}{{"auto", true}, {"qemu", true}, {"firecracker", true}, {"", false}, {"Qemu", false}, {"cloud-hypervisor", false}} {
		if got := Known(tt.name); got != tt.want {
			t.Errorf("Known(%q) = %t, want %t", tt.name, got, tt.want)
		}
	}
}
