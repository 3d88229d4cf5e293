//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Pool hands out slots and builds and tears down their networks. It is safe
// for concurrent use; work on one slot is serialised by the slot, and the
// pool's lock is never held across netlink or nftables calls.
//
// Lifecycle at agent start: NewPool, Adopt the slots of sandboxes that are
// still running, then Reclaim (deletes everything else of ours and installs
// the host ruleset). Per sandbox: Acquire, Setup, SetPolicy as needed,
// Release once the VMM has exited.
type Pool struct {
	l   *layout
	log *slog.Logger

	mu    sync.Mutex
	inUse map[int]*Slot // acquired or adopted
	next  int           // where the next Acquire starts looking

	hostMu    sync.Mutex
	hostReady bool
}

// NewPool validates cfg and returns an empty pool. It changes nothing on the
// host.
func NewPool(cfg PoolConfig, logger *slog.Logger) (*Pool, error) {
	l, err := cfg.layout()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if l.hostNetNS == "" {
		if l.hostNetNS, err = pinCurrentNetNS(); err != nil {
			return nil, err
		}
	}
	return &Pool{l: l, log: logger, inUse: map[int]*Slot{}, next: 1}, nil
}

// Acquire reserves a free slot. It changes nothing on the host; call Setup.
// Slots are handed out round-robin so a just-released index (and any
// conntrack state still naming its addresses) is reused as late as possible.
func (p *Pool) Acquire(ctx context.Context) (*Slot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 0; n < p.l.slots; n++ {
		i := (p.next-1+n)%p.l.slots + 1
		if _, used := p.inUse[i]; used {
			continue
		}
		s := &Slot{Index: i, l: p.l}
		p.inUse[i] = s
		p.next = i%p.l.slots + 1
		return s, nil
	}
	return nil, errdefs.New(errdefs.ErrResourceExhausted, "network: all %d slots are in use", p.l.slots)
}

// Adopt marks the given slots, whose networks already exist (sandboxes that
// kept running across an agent restart), as in use and returns them, so that
// Reclaim keeps them and Acquire skips them. Call it before Reclaim. Nothing
// on the host is checked or changed.
func (p *Pool) Adopt(indexes ...int) ([]*Slot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[int]bool{}
	for _, i := range indexes {
		if i < 1 || i > p.l.slots {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "network: adopt slot %d: index out of range 1..%d", i, p.l.slots)
		}
		if _, used := p.inUse[i]; used || seen[i] {
			return nil, errdefs.New(errdefs.ErrAlreadyExists, "network: adopt slot %d: already in use", i)
		}
		seen[i] = true
	}
	out := make([]*Slot, 0, len(indexes))
	for _, i := range indexes {
		s := &Slot{Index: i, l: p.l}
		p.inUse[i] = s
		out = append(out, s)
	}
	return out, nil
}

// Setup builds slot s's network with egress policy pol: the netns, the TAP,
// the veth pair, addresses and routes, and the slot's nftables ruleset. The
// host ruleset and ip_forward are installed first if this pool has not done
// so yet. On failure everything Setup made is removed again and s stays
// acquired (Release it, or Setup again).
func (p *Pool) Setup(ctx context.Context, s *Slot, pol Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	if err := p.owns(s); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return errdefs.New(errdefs.ErrFailedPrecondition, "network: setup slot %d: already released", s.Index)
	}
	if err := p.ensureHost(ctx); err != nil {
		return fmt.Errorf("setup slot %d: %w", s.Index, err)
	}
	start := time.Now()
	steps := []struct {
		name string
		do   func() error
	}{
		{"netns", func() error { return p.createNetNS(s) }},
		{"guest link", func() error { return p.createGuestLink(s) }},
		{"veth", func() error { return p.createVeth(s) }},
		{"firewall", func() error { return s.applyPolicy(pol) }},
	}
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return errors.Join(fmt.Errorf("setup slot %d: %w", s.Index, err), p.teardown(s))
		}
		if err := st.do(); err != nil {
			return errors.Join(fmt.Errorf("setup slot %d: %s: %w", s.Index, st.name, err), p.teardown(s))
		}
	}
	p.log.Debug("network slot set up", "slot", s.Index, "host_ip", s.HostIP(), "duration", time.Since(start))
	return nil
}

