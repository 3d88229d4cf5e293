package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// This file holds our small model of the nftables rulesets we install. The
// model is rendered to nft-like text (golden-file tests, logs) and compiled
// to netlink expressions (nft_linux.go); both are driven by the same structs,
// so what the tests read is what the kernel gets.

type verdictKind int

const (
	vAccept verdictKind = iota
	vDrop
	vReject // ICMP admin-prohibited: the guest sees EHOSTUNREACH at once instead of a timeout
	vJump
	vDNAT
	vSNAT
	vMasquerade
)

type verdict struct {
	kind  verdictKind
	chain string     // vJump
	addr  netip.Addr // vDNAT, vSNAT
}

// ifMatch matches an interface name; a trailing '*' matches a name prefix.
type ifMatch struct {
	name string
	not  bool
}

type addrMatch struct {
	p   netip.Prefix
	not bool
}

// ctState bits as the kernel defines them (NF_CT_STATE_BIT).
const (
	ctEstablished uint32 = 1 << 1
	ctRelated     uint32 = 1 << 2
)

type rule struct {
	iif, oif     ifMatch
	saddr, daddr addrMatch
	ipv4         bool   // meta nfproto ipv4 (implied by saddr/daddr)
	icmp         bool   // meta l4proto icmp
	ctState      uint32 // any of these bits
	ctDNAT       bool   // ct status dnat
	verdict      verdict
	comment      string
}

type chain struct {
	name   string
	typ    string // "filter" or "nat"; empty for a regular chain
	hook   string // "prerouting", "input", "forward", "postrouting"
	prio   int32
	policy string // "accept" or "drop", base chains only
	rules  []rule
}

type table struct {
	name   string
	chains []chain
}

// render prints t the way `nft list table` would, near enough to read.
func (t table) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", t.name)
	for i, c := range t.chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.hook != "" {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.typ, c.hook, c.prio, c.policy)
		}
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.render())
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (r rule) render() string {
	var parts []string
	ifname := func(key string, m ifMatch) {
		if m.name == "" {
			return
		}
		op := ""
		if m.not {
			op = "!= "
		}
		parts = append(parts, fmt.Sprintf("%s %s%q", key, op, m.name))
	}
	addr := func(key string, m addrMatch) {
		if !m.p.IsValid() {
			return
		}
		op := ""
		if m.not {
			op = "!= "
		}
		s := m.p.String()
		if m.p.IsSingleIP() {
			s = m.p.Addr().String()
		}
		parts = append(parts, fmt.Sprintf("ip %s %s%s", key, op, s))
	}
	ifname("iifname", r.iif)
	ifname("oifname", r.oif)
	if r.ipv4 {
		parts = append(parts, "meta nfproto ipv4")
	}
	addr("saddr", r.saddr)
	addr("daddr", r.daddr)
	if r.icmp {
		parts = append(parts, "meta l4proto icmp")
	}
	if r.ctState != 0 {
		var st []string
		if r.ctState&ctEstablished != 0 {
			st = append(st, "established")
		}
		if r.ctState&ctRelated != 0 {
			st = append(st, "related")
		}
		parts = append(parts, "ct state "+strings.Join(st, ","))
	}
	if r.ctDNAT {
		parts = append(parts, "ct status dnat")
	}
	switch v := r.verdict; v.kind {
	case vAccept:
		parts = append(parts, "accept")
	case vDrop:
		parts = append(parts, "drop")
	case vReject:
		parts = append(parts, "reject with icmpx admin-prohibited")
	case vJump:
		parts = append(parts, "jump "+v.chain)
	case vDNAT:
		parts = append(parts, "dnat ip to "+v.addr.String())
	case vSNAT:
		parts = append(parts, "snat ip to "+v.addr.String())
	case vMasquerade:
		parts = append(parts, "masquerade")
	}
	if r.comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.comment))
	}
	return strings.Join(parts, " ")
}

// hostTable is the host's ruleset. It holds nothing per slot: interface
// wildcards on our prefix cover every slot, so adding or removing a slot
// never touches it and a crash cannot leave a slot's rule behind.
func hostTable(l *layout) table {
	slots := ifMatch{name: l.prefix + "*"}
	notSlots := ifMatch{name: l.prefix + "*", not: true}
	return table{name: l.table, chains: []chain{
		{name: "forward", typ: "filter", hook: "forward", prio: 0, policy: "accept", rules: []rule{
			{iif: slots, oif: slots, verdict: verdict{kind: vDrop}, comment: "no slot-to-slot traffic through the host"},
			{oif: slots, ctState: ctEstablished | ctRelated, verdict: verdict{kind: vAccept}},
			{oif: slots, verdict: verdict{kind: vDrop}, comment: "only the host itself opens connections into a slot"},
		}},
		{name: "input", typ: "filter", hook: "input", prio: 0, policy: "accept", rules: []rule{
			{iif: slots, ctState: ctEstablished | ctRelated, verdict: verdict{kind: vAccept}},
			{iif: slots, verdict: verdict{kind: vDrop}, comment: "sandboxes may not connect to the host"},
		}},
		{name: "postrouting", typ: "nat", hook: "postrouting", prio: 100, policy: "accept", rules: []rule{
			// Masquerade on whatever interface the host routes out of rather than
			// the default-route interface seen at start-up, so a moved default
			// route keeps working.
			{saddr: addrMatch{p: l.vethCIDR}, oif: notSlots, verdict: verdict{kind: vMasquerade}, comment: "sandbox egress"},
		}},
	}}
}

