package firecracker

import (
	"testing"

	"github.com/wrenn/wrenn/internal/vmm"
	"github.com/wrenn/wrenn/internal/vmm/vmmtest"
)

// TestDriverSuite runs the shared vmm contract suite against the driver
// with fctest's stand-in firecracker process.
func TestDriverSuite(t *testing.T) {
	vmmtest.Run(t, vmmtest.Harness{
		NewDriver: func(t *testing.T) vmm.Driver { return testDriver(t) },
		NewSpec:   testSpec,
		Release:   func(m vmm.Machine) error { return m.(*Machine).Close() },
	})
}
