package config

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/wrenn/wrenn/internal/controlplane/ratelimit"
)

// Edge is how wrenn-cp tells clients apart behind a reverse proxy.
type Edge struct {
	// TrustedProxies is WRENN_TRUSTED_PROXIES: only from peers in these
	// CIDRs is ClientIPHeader believed.
	TrustedProxies []netip.Prefix
	// ClientIPHeader is WRENN_CLIENT_IP_HEADER (default X-Forwarded-For):
	// each trusted proxy appends the address it saw; the right-most
	// address that is not a trusted proxy is the client.
	ClientIPHeader string
}

// edgeSettings are the reverse-proxy settings.
func edgeSettings() []setting {
	return []setting{
		{env: "WRENN_TRUSTED_PROXIES", flag: "trusted-proxies", def: "",
			help: "comma-separated CIDRs of reverse proxies whose client address header is believed (per-address limits); empty: none, the peer address is the client",
			set: func(c *Config, v string) error {
				p, err := ratelimit.ParsePrefixes(v)
				if err != nil {
					return err
				}
				c.Edge.TrustedProxies = p
				return nil
			}},
		{env: "WRENN_CLIENT_IP_HEADER", flag: "client-ip-header", def: ratelimit.DefaultClientIPHeader,
			help: "header trusted proxies put the client address in (a comma-separated list, appended to at each hop)",
			set: func(c *Config, v string) error {
				v = strings.TrimSpace(v)
				if v == "" || strings.ContainsFunc(v, func(r rune) bool {
					return !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
				}) {
					return errors.New("want a header name like X-Forwarded-For")
				}
				c.Edge.ClientIPHeader = http.CanonicalHeaderKey(v)
				return nil
			}},
	}
}

func (c Config) edgeValues() map[string]string {
	ps := make([]string, len(c.Edge.TrustedProxies))
	for i, p := range c.Edge.TrustedProxies {
		ps[i] = p.String()
	}
	return map[string]string{
		"WRENN_TRUSTED_PROXIES":  strings.Join(ps, ","),
		"WRENN_CLIENT_IP_HEADER": c.Edge.ClientIPHeader,
	}
}
