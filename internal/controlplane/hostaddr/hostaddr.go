// Package hostaddr decides which addresses the control plane may dial for
// a host a tenant brought (BYOC). A tenant chooses that address when its
// agent registers; without a check it could point the control plane at
// loopback, link-local (cloud metadata) or the operator's private network
// and use it to probe them (server-side request forgery). Regular hosts,
// which only the platform admin adds, are trusted to be on private
// networks.
//
// The check runs twice: when the agent registers (Check resolves names and
// refuses if any address is forbidden) and on every dial (Control), so a
// DNS name that later resolves elsewhere (DNS rebinding) is caught too.
package hostaddr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Ranges a tenant's host may not have, beyond what netip classifies as
// loopback, private, link-local, multicast or unspecified.
var extraForbidden = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT, often the provider's internal network
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("100::/64"),       // discard
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("2002:a00::/24"),  // 6to4 of 10/8
	netip.MustParsePrefix("2002:7f00::/24"), // 6to4 of 127/8
	netip.MustParsePrefix("2002:a9fe::/32"), // 6to4 of 169.254/16
	netip.MustParsePrefix("2002:ac10::/28"), // 6to4 of 172.16/12
	netip.MustParsePrefix("2002:c0a8::/32"), // 6to4 of 192.168/16
}

// Forbidden reports whether a tenant's host may not be at ip: loopback,
// private (RFC 1918, ULA), link-local, multicast, unspecified, CGNAT and
// other special-purpose ranges. IPv4-mapped IPv6 addresses are judged as
// the IPv4 address they carry.
func Forbidden(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() ||
		ip.IsMulticast() {
		return true
	}
	// NAT64 of a forbidden IPv4 address.
	if ip.Is6() && netip.MustParsePrefix("64:ff9b::/96").Contains(ip) {
		b := ip.As16()
		if Forbidden(netip.AddrFrom4([4]byte(b[12:]))) {
			return true
		}
	}
	for _, p := range extraForbidden {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Resolver looks names up; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Check refuses (errdefs.ErrInvalidArgument) a host:port whose host is a
// forbidden IP or a name any of whose addresses is forbidden. A name that
// does not resolve is refused too: the control plane could not dial it.
func Check(ctx context.Context, r Resolver, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "address %q: want host:port", hostport)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if Forbidden(ip) {
			return forbiddenErr(hostport, ip)
		}
		return nil
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "address %q: the name does not resolve", hostport)
	}
	for _, ip := range ips {
		if Forbidden(ip) {
			return forbiddenErr(hostport, ip)
		}
	}
	return nil
}

func forbiddenErr(hostport string, ip netip.Addr) error {
	return errdefs.New(errdefs.ErrInvalidArgument,
		"address %q: %s is a loopback, private, link-local or otherwise internal address, which a byoc host may not have (the operator can allow it with WRENN_ALLOW_PRIVATE_HOST_ADDRESSES=true)",
		hostport, ip.Unmap())
}

// ErrForbiddenDial is what Control returns for a forbidden address.
var ErrForbiddenDial = errors.New("dial to an internal address refused")

// Control fits net.Dialer.Control: it runs after name resolution, with the
// address actually being dialled, and refuses forbidden ones.
func Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address and port", ErrForbiddenDial, address)
	}
	if Forbidden(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenDial, ap.Addr())
	}
	return nil
}
