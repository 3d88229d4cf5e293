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
//  2. the operator's ceiling (PoolConfig.EgressDeny, DefaultEgressDeny
//     unless configured): what no sandbox on this host may reach;
//  3. DenyOut;
//  4. AllowOut;
//  5. private ranges (RFC 1918 and CGNAT 100.64.0.0/10), unless allowed in 4;
//  6. Internet: everything else.
//
// So the ceiling beats DenyOut beats AllowOut beats Internet: a tenant's
// policy can only narrow what the operator allows. An AllowOut that
// overlaps the ceiling is refused (Pool.CheckPolicy) rather than silently
// cut, so the tenant learns at once that it cannot have it. Prefixes are
// IPv4; the guest has no IPv6 and all of its IPv6 is dropped.
type Policy struct {
	Internet bool
	AllowOut []netip.Prefix
	DenyOut  []netip.Prefix
}

// DefaultEgressDeny is the operator ceiling when none is configured: every
// range that is not the public Internet. The IPv6 entries matter only to
// CheckPolicy's overlap test (guest IPv6 is dropped entirely), and keep the
// documented list honest should the guest ever get IPv6.
var DefaultEgressDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network", unspecified
	netip.MustParsePrefix("10.0.0.0/8"),     // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT, RFC 6598
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // RFC 1918
	netip.MustParsePrefix("192.168.0.0/16"), // RFC 1918
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast 255.255.255.255
	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("::1/128"),        // loopback
	netip.MustParsePrefix("fc00::/7"),       // unique local
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("ff00::/8"),       // multicast
}

// checkCeiling refuses, as InvalidArgument naming both prefixes, an
// AllowOut entry that overlaps the ceiling: such a rule could never take
// effect, and accepting it would let the tenant believe it had.
func checkCeiling(p Policy, ceiling []netip.Prefix) error {
	for _, a := range p.AllowOut {
		for _, c := range ceiling {
			if a.Overlaps(c) {
				return errdefs.New(errdefs.ErrInvalidArgument,
					"network policy: allow_out %s overlaps %s, which this host never lets sandboxes reach (operator egress ceiling)", a, c)
			}
		}
	}
	return nil
}

// ipv4Only drops the IPv6 prefixes, which the IPv4-only egress chain
// cannot express (and does not need: guest IPv6 is dropped).
func ipv4Only(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
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
