package guestinit

import (
	"fmt"
	"net/netip"
	"strings"
)

// ResolvConf renders /etc/resolv.conf for the given servers.
func ResolvConf(servers []netip.Addr) []byte {
	var b strings.Builder
	b.WriteString("# Written by wrenn-init at boot from wrenn.dns.\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return []byte(b.String())
}

// Hosts renders /etc/hosts. The hostname resolves to 127.0.1.1 (the Debian
// convention), so sudo and anything calling gethostbyname(hostname) work
// without DNS and whatever the guest's address is.
func Hosts(hostname string) []byte {
	return []byte("# Written by wrenn-init at boot.\n" +
		"127.0.0.1\tlocalhost\n" +
		"127.0.1.1\t" + hostname + "\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n")
}

// ChronyConf renders a chrony configuration that disciplines the clock from
// the host's PTP clock device (the KVM PTP clock). The short polls keep the
// guest within microseconds of the host, and "makestep 1 -1" lets chrony
// step the clock whenever it is off by more than a second, at any time: a
// restored snapshot wakes up with the clock of the moment it was taken.
func ChronyConf(ptpDevice string) []byte {
	return []byte("# Written by wrenn-init at boot.\n" +
		"refclock PHC " + ptpDevice + " poll -2 dpoll -2 offset 0\n" +
		"makestep 1 -1\n")
}
