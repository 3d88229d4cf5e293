package portfwd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tcpListen is the st column value of a listening socket (TCP_LISTEN).
const tcpListen = "0A"

// readListeners returns every listening TCP socket of envd's network
// namespace. A missing tcp6 file (IPv6 disabled) is not an error.
func readListeners(procRoot string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, name := range []string{"tcp", "tcp6"} {
		p := filepath.Join(procRoot, "net", name)
		b, err := os.ReadFile(p)
		if err != nil {
			if name == "tcp6" && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("read listening sockets: %w", err)
		}
		socks, err := parseProcNet(b)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		out = append(out, socks...)
	}
	return out, nil
}

// parseProcNet returns the local addresses of the LISTEN sockets in a
// /proc/net/tcp or /proc/net/tcp6 table. IPv4-mapped IPv6 addresses are
// unmapped so callers compare one form.
func parseProcNet(b []byte) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // column header
			first = false
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		if fields[3] != tcpListen {
			continue
		}
		ap, err := parseHexAddrPort(fields[1])
		if err != nil {
			return nil, err
		}
		out = append(out, ap)
	}
	return out, sc.Err()
}

// parseHexAddrPort decodes the kernel's "ADDR:PORT" hex form. The address
// is printed as 32-bit words in host byte order (one word for IPv4, four
// for IPv6), the port as a plain number.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q: %w", s, err)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address in %q", s)
	}
	// Each word was printed as a number: undo that to get the bytes as
	// they sit in memory, i.e. network order.
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
