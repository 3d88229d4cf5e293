package portfwd

import (
	"fmt"
	"net"
	"net/netip"
)

// GuestAddrs returns the addresses forwards listen on inside a sandbox: the
// IPv4 addresses of ifname (eth0 in the guest), or, when that interface
// does not exist, of every interface that is up and not loopback.
func GuestAddrs(ifname string) ([]netip.Addr, error) {
	if iface, err := net.InterfaceByName(ifname); err == nil {
		addrs, err := ipv4Addrs(iface)
		if err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("interface %s has no IPv4 address", ifname)
		}
		return addrs, nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []netip.Addr
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ipv4Addrs(&iface)
		if err != nil {
			return nil, err
		}
		out = append(out, addrs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no non-loopback IPv4 address on any interface")
	}
	return out, nil
}

func ipv4Addrs(iface *net.Interface) ([]netip.Addr, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", iface.Name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if ip = ip.Unmap(); ok && ip.Is4() && !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	return out, nil
}
