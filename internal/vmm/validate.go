package vmm

import (
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// tapName is a Linux interface name as the drivers pass it on.
var tapName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)

// ValidateCommon checks the parts of a Spec every driver reads the same
// way (the NIC and the kernel command line), as InvalidArgument errors.
// Drivers add their own limits (vCPUs, memory, disk formats, paths).
func (s Spec) ValidateCommon() error {
	bad := func(format string, args ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "vm spec: "+format, args...)
	}
	if n := s.Net; n != nil {
		if !tapName.MatchString(n.TAP) {
			return bad("tap %q: want an interface name of 1-15 of [A-Za-z0-9._-]", n.TAP)
		}
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return bad("mac %q: want a 48-bit MAC like 02:fc:00:00:00:01", n.MAC)
		}
		if hw[0]&1 == 1 {
			return bad("mac %q: a multicast address cannot name a NIC", n.MAC)
		}
	}
	if strings.ContainsAny(s.KernelArgs, "\x00\n") {
		return bad("kernel args contain a NUL or newline")
	}
	// Both VMMs append their virtio-mmio device list to the command line;
	// past a "--" it would go to init and the guest would find no devices.
	if slices.Contains(strings.Fields(s.KernelArgs), "--") {
		return bad(`kernel args contain "--": the VMM appends device parameters that must stay before it`)
	}
	return nil
}
