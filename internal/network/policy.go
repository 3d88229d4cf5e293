package network

import (
	"net/netip"
	"slices"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Policy is a sandbox's egress policy. It only decides which new connections
// the guest may open; replies to connections the host opened into the guest
// always pass.
//
// Precedence, first match wins:
//  1. always blocked, whatever the lists say: every slot's addresses (the
//     pool's host and veth ranges), the host's own addresses, link-local
//     169.254.0.0/16 (the cloud metadata service included), and the
//     unroutable 0/8, 127/8, multicast and 240/4;
//  2. DenyOut;
//  3. AllowOut;
//  4. private ranges (RFC 1918 and CGNAT 100.64.0.0/10), unless allowed in 3;
//  5. Internet: everything else.
//
// So DenyOut beats AllowOut beats Internet. Prefixes are IPv4; the guest has
// no IPv6 and all of its IPv6 is dropped.
type Policy struct {
	Internet bool
	AllowOut []netip.Prefix
	DenyOut  []netip.Prefix
}

// privateRanges are blocked unless a policy's AllowOut names them.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

// alwaysBlocked are blocked in every slot, in addition to the pool's ranges
// and the host's addresses. Link-local covers 169.254.169.254; the guest's
// traffic to its own gateway is local to the slot netns and never forwarded,
// so this does not cut the guest off its link.
var alwaysBlocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// Validate reports, as an InvalidArgument error, the first prefix that is not
// a valid IPv4 prefix.
func (p Policy) Validate() error {
	for _, list := range []struct {
		name string
		ps   []netip.Prefix
	}{{"allow", p.AllowOut}, {"deny", p.DenyOut}} {
		for _, pf := range list.ps {
			if !pf.IsValid() || !pf.Addr().Is4() || pf.Addr().Is4In6() {
				return errdefs.New(errdefs.ErrInvalidArgument, "network policy: %s prefix %q: must be an IPv4 CIDR", list.name, pf)
			}
		}
	}
	return nil
}

// compact masks the prefixes, sorts them and drops those contained in
// another, so a list renders to the fewest rules and the same list always
// renders the same way.
func compact(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	// Shorter prefixes first among equal addresses, so containers precede
	// what they contain.
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	kept := out[:0]
	for _, p := range out {
		if len(kept) > 0 {
			last := kept[len(kept)-1]
			if last.Bits() <= p.Bits() && last.Contains(p.Addr()) {
				continue
			}
		}
		kept = append(kept, p)
	}
	return kept
}
