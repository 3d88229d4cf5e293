package qemu

import (
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmtest"
)

func TestDriverSuite(t *testing.T) {
	kernel := haltKernel(t)
	findQEMU(t)
	vmmtest.Run(t, vmmtest.Harness{
		NewDriver: func(t *testing.T) vmm.Driver { return testDriver(t) },
		NewSpec: func(t *testing.T) vmm.Spec {
			s := haltSpec(t, kernel)
			s.MemoryFile = filepath.Join(s.Dir, "mem")
			return s
		},
		Release: func(m vmm.Machine) error { return m.(*Machine).Close() },
	})
}
