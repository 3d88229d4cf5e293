// Package guestinit is wrenn-init, PID 1 of every Wrenn guest: it mounts the
// kernel filesystems, grows the root filesystem to its disk, configures the
// hostname, DNS and network from the kernel command line, starts chrony on the
// KVM PTP clock, and runs envd under tini, restarting it when it dies and
// reaping every orphan, until a power signal ends the VM.
//
// The pure parts (command line parsing, file rendering, resize arithmetic,
// restart backoff) are plain functions; the side effects live in *_linux.go.
package guestinit

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Kernel command line parameters read by wrenn-init. The host's VMM driver
// sets them; every one has a default, so a bare command line boots too.
const (
	ParamHostname = "wrenn.hostname" // guest hostname
	ParamDNS      = "wrenn.dns"      // comma-separated resolver addresses, at most 3
	ParamIP       = "wrenn.ip"       // eth0 address with prefix length
	ParamGateway  = "wrenn.gw"       // default gateway, inside wrenn.ip's prefix
)

// maxNameservers is glibc's MAXNS: resolv.conf lines past it are ignored.
const maxNameservers = 3

// Config is what the guest needs from the host at boot.
type Config struct {
	Hostname string
	DNS      []netip.Addr
	Address  netip.Prefix
	Gateway  netip.Addr
}

// DefaultConfig is the configuration of a command line without wrenn.*
// parameters. The address is the same in every guest (DESIGN.md §3), so a
// snapshot restores in any network slot.
func DefaultConfig() Config {
	return Config{
		Hostname: "wrenn",
		DNS:      []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("1.1.1.1")},
		Address:  netip.MustParsePrefix("169.254.0.21/30"),
		Gateway:  netip.MustParseAddr("169.254.0.22"),
	}
}

// ParseCmdline reads the wrenn.* parameters of a kernel command line (the
// text of /proc/cmdline). A PID 1 must boot whatever it is given, so a bad
// value never stops parsing: its field keeps the default and the returned
// error (one per bad parameter, joined) says what was wrong. The Config is
// always usable.
//
// The errors are plain, not errdefs kinds: they only ever reach the console,
// and importing errdefs would link Connect, protobuf and net/http into PID 1
// (9.3 MB instead of 4.3 MB, about 100 ms more before the first log line
// under TCG).
func ParseCmdline(cmdline string) (Config, error) {
	cfg := DefaultConfig()
	var errs []error
	bad := func(param, value, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s=%q: %s", param, value, fmt.Sprintf(format, args...)))
	}
	var ip, gw string
	var ipSet, gwSet bool
	for _, arg := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(arg, "=")
		switch key {
		case ParamHostname:
			if err := validHostname(value); err != nil {
				bad(key, value, "%v", err)
				continue
			}
			cfg.Hostname = value
		case ParamDNS:
			servers, err := parseNameservers(value)
			if err != nil {
				bad(key, value, "%v", err)
			}
			if len(servers) > 0 {
				cfg.DNS = servers
			}
		case ParamIP:
			ip, ipSet = value, true
		case ParamGateway:
			gw, gwSet = value, true
		default:
			if strings.HasPrefix(key, "wrenn.") {
				errs = append(errs, fmt.Errorf("unknown parameter %s", key))
			}
		}
	}
	// The address and the gateway only make sense together: a gateway outside
	// the address's prefix cannot be routed to, so a bad pair falls back whole.
	addr, gateway := cfg.Address, cfg.Gateway
	if ipSet {
		p, err := netip.ParsePrefix(ip)
		if err != nil {
			bad(ParamIP, ip, "want an address with prefix length, like 169.254.0.21/30")
		} else {
			addr = p
		}
	}
	if gwSet {
		a, err := netip.ParseAddr(gw)
		if err != nil {
			bad(ParamGateway, gw, "not an IP address")
		} else {
			gateway = a
		}
	}
	if ipSet || gwSet {
		switch {
		case !addr.Contains(gateway):
			errs = append(errs, fmt.Errorf(
				"gateway %s is outside %s: using the defaults %s via %s", gateway, addr, cfg.Address, cfg.Gateway))
		case addr.Addr() == gateway:
			errs = append(errs, fmt.Errorf(
				"gateway %s is the guest's own address: using the defaults %s via %s", gateway, cfg.Address, cfg.Gateway))
		default:
			cfg.Address, cfg.Gateway = addr, gateway
		}
	}
	return cfg, errors.Join(errs...)
}

// splitCmdline splits a command line the way the kernel does: on spaces,
// except inside double quotes, which are removed (`a="b c"` is `a=b c`).
func splitCmdline(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, inArg := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inArg = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// validHostname accepts RFC 1123 names that fit the kernel's 64 bytes.
func validHostname(h string) error {
	if h == "" || len(h) > 64 {
		return errors.New("want 1 to 64 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("character %q not allowed (letters, digits, '-', '.')", c)
			}
		}
	}
	return nil
}

// parseNameservers parses a comma list. It returns the valid addresses up to
// glibc's limit even when it also returns an error, so that one bad entry
// does not leave the guest without DNS.
func parseNameservers(s string) ([]netip.Addr, error) {
	var servers []netip.Addr
	var errs []error
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is not an IP address", f))
			continue
		}
		if len(servers) == maxNameservers {
			errs = append(errs, fmt.Errorf("more than %d servers: %s ignored", maxNameservers, a))
			continue
		}
		servers = append(servers, a)
	}
	if len(servers) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no servers"))
	}
	return servers, errors.Join(errs...)
}
