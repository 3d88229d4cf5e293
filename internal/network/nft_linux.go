//go:build linux

package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// ctStatusDNAT is IPS_DST_NAT from the kernel's conntrack status bits.
const ctStatusDNAT uint32 = 1 << 5

// replaceTable installs t in the namespace open at nsFD, replacing any table
// of that name, in a single netlink batch: the kernel applies it all or
// nothing, so no packet ever sees a half-built ruleset.
func replaceTable(nsFD int, t table) error {
	conn, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	nt := &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
	// Add then delete makes the delete succeed whether or not the table
	// existed; the second add builds it afresh. One transaction.
	conn.AddTable(nt)
	conn.DelTable(nt)
	conn.AddTable(nt)
	chains := make(map[string]*nftables.Chain, len(t.chains))
	for _, c := range t.chains {
		nc := &nftables.Chain{Name: c.name, Table: nt}
		if c.hook != "" {
			nc.Type = nftables.ChainType(c.typ)
			nc.Hooknum = hookNum(c.hook)
			nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.prio))
			pol := nftables.ChainPolicyAccept
			if c.policy == "drop" {
				pol = nftables.ChainPolicyDrop
			}
			nc.Policy = &pol
		}
		chains[c.name] = conn.AddChain(nc)
	}
	for _, c := range t.chains {
		for _, r := range c.rules {
			exprs, err := r.compile()
			if err != nil {
				return fmt.Errorf("table %s chain %s: %w", t.name, c.name, err)
			}
			nr := &nftables.Rule{Table: nt, Chain: chains[c.name], Exprs: exprs}
			if r.comment != "" {
				nr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.comment)
			}
			conn.AddRule(nr)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("commit nftables table %s: %w", t.name, err)
	}
	return nil
}

// tableRuleCount lists table name in the namespace at nsFD and returns the
// number of rules per chain; ok is false when the table does not exist.
func tableRuleCount(nsFD int, name string) (counts map[string]int, ok bool, err error) {
	conn, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return nil, false, fmt.Errorf("open nftables: %w", err)
	}
	t, err := conn.ListTableOfFamily(name, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("list nftables table %s: %w", name, err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables chains: %w", err)
	}
	counts = map[string]int{}
	for _, c := range chains {
		if c.Table.Name != t.Name {
			continue
		}
		rs, err := conn.GetRules(t, c)
		if err != nil {
			return nil, false, fmt.Errorf("list rules of %s/%s: %w", name, c.Name, err)
		}
		counts[c.Name] = len(rs)
	}
	return counts, true, nil
}

func hookNum(h string) *nftables.ChainHook {
	switch h {
	case "prerouting":
		return nftables.ChainHookPrerouting
	case "input":
		return nftables.ChainHookInput
	case "forward":
		return nftables.ChainHookForward
	case "output":
		return nftables.ChainHookOutput
	default:
		return nftables.ChainHookPostrouting
	}
}

// compile turns r into netlink expressions, matches first, in the order nft
// itself would emit them. All matches use register 1, one at a time.
func (r rule) compile() ([]expr.Any, error) {
	var e []expr.Any
	cmp := func(not bool, data []byte) *expr.Cmp {
		op := expr.CmpOpEq
		if not {
			op = expr.CmpOpNeq
		}
		return &expr.Cmp{Op: op, Register: 1, Data: data}
	}
	ifname := func(key expr.MetaKey, m ifMatch) {
		if m.name == "" {
			return
		}
		// A wildcard compares only the prefix bytes; an exact name includes
		// the terminating NUL so "wrenn-1" does not match "wrenn-10".
		data := []byte(m.name)
		if n := len(data); n > 0 && data[n-1] == '*' {
			data = data[:n-1]
		} else {
			data = append(data, 0)
		}
		e = append(e, &expr.Meta{Key: key, Register: 1}, cmp(m.not, data))
	}
	addr := func(offset uint32, m addrMatch) error {
		if !m.p.IsValid() {
			return nil
		}
		if !m.p.Addr().Is4() {
			return fmt.Errorf("address match %s: not IPv4", m.p)
		}
		if m.p.Bits() == 0 {
			if m.not {
				return fmt.Errorf("address match != %s matches nothing", m.p)
			}
			return nil // matches every IPv4 packet; nfproto is already checked
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4})
		if m.p.Bits() < 32 {
			mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff}), m.p.Bits()).Masked().Addr().As4()
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}})
		}
		a := m.p.Masked().Addr().As4()
		e = append(e, cmp(m.not, a[:]))
		return nil
	}

	ifname(expr.MetaKeyIIFNAME, r.iif)
	ifname(expr.MetaKeyOIFNAME, r.oif)
	if r.ipv4 || r.saddr.p.IsValid() || r.daddr.p.IsValid() {
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp(false, []byte{unix.NFPROTO_IPV4}))
	}
	if err := addr(12, r.saddr); err != nil {
		return nil, err
	}
	if err := addr(16, r.daddr); err != nil {
		return nil, err
	}
	if r.icmp {
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(false, []byte{unix.IPPROTO_ICMP}))
	}
	ctBits := func(key expr.CtKey, bits uint32) {
		e = append(e,
			&expr.Ct{Key: key, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
			cmp(true, binaryutil.NativeEndian.PutUint32(0)),
		)
	}
	if r.ctState != 0 {
		ctBits(expr.CtKeySTATE, r.ctState)
	}
	if r.ctDNAT {
		ctBits(expr.CtKeySTATUS, ctStatusDNAT)
	}

	switch v := r.verdict; v.kind {
	case vAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case vDrop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case vReject:
		e = append(e, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
	case vJump:
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: v.chain})
	case vDNAT, vSNAT:
		if !v.addr.Is4() {
			return nil, fmt.Errorf("nat to %s: not IPv4", v.addr)
		}
		a := v.addr.As4()
		typ := expr.NATTypeDestNAT
		if v.kind == vSNAT {
			typ = expr.NATTypeSourceNAT
		}
		e = append(e,
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		)
	case vMasquerade:
		e = append(e, &expr.Masq{})
	default:
		return nil, fmt.Errorf("unknown verdict %d", v.kind)
	}
	return e, nil
}