// slotTable is the ruleset inside slot s's netns for policy p. hostAddrs are
// the host's own addresses, always blocked.
func slotTable(s *Slot, p Policy, hostAddrs []netip.Prefix) table {
	veth := ifMatch{name: nsVethName}
	tap := ifMatch{name: TapName}
	guest := netip.PrefixFrom(GuestIP, 32)
	return table{name: s.l.table, chains: []chain{
		{name: "prerouting", typ: "nat", hook: "prerouting", prio: -100, policy: "accept", rules: []rule{
			{iif: veth, daddr: addrMatch{p: netip.PrefixFrom(s.HostIP(), 32)}, verdict: verdict{kind: vDNAT, addr: GuestIP}, comment: "host to guest"},
		}},
		{name: "postrouting", typ: "nat", hook: "postrouting", prio: 100, policy: "accept", rules: []rule{
			{oif: veth, saddr: addrMatch{p: guest}, verdict: verdict{kind: vSNAT, addr: s.VethNSAddr()}, comment: "guest egress"},
		}},
		{name: "input", typ: "filter", hook: "input", prio: 0, policy: "accept", rules: []rule{
			{iif: tap, ctState: ctEstablished | ctRelated, verdict: verdict{kind: vAccept}},
			{iif: tap, icmp: true, verdict: verdict{kind: vAccept}, comment: "guest may ping its gateway"},
			{iif: tap, verdict: verdict{kind: vDrop}, comment: "nothing in the slot netns serves the guest"},
		}},
		{name: "forward", typ: "filter", hook: "forward", prio: 0, policy: "drop", rules: []rule{
			{ctState: ctEstablished | ctRelated, verdict: verdict{kind: vAccept}},
			{iif: veth, oif: tap, daddr: addrMatch{p: guest}, ctDNAT: true, verdict: verdict{kind: vAccept}, comment: "new connections into the guest only through the host address"},
			{iif: tap, saddr: addrMatch{p: guest, not: true}, verdict: verdict{kind: vDrop}, comment: "anti-spoofing"},
			// IPv4 only: the guest has no IPv6, and the egress chain ends in an
			// accept when Internet is on.
			{iif: tap, oif: veth, ipv4: true, verdict: verdict{kind: vJump, chain: "egress"}},
		}},
		{name: "egress", rules: egressRules(s.l, p, hostAddrs)},
	}}
}

// egressRules implements Policy's precedence list, in order.
func egressRules(l *layout, p Policy, hostAddrs []netip.Prefix) []rule {
	var rs []rule
	add := func(ps []netip.Prefix, v verdictKind, comment string) {
		for _, pf := range compact(ps) {
			rs = append(rs, rule{daddr: addrMatch{p: pf}, verdict: verdict{kind: v}, comment: comment})
		}
	}
	hard := append([]netip.Prefix{l.hostCIDR, l.vethCIDR}, alwaysBlocked...)
	hard = append(hard, hostAddrs...)
	add(hard, vReject, "always blocked")
	add(uncovered(ipv4Only(l.egressDeny), hard), vReject, "operator ceiling")
	add(p.DenyOut, vReject, "deny")
	add(p.AllowOut, vAccept, "allow")
	add(privateRanges, vReject, "private")
	if p.Internet {
		rs = append(rs, rule{verdict: verdict{kind: vAccept}, comment: "internet"})
	} else {
		rs = append(rs, rule{verdict: verdict{kind: vReject}, comment: "no internet"})
	}
	return rs
}

// uncovered returns the prefixes of ps that no prefix of by contains, so a
// ceiling that repeats the always-blocked ranges adds no duplicate rules.
func uncovered(ps, by []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !slices.ContainsFunc(by, func(b netip.Prefix) bool { return b.Bits() <= p.Bits() && b.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	return out
}

// egressVerdict walks egress rules as the kernel does, first match wins, and
// returns the verdict for a new connection to dst.
func egressVerdict(rs []rule, dst netip.Addr) verdictKind {
	for _, r := range rs {
		if !r.daddr.p.IsValid() || r.daddr.p.Contains(dst) != r.daddr.not {
			return r.verdict.kind
		}
	}
	return vDrop // unreachable: egressRules always ends with a catch-all
}
