// Package drivers chooses the VMM driver the host agent runs guests with,
// keyed by WRENN_VMM: one function, one switch, no registry.
package drivers

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/firecracker"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
)

// Values of WRENN_VMM.
const (
	QEMU        = "qemu"
	Firecracker = "firecracker"
	// Auto picks Firecracker when its binary is installed, else QEMU.
	Auto = "auto"
)

// Known reports whether name is a value of WRENN_VMM that New accepts.
func Known(name string) bool {
	switch name {
	case QEMU, Firecracker, Auto:
		return true
	}
	return false
}

// Config says which driver to build and with what.
type Config struct {
	// VMM is WRENN_VMM: QEMU, Firecracker or Auto; empty means Auto.
	VMM string
	// QEMUBinary is looked up in PATH; qemu.DefaultBinary when empty.
	QEMUBinary string
	// FirecrackerBinary is firecracker.DefaultBinary when empty.
	FirecrackerBinary string
	// ProbeKernel is the guest kernel qemu.Probe boots to find out whether
	// KVM really runs guests. Without one the probe falls back to TCG.
	ProbeKernel string
	// ProbeCache, when set, is the file where a TCG choice is remembered
	// across agent starts (qemu.CachedProbe); empty: probe every start.
	ProbeCache string
	// Logger is handed to the driver; discarded when nil.
	Logger *slog.Logger

	// Host probes, replaced by tests; the real ones when nil.
	lookPath    func(file string) (string, error)
	fcAvailable func(binary string) bool
	probe       func(ctx context.Context, qemuBin, kernel string) qemu.AccelChoice
}

// Choice is what New decided and why, for the caller to log once.
type Choice struct {
	// Driver is the chosen driver's name (QEMU or Firecracker).
	Driver string
	// Accel is QEMU's accelerator; empty for Firecracker.
	Accel qemu.Accel
	// Reason explains the choice of driver and, for QEMU, of accelerator.
	Reason string
}

// LogValue renders the choice as one group of attributes.
func (c Choice) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("driver", c.Driver), slog.String("reason", c.Reason)}
	if c.Accel != "" {
		attrs = append(attrs, slog.String("accel", string(c.Accel)))
	}
	return slog.GroupValue(attrs...)
}

// New builds the driver cfg.VMM names. For QEMU it runs qemu.Probe once
// (which may boot a throwaway guest for up to qemu.ProbeTimeout) to choose
// between KVM and TCG. An unknown name is errdefs.ErrInvalidArgument; a
// driver whose binary is missing is errdefs.ErrFailedPrecondition.
func New(ctx context.Context, cfg Config) (vmm.Driver, Choice, error) {
	if cfg.QEMUBinary == "" {
		cfg.QEMUBinary = qemu.DefaultBinary
	}
	if cfg.FirecrackerBinary == "" {
		cfg.FirecrackerBinary = firecracker.DefaultBinary
	}
	if cfg.lookPath == nil {
		cfg.lookPath = exec.LookPath
	}
	if cfg.fcAvailable == nil {
		cfg.fcAvailable = firecracker.Available
	}
	if cfg.probe == nil {
		cfg.probe = qemu.Probe
		if cfg.ProbeCache != "" {
			cfg.probe = func(ctx context.Context, qemuBin, kernel string) qemu.AccelChoice {
				return qemu.CachedProbe(ctx, qemuBin, kernel, cfg.ProbeCache)
			}
		}
	}
	if cfg.VMM == "" {
		cfg.VMM = Auto
	}

	switch cfg.VMM {
	case Firecracker:
		if !cfg.fcAvailable(cfg.FirecrackerBinary) {
			return nil, Choice{}, errdefs.New(errdefs.ErrFailedPrecondition,
				"WRENN_VMM=firecracker but %s is missing or not executable", cfg.FirecrackerBinary)
		}
		return newFirecracker(cfg, "WRENN_VMM=firecracker")
	case Auto:
		if cfg.fcAvailable(cfg.FirecrackerBinary) {
			return newFirecracker(cfg, fmt.Sprintf("WRENN_VMM=auto and %s is installed", cfg.FirecrackerBinary))
		}
		return newQEMU(ctx, cfg, fmt.Sprintf("WRENN_VMM=auto and %s is not installed", cfg.FirecrackerBinary))
	case QEMU:
		return newQEMU(ctx, cfg, "WRENN_VMM=qemu")
	default:
		return nil, Choice{}, errdefs.New(errdefs.ErrInvalidArgument, "WRENN_VMM=%q: want auto, qemu or firecracker", cfg.VMM)
	}
}

func newFirecracker(cfg Config, why string) (vmm.Driver, Choice, error) {
	d := firecracker.New(firecracker.Config{Binary: cfg.FirecrackerBinary, Logger: cfg.Logger})
	return d, Choice{Driver: Firecracker, Reason: why}, nil
}

func newQEMU(ctx context.Context, cfg Config, why string) (vmm.Driver, Choice, error) {
	bin, err := cfg.lookPath(cfg.QEMUBinary)
	if err != nil {
		return nil, Choice{}, errdefs.New(errdefs.ErrFailedPrecondition, "%s: find %s: %v", why, cfg.QEMUBinary, err)
	}
	accel := cfg.probe(ctx, bin, cfg.ProbeKernel)
	d := qemu.New(qemu.Config{Binary: bin, Accel: accel.Accel, Logger: cfg.Logger})
	return d, Choice{Driver: QEMU, Accel: accel.Accel, Reason: why + "; " + accel.Reason}, nil
}
