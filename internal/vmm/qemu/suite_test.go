package qemu_test

import (
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/testenv"
	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/qemu"
	"github.com/wrenn/wrenn/internal/vmm/vmmtest"
)

func TestDriverSuite(t *testing.T) {
	kernel := haltKernel(t)
	testenv.LookPath(t, qemu.DefaultBinary)
	vmmtest.Run(t, vmmtest.Harness{
		NewDriver: func(t *testing.T) vmm.Driver { return testDriver(t) },
		NewSpec: func(t *testing.T) vmm.Spec {
			s := haltSpec(t, kernel)
			s.MemoryFile = filepath.Join(s.Dir, "mem")
			return s
		},
		Release: func(m vmm.Machine) error { return m.(*qemu.Machine).Close() },
	})
}
