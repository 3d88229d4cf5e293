// Package network owns the host side of sandbox networking: one network
// namespace per sandbox slot, the veth pair and TAP device that connect it,
// the NAT that lets every guest keep the same address, and the nftables
// egress policy enforced where the guest cannot reach it.
//
// Layout of slot i (defaults shown, prefix "wrenn-"):
//
//	host netns                         slot netns /run/netns/wrenn-i          guest (VM)
//	wrenn-i 10.12.x.2i/31  <--veth-->  veth0 10.12.x.2i+1/31
//	route 10.11.x.i/32 via veth        tap0 169.254.0.22/30     <--TAP-->     169.254.0.21/30 gw .22
//
// The agent reaches the guest at [Slot.HostIP] (10.11.x.i), which the slot
// netns DNATs to 169.254.0.21; guest traffic is SNATed there to the netns's
// veth address and masqueraded once more on the host. Because the guest's own
// address never changes, a snapshot taken in one slot resumes in any other.
//
// Everything is named from the pool's prefix and the slot index, so the agent
// can find what it created after a crash ([Pool.Reclaim]) and tests can run
// beside a live agent with a prefix of their own.
package network

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
)

// Fixed guest-side addressing, identical in every slot.
var (
	// GuestIP is the guest's address on its only interface.
	GuestIP = netip.MustParseAddr("169.254.0.21")
	// GatewayIP is the TAP's address in the slot netns and the guest's default gateway.
	GatewayIP = netip.MustParseAddr("169.254.0.22")
	// GatewayMAC is the TAP's MAC in every slot. A guest restored from a
	// snapshot into another slot keeps its ARP entry for the gateway; with
	// the same MAC everywhere that entry stays right, and the guest answers
	// at once instead of after its neighbour cache times out.
	GatewayMAC = net.HardwareAddr{0x02, 0x77, 0x72, 0x6e, 0x00, 0xfe}
	// GuestMAC is the guest NIC's MAC in every slot, as GuestIP is its
	// address. The slot netns holds a permanent neighbour entry for it, so
	// the first packet to a booting guest is never held up by ARP.
	GuestMAC = net.HardwareAddr{0x02, 0x77, 0x72, 0x6e, 0x00, 0x01}
)

const (
	// GuestPrefixLen is the prefix length of the guest/TAP link (a /30).
	GuestPrefixLen = 30
	// TapName is the TAP device inside every slot netns; the VMM opens it from there.
	TapName = "tap0"
	// nsVethName is the slot netns's end of the veth pair.
	nsVethName = "veth0"
	// guestVethName is the emulated guest's interface (tests only, see PoolConfig.EmulateGuest).
	guestVethName = "eth0"
	// guestNSSuffix marks the emulated guest's netns: "<prefix><i>g".
	guestNSSuffix = "g"
)

// Slot is one sandbox's network. Every name and address is derived from Index
// and the pool's configuration; a Slot carries no other identity, which is
// what lets a restarted agent adopt it by index alone.
type Slot struct {
	// Index is the slot number, 1..PoolConfig.Slots.
	Index int

	l *layout

	// mu serialises Setup, SetPolicy and Release of this slot.
	mu       sync.Mutex
	released bool
}

// NetNSName is the name of the slot's network namespace (as `ip netns` shows it).
func (s *Slot) NetNSName() string { return s.l.prefix + strconv.Itoa(s.Index) }

// NetNSPath is the bind mount that keeps the slot's namespace alive; the VMM
// is started inside it (setns on this path, or `ip netns exec`).
func (s *Slot) NetNSPath() string { return filepath.Join(s.l.netnsDir, s.NetNSName()) }

// HostVeth is the name of the host's end of the slot's veth pair.
func (s *Slot) HostVeth() string { return s.l.prefix + strconv.Itoa(s.Index) }

// HostIP is the address at which the host reaches the guest (DNATed to
// GuestIP), e.g. HostIP():49983 for envd.
func (s *Slot) HostIP() netip.Addr { return addN(s.l.hostCIDR.Addr(), uint32(s.Index)) }

// VethHostAddr is the host's address on the slot's veth /31.
func (s *Slot) VethHostAddr() netip.Addr { return addN(s.l.vethCIDR.Addr(), 2*uint32(s.Index)) }

// VethNSAddr is the slot netns's address on the veth /31; guest traffic leaves
// the namespace with this source address.
func (s *Slot) VethNSAddr() netip.Addr { return addN(s.l.vethCIDR.Addr(), 2*uint32(s.Index)+1) }

// GuestNetNSPath is the namespace that plays the guest when the pool was made
// with EmulateGuest (tests only). It is empty otherwise.
func (s *Slot) GuestNetNSPath() string {
	if !s.l.emulateGuest {
		return ""
	}
	return filepath.Join(s.l.netnsDir, s.guestNetNSName())
}

func (s *Slot) guestNetNSName() string { return s.NetNSName() + guestNSSuffix }

// layout is the immutable, validated part of a PoolConfig that slots derive
// their names and addresses from.
type layout struct {
	prefix       string
	slots        int
	hostCIDR     netip.Prefix
	vethCIDR     netip.Prefix
	table        string
	netnsDir     string
	hostNetNS    string
	emulateGuest bool
	egressDeny   []netip.Prefix // the operator ceiling, never nil after layout()
}

// parseIndex returns i for a name "<prefix><i>" with i a canonical decimal in
// 1..slots. Anything else is not ours.
func (l *layout) parseIndex(name string) (int, bool) {
	rest, ok := cutPrefix(name, l.prefix)
	if !ok || rest == "" || rest[0] == '0' {
		return 0, false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 1 || i > l.slots {
		return 0, false
	}
	return i, true
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return "", false
	}
	return s[len(prefix):], true
}

// addN returns the IPv4 address n after a.
func addN(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