// CheckPolicy reports, as an InvalidArgument error, a policy that is not
// well formed or whose AllowOut overlaps the operator's ceiling
// (PoolConfig.EgressDeny). Call it before accepting a tenant's new policy;
// SetPolicy does. Setup does not, so that a sandbox recorded before the
// ceiling was tightened still resumes (the ceiling is enforced regardless).
func (p *Pool) CheckPolicy(pol Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	return checkCeiling(pol, p.l.egressDeny)
}

// SetPolicy replaces the slot's egress policy in one atomic nftables
// transaction. New connections follow it at once; the guest's established
// connections to destinations it now refuses are cut (their conntrack state
// is deleted, so their next packets meet the new rules), and allowed ones
// carry on.
func (s *Slot) SetPolicy(ctx context.Context, pol Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	if err := checkCeiling(pol, s.l.egressDeny); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return errdefs.New(errdefs.ErrFailedPrecondition, "network: set policy of slot %d: already released", s.Index)
	}
	if err := s.applyPolicy(pol); err != nil {
		return fmt.Errorf("set policy of slot %d: %w", s.Index, err)
	}
	return nil
}

// Release tears slot s's network down and returns its index to the pool.
// Stop the VMM first: a namespace still held by a process outlives its
// mount, along with its TAP. Absent pieces are fine and a second Release of
// the same Slot does nothing. If teardown fails the index stays reserved and
// Release may be retried.
func (p *Pool) Release(ctx context.Context, s *Slot) error {
	if err := p.owns(s); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return nil
	}
	start := time.Now()
	if err := p.teardown(s); err != nil {
		return fmt.Errorf("release slot %d: %w", s.Index, err)
	}
	s.released = true
	p.mu.Lock()
	if p.inUse[s.Index] == s {
		delete(p.inUse, s.Index)
	}
	p.mu.Unlock()
	p.log.Debug("network slot released", "slot", s.Index, "duration", time.Since(start))
	return nil
}

// Reclaim prepares the host (ip_forward and our host nftables table,
// replaced atomically) and deletes every leftover of ours that is not in
// use: namespaces under NetNSDir and host interfaces named
// "<Prefix><index>" (and emulated guest namespaces). Call it at agent start,
// after Adopt. It reports every failure and carries on past them.
func (p *Pool) Reclaim(ctx context.Context) error {
	if err := p.installHost(); err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	p.mu.Lock()
	keep := make(map[int]bool, len(p.inUse))
	for i := range p.inUse {
		keep[i] = true
	}
	p.mu.Unlock()

	var errs []error
	entries, err := os.ReadDir(p.l.netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("reclaim: list %s: %w", p.l.netnsDir, err))
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		name := strings.TrimSuffix(e.Name(), guestNSSuffix)
		i, ours := p.l.parseIndex(name)
		if !ours || keep[i] {
			continue
		}
		if err := deleteNamedNetNS(p.l.netnsDir, e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("reclaim: %w", err))
			continue
		}
		p.log.Info("reclaimed leftover network namespace", "netns", e.Name(), "slot", i)
	}

	h, err := p.hostHandle()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reclaim: %w", err))...)
	}
	defer h.Close()
	links, err := linkList(h)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("reclaim: list host links: %w", err))...)
	}
	for _, link := range links {
		name := link.Attrs().Name
		i, ours := p.l.parseIndex(name)
		if !ours || keep[i] {
			continue
		}
		if err := h.LinkDel(link); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("reclaim: delete host link %s: %w", name, err))
			continue
		}
		p.log.Info("reclaimed leftover host link", "link", name, "slot", i)
	}
	return errors.Join(errs...)
}

func (p *Pool) owns(s *Slot) error {
	if s == nil || s.l != p.l {
		return errdefs.New(errdefs.ErrInvalidArgument, "network: slot does not belong to this pool")
	}
	return nil
}

// ensureHost installs the host side once per pool (Reclaim does it too).
func (p *Pool) ensureHost(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.hostMu.Lock()
	ready := p.hostReady
	p.hostMu.Unlock()
	if ready {
		return nil
	}
	return p.installHost()
}

