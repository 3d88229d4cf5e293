package network

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Defaults for the zero fields of a PoolConfig.
const (
	DefaultPrefix   = "wrenn-"
	DefaultSlots    = 1024
	DefaultTable    = "wrenn"
	DefaultNetNSDir = "/run/netns"
)

// Default address ranges; see PoolConfig.
var (
	DefaultHostCIDR = netip.MustParsePrefix("10.11.0.0/16")
	DefaultVethCIDR = netip.MustParsePrefix("10.12.0.0/16")
)

// maxIfName is IFNAMSIZ-1: the longest interface name Linux accepts.
const maxIfName = 15

// PoolConfig configures a Pool. The zero value of each field means its default.
// A test uses its own Prefix (and may use its own HostNetNS) so that it never
// touches, and Reclaim never deletes, a running agent's slots.
type PoolConfig struct {
	// Prefix names the slot namespaces and host veths "<Prefix><index>".
	// Letters, digits and '-' only; it must leave room for the index within
	// the 15-byte interface name limit. Default "wrenn-".
	Prefix string
	// Slots bounds the number of concurrent slots; indexes are 1..Slots. Default 1024.
	Slots int
	// HostCIDR holds the per-slot addresses the host dials (slot i gets
	// the i-th address). IPv4. Default 10.11.0.0/16.
	HostCIDR netip.Prefix
	// VethCIDR holds the per-slot veth /31s (slot i gets the i-th /31). IPv4,
	// disjoint from HostCIDR. Default 10.12.0.0/16.
	VethCIDR netip.Prefix
	// Table is the name of our nftables table (family inet), on the host and
	// in each slot netns. Default "wrenn".
	Table string
	// NetNSDir is where namespaces are bind-mounted. Default /run/netns, so
	// `ip netns exec wrenn-7 ...` works for debugging.
	NetNSDir string
	// HostNetNS is the path of the namespace treated as "the host" (veths,
	// routes, host nftables table, ip_forward). Default: the agent's own,
	// pinned by NewPool from the calling thread. Tests point it at a
	// namespace of their own so the machine's real routes and rules stay
	// untouched.
	HostNetNS string
	// EmulateGuest is for tests without a VM: Setup creates, instead of the
	// TAP, a veth named tap0 whose peer "eth0" sits in a namespace
	// "<Prefix><index>g" configured as the guest would be (GuestIP/30 via
	// GatewayIP). Slot.GuestNetNSPath names it. Never set in production.
	EmulateGuest bool
	// EgressDeny is the operator's egress ceiling: destinations no sandbox
	// may reach whatever its policy says, enforced before the tenant's
	// rules (see Policy). nil means DefaultEgressDeny; an empty non-nil
	// slice means no ceiling beyond the always-blocked ranges.
	EgressDeny []netip.Prefix
}

func (c PoolConfig) layout() (*layout, error) {
	l := &layout{
		prefix:       c.Prefix,
		slots:        c.Slots,
		hostCIDR:     c.HostCIDR,
		vethCIDR:     c.VethCIDR,
		table:        c.Table,
		netnsDir:     c.NetNSDir,
		hostNetNS:    c.HostNetNS,
		emulateGuest: c.EmulateGuest,
		egressDeny:   c.EgressDeny,
	}
	if l.egressDeny == nil {
		l.egressDeny = DefaultEgressDeny
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if l.slots == 0 {
		l.slots = DefaultSlots
	}
	if !l.hostCIDR.IsValid() {
		l.hostCIDR = DefaultHostCIDR
	}
	if !l.vethCIDR.IsValid() {
		l.vethCIDR = DefaultVethCIDR
	}
	if l.table == "" {
		l.table = DefaultTable
	}
	if l.netnsDir == "" {
		l.netnsDir = DefaultNetNSDir
	}

	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, errdefs.New(errdefs.ErrInvalidArgument, "network: "+format, args...))
	}
	for _, r := range l.prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			bad("prefix %q: only letters, digits and '-' are allowed", l.prefix)
			break
		}
	}
	if l.slots < 1 {
		bad("slots %d: must be at least 1", l.slots)
	}
	if n := len(l.prefix) + len(strconv.Itoa(l.slots)); n > maxIfName {
		bad("prefix %q with %d slots gives %d-byte interface names; the limit is %d", l.prefix, l.slots, n, maxIfName)
	}
	for _, p := range []struct {
		name string
		p    netip.Prefix
		need uint64 // addresses needed, including the unused first one(s)
	}{
		{"host CIDR", l.hostCIDR, uint64(l.slots) + 2},
		{"veth CIDR", l.vethCIDR, 2 * (uint64(l.slots) + 1)},
	} {
		switch {
		case !p.p.Addr().Is4():
			bad("%s %s: must be IPv4", p.name, p.p)
		case p.p != p.p.Masked():
			bad("%s %s: host bits set (use %s)", p.name, p.p, p.p.Masked())
		case uint64(1)<<(32-p.p.Bits()) < p.need:
			bad("%s %s is too small for %d slots", p.name, p.p, l.slots)
		}
	}
	for _, p := range l.egressDeny {
		if !p.IsValid() || p != p.Masked() {
			bad("egress deny %s: want a CIDR without host bits", p)
		}
	}
	if l.hostCIDR.Overlaps(l.vethCIDR) {
		bad("host CIDR %s overlaps veth CIDR %s", l.hostCIDR, l.vethCIDR)
	}
	if l.table == "" || len(l.table) > 255 {
		bad("table %q: invalid name", l.table)
	}
	if !filepath.IsAbs(l.netnsDir) {
		bad("netns dir %q: must be absolute", l.netnsDir)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("network pool config: %w", errors.Join(errs...))
	}
	return l, nil
}
