package ratelimit

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// DefaultClientIPHeader is the header trusted proxies name the client in.
const DefaultClientIPHeader = "X-Forwarded-For"

// ClientIP finds the address a request came from. Behind a reverse proxy
// every request comes from the proxy, so per-address limits would lump all
// clients together; but a header any client can set must not be believed
// either, or one client could pose as many. So the header is read only
// when the peer is a trusted proxy, and from the right: each trusted proxy
// appends the address it saw, and the first address from the right that
// is not a trusted proxy is the client (anything left of it was written by
// the client itself).
type ClientIP struct {
	trusted []netip.Prefix
	header  string
}

// NewClientIP returns a resolver that believes header (DefaultClientIPHeader
// when empty) only from peers inside trusted.
func NewClientIP(trusted []netip.Prefix, header string) *ClientIP {
	if header == "" {
		header = DefaultClientIPHeader
	}
	return &ClientIP{trusted: trusted, header: http.CanonicalHeaderKey(header)}
}

// ParsePrefixes parses comma-separated CIDRs or single addresses (a bare
// address is its own /32 or /128).
func ParsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR like 10.0.0.0/8: %w", f, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR: %w", f, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Of returns the client address of r as text (the peer's host when it
// cannot be parsed, which only a test transport produces).
func (c *ClientIP) Of(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	if c == nil || !c.isTrusted(peer) {
		return peer.String()
	}
	client := peer
	values := r.Header.Values(c.header)
	// Walk every hop right to left, across repeated header lines too.
	for i := len(values) - 1; i >= 0; i-- {
		hops := strings.Split(values[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, ok := parseHop(hops[j])
			if !ok {
				// Garbage only a trusted proxy could have passed on
				// unchecked: stop at the last hop known good.
				return client.String()
			}
			client = a
			if !c.isTrusted(a) {
				return a.String()
			}
		}
	}
	return client.String()
}

// TrustedPeer reports whether r's peer is one of the trusted proxies, whose
// forwarding headers (X-Forwarded-Proto too) may be believed.
func (c *ClientIP) TrustedPeer(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	return err == nil && c != nil && c.isTrusted(peer.Unmap())
}

func (c *ClientIP) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop parses one header entry: an address, optionally with a port or
// in brackets.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}