func (p *Pool) installHost() error {
	p.hostMu.Lock()
	defer p.hostMu.Unlock()
	if err := setSysctls(p.l.hostNetNS, [][2]string{{"net/ipv4/ip_forward", "1"}}); err != nil {
		return fmt.Errorf("prepare host: %w", err)
	}
	ns, err := openNetNS(p.l.hostNetNS)
	if err != nil {
		return fmt.Errorf("prepare host: %w", err)
	}
	defer ns.Close()
	if err := replaceTable(int(ns), hostTable(p.l)); err != nil {
		return fmt.Errorf("prepare host: %w", err)
	}
	p.hostReady = true
	return nil
}

func (p *Pool) hostHandle() (*netlink.Handle, error) {
	ns, err := openNetNS(p.l.hostNetNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle for host netns: %w", err)
	}
	return h, nil
}

// slotSysctls are set in every slot netns. Without the per-destination
// ICMP rate limit a guest that keeps hitting rejected destinations still
// gets an immediate error each time instead of a one-second SYN retry; the
// namespace's global ICMP budget (icmp_msgs_per_sec) still applies.
var slotSysctls = [][2]string{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv4/icmp_ratelimit", "0"},
}

// createNetNS makes the slot netns with lo up and forwarding on.
func (p *Pool) createNetNS(s *Slot) error {
	if err := createNamedNetNS(p.l.netnsDir, s.NetNSName()); err != nil {
		return err
	}
	if err := setSysctls(s.NetNSPath(), slotSysctls); err != nil {
		return err
	}
	return withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
}

// createGuestLink makes tap0 (GatewayIP/30) in the slot netns, or with
// EmulateGuest a veth to a namespace playing the guest.
func (p *Pool) createGuestLink(s *Slot) error {
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(GatewayIP, GuestPrefixLen))}
	if !p.l.emulateGuest {
		// TUNSETIFF creates the device in the namespace of the thread that
		// opened /dev/net/tun, so this has to run inside the slot netns.
		return inNetNS(s.NetNSPath(), func() error {
			tap := &netlink.Tuntap{
				LinkAttrs: netlink.LinkAttrs{Name: TapName},
				Mode:      netlink.TUNTAP_MODE_TAP,
				// Persistent, single queue; the VMM re-attaches with its own flags.
				Flags: netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			}
			if err := netlink.LinkAdd(tap); err != nil {
				return fmt.Errorf("create %s: %w", TapName, err)
			}
			if err := netlink.LinkSetHardwareAddr(tap, GatewayMAC); err != nil {
				return fmt.Errorf("set %s address: %w", TapName, err)
			}
			if err := netlink.AddrAdd(tap, gw); err != nil {
				return fmt.Errorf("address %s: %w", TapName, err)
			}
			if err := netlink.LinkSetUp(tap); err != nil {
				return fmt.Errorf("set %s up: %w", TapName, err)
			}
			// A permanent entry: the host probes a booting guest before
			// its eth0 is up, and a failed ARP resolution would hold the
			// first connection back by a second of TCP retransmission.
			neigh := &netlink.Neigh{
				LinkIndex: tap.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: GuestIP.AsSlice(), HardwareAddr: GuestMAC,
			}
			if err := netlink.NeighSet(neigh); err != nil {
				return fmt.Errorf("pin guest neighbour on %s: %w", TapName, err)
			}
			return nil
		})
	}

	if err := createNamedNetNS(p.l.netnsDir, s.guestNetNSName()); err != nil {
		return err
	}
	gns, err := openNetNS(s.GuestNetNSPath())
	if err != nil {
		return err
	}
	defer gns.Close()
	err = withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: TapName}, PeerName: guestVethName, PeerNamespace: netlink.NsFd(gns)}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create emulated guest link: %w", err)
		}
		return addrUp(h, TapName, gw)
	})
	if err != nil {
		return err
	}
	return withHandle(s.GuestNetNSPath(), func(h *netlink.Handle) error {
		if err := addrUp(h, "lo", nil); err != nil {
			return err
		}
		if err := addrUp(h, guestVethName, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(GuestIP, GuestPrefixLen))}); err != nil {
			return err
		}
		return defaultRoute(h, GatewayIP)
	})
}

// createVeth makes the veth pair, addresses both ends, routes the slot's
// host address to the netns and gives the netns its default route.
func (p *Pool) createVeth(s *Slot) error {
	ns, err := openNetNS(s.NetNSPath())
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := p.hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.HostVeth()}, PeerName: nsVethName, PeerNamespace: netlink.NsFd(ns)}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", s.HostVeth(), err)
	}
	if err := addrUp(h, s.HostVeth(), &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(s.VethHostAddr(), 31))}); err != nil {
		return err
	}
	err = withHandle(s.NetNSPath(), func(nh *netlink.Handle) error {
		if err := addrUp(nh, nsVethName, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(s.VethNSAddr(), 31))}); err != nil {
			return err
		}
		return defaultRoute(nh, s.VethHostAddr())
	})
	if err != nil {
		return err
	}
	link, err := h.LinkByName(s.HostVeth())
	if err != nil {
		return fmt.Errorf("find %s: %w", s.HostVeth(), err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(netip.PrefixFrom(s.HostIP(), 32)),
		Gw:        net.IP(s.VethNSAddr().AsSlice()),
	}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("route %s via %s: %w", s.HostIP(), s.HostVeth(), err)
	}
	return nil
}

// applyPolicy renders and installs the slot's ruleset. The host's addresses
// are read now, so a policy set later also blocks addresses added since.
// Then it forgets the guest's established connections that the new policy
// refuses, so that they stop instead of living on as "established".
func (s *Slot) applyPolicy(pol Policy) error {
	hostAddrs, err := hostAddresses(s.l.hostNetNS)
	if err != nil {
		return err
	}
	ns, err := openNetNS(s.NetNSPath())
	if err != nil {
		return err
	}
	defer ns.Close()
	t := slotTable(s, pol, hostAddrs)
	if err := replaceTable(int(ns), t); err != nil {
		return err
	}
	return withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
		f := refusedFlows{egress: egressRules(s.l, pol, hostAddrs)}
		if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			return fmt.Errorf("drop connections the new policy refuses: %w", err)
		}
		return nil
	})
}

// refusedFlows matches conntrack entries of connections the guest opened to
// a destination the egress rules now refuse. Flows still allowed are kept:
// deleting their state would make the slot netns answer the next packet
// from the server with a reset.
type refusedFlows struct{ egress []rule }

func (f refusedFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok1 || !ok2 || src.Unmap() != GuestIP {
		return false
	}
	return egressVerdict(f.egress, dst.Unmap()) != vAccept
}

// teardown removes everything Setup may have made for s. Deleting the host
// veth removes its peer and the host route with it; unpinning the netns
// removes the TAP and the slot's nftables table once no process holds it.
func (p *Pool) teardown(s *Slot) error {
	var errs []error
	h, err := p.hostHandle()
	if err != nil {
		errs = append(errs, err)
	} else {
		if link, err := h.LinkByName(s.HostVeth()); err == nil {
			if err := h.LinkDel(link); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", s.HostVeth(), err))
			}
		} else if !isNotFound(err) {
			errs = append(errs, fmt.Errorf("find veth %s: %w", s.HostVeth(), err))
		}
		h.Close()
	}
	if err := deleteNamedNetNS(p.l.netnsDir, s.guestNetNSName()); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNamedNetNS(p.l.netnsDir, s.NetNSName()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// linkList lists the links of h's namespace. A dump the kernel marks
// interrupted (a link changed meanwhile: another agent or test creating
// its veths) may miss links, so it is taken again, a few times.
func linkList(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		if links, err = h.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}

// hostAddresses lists the IPv4 addresses on every interface of the host netns.
func hostAddresses(hostNS string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := withHandle(hostNS, func(h *netlink.Handle) error {
		addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("list host addresses: %w", err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, netip.PrefixFrom(ip.Unmap(), 32))
			}
		}
		return nil
	})
	return out, err
}

func withHandle(nsPath string, fn func(*netlink.Handle) error) error {
	ns, err := openNetNS(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle for %s: %w", nsPath, err)
	}
	defer h.Close()
	return fn(h)
}

// addrUp adds addr (if any) to the named link and sets it up.
func addrUp(h *netlink.Handle, name string, addr *netlink.Addr) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if addr != nil {
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr.IPNet, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func defaultRoute(h *netlink.Handle, gw netip.Addr) error {
	if err := h.RouteReplace(&netlink.Route{Gw: net.IP(gw.AsSlice())}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
