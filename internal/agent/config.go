package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn/wrenn/internal/envfile"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/ociimage"
	"github.com/wrenn/wrenn/internal/vmm/drivers"
)

// DaemonConfig is wrenn-agent's configuration. ParseDaemonConfig builds it
// once in main from flags, the environment and an optional env file; it is
// the only place the agent reads its environment.
type DaemonConfig struct {
	// Dir is WRENN_DIR: kernels/, images/ and sandboxes/ live under it.
	Dir string
	// VMM is WRENN_VMM: "auto", "qemu" or "firecracker" (see vmm/drivers).
	VMM string
	// ListenAddr is WRENN_HOST_LISTEN_ADDR, where the agent serves the
	// control plane (Connect RPC and the guest proxy, mTLS) once registered.
	ListenAddr string
	// Address is WRENN_AGENT_ADDRESS (--address): the host:port the
	// control plane dials, sent at registration and put in the host
	// certificate. Empty means the one saved at registration.
	Address string
	// CPURL is WRENN_CP_URL (--cp-url): the control plane's base URL, for
	// registration and heartbeats. Empty means the one saved at
	// registration.
	CPURL string
	// RegistrationToken is WRENN_AGENT_REGISTRATION_TOKEN (--register): a
	// one-time token from POST /v1/hosts; when set, the agent registers
	// (again) before serving.
	RegistrationToken string
	// HeartbeatInterval is WRENN_AGENT_HEARTBEAT_INTERVAL; zero means
	// DefaultHeartbeatInterval (see HeartbeatEvery).
	HeartbeatInterval time.Duration
	// MetricsAddr is WRENN_AGENT_METRICS_ADDR, a plain-HTTP listener for
	// Prometheus' /metrics (the RPC listener demands the control plane's
	// client certificate, which a scraper does not have). Empty means
	// DefaultMetricsAddr (see MetricsListenAddr).
	MetricsAddr string
	// VMMUIDBase is WRENN_AGENT_VMM_UID_BASE, the first unprivileged uid/gid
	// VMMs run as (Config.VMMUIDBase).
	VMMUIDBase uint32
	// ReaperInterval is WRENN_AGENT_REAPER_INTERVAL: how often idle
	// sandboxes are looked for.
	ReaperInterval time.Duration
	// MetricsInterval is WRENN_AGENT_METRICS_INTERVAL: how often every
	// running sandbox is sampled into its metrics history (Config.
	// MetricsInterval); zero turns sampling off.
	MetricsInterval time.Duration
	// MetricsHistory is WRENN_AGENT_METRICS_HISTORY: how far back each
	// sandbox's in-memory history reaches (Config.MetricsHistory).
	MetricsHistory time.Duration
	// Name is WRENN_AGENT_NAME: it names everything the agent creates
	// outside WRENN_DIR (network namespaces and host links "<Name>-<i>",
	// the nftables table, the cgroup parent, the guest memory directory
	// /dev/shm/<Name>), so two agents on one machine (a test stack beside
	// a real one) never touch each other's.
	Name string
	// FaultPointDir is WRENN_AGENT_FAULTPOINT_DIR, for fault-injection
	// tests only (internal/faultpoint). Empty, as in production: none.
	FaultPointDir string
	// HostCIDR and VethCIDR are WRENN_AGENT_HOST_CIDR and
	// WRENN_AGENT_VETH_CIDR: the per-slot address ranges (network.PoolConfig).
	HostCIDR, VethCIDR netip.Prefix
	// EgressDeny is WRENN_AGENT_EGRESS_DENY, the operator's egress ceiling
	// (network.PoolConfig.EgressDeny): CIDRs no sandbox may reach whatever
	// its policy allows. nil means network.DefaultEgressDeny; "none" gives
	// an empty, non-nil list.
	EgressDeny []netip.Prefix
	// InsecureRegistries is WRENN_AGENT_INSECURE_REGISTRIES: registries
	// (host or host:port) a template build may reach over plain HTTP,
	// beside loopback ones.
	InsecureRegistries []string
	// LogLevel is WRENN_LOG_LEVEL: debug, info, warn or error.
	LogLevel slog.Level
	// EnvFile is the --env-file read, if any.
	EnvFile string
	// ShowVersion is --version: print the version and exit.
	ShowVersion bool

	// sources says where each setting came from, by variable name.
	sources map[string]string
}

// Defaults of the daemon's settings.
const (
	DefaultDir            = "/var/lib/wrenn"
	DefaultListenAddr     = ":50051"
	DefaultReaperInterval = 10 * time.Second
	// DefaultHeartbeatInterval is how often the agent reports to the
	// control plane.
	DefaultHeartbeatInterval = 30 * time.Second
	// DefaultMetricsAddr keeps /metrics on loopback: it is unauthenticated.
	DefaultMetricsAddr = "127.0.0.1:50052"
)

// HeartbeatEvery is the heartbeat interval in force.
func (c DaemonConfig) HeartbeatEvery() time.Duration {
	if c.HeartbeatInterval == 0 {
		return DefaultHeartbeatInterval
	}
	return c.HeartbeatInterval
}

// MetricsListenAddr is the /metrics listen address in force.
func (c DaemonConfig) MetricsListenAddr() string {
	if c.MetricsAddr == "" {
		return DefaultMetricsAddr
	}
	return c.MetricsAddr
}

// maxDirLen keeps every VMM socket path within sun_path (107 bytes):
// <dir>/sandboxes/<id of up to 40>/vm/console.sock.
const maxDirLen = 107 - len("/sandboxes/") - 40 - len("/vm/console.sock")

// setting is one knob: its variable, its flag, its default and how to
// check and store it.
type setting struct {
	env, flag, def, help string
	// secret settings are logged as "<redacted>".
	secret bool
	set    func(c *DaemonConfig, v string) error
}

func settings() []setting {
	return []setting{
		{env: "WRENN_DIR", flag: "dir", def: DefaultDir, help: "state directory (kernels/, images/, sandboxes/)",
			set: func(c *DaemonConfig, v string) error {
				switch {
				case !filepath.IsAbs(v):
					return errors.New("want an absolute path")
				case len(filepath.Clean(v)) > maxDirLen:
					return fmt.Errorf("%d bytes; at most %d, or VMM socket paths exceed the unix socket limit", len(filepath.Clean(v)), maxDirLen)
				}
				c.Dir = filepath.Clean(v)
				return nil
			}},
		{env: "WRENN_VMM", flag: "vmm", def: drivers.Auto, help: "VMM driver: auto, qemu or firecracker",
			set: func(c *DaemonConfig, v string) error {
				if !drivers.Known(v) {
					return errors.New("want auto, qemu or firecracker")
				}
				c.VMM = v
				return nil
			}},
		{env: "WRENN_HOST_LISTEN_ADDR", flag: "listen", def: DefaultListenAddr,
			help: "address to serve the control plane on (Connect RPC + guest proxy, mTLS)",
			set: func(c *DaemonConfig, v string) error {
				if err := checkListenAddr(v); err != nil {
					return err
				}
				c.ListenAddr = v
				return nil
			}},
		{env: "WRENN_AGENT_ADDRESS", flag: "address", def: "",
			help: "host:port the control plane dials this agent at, sent at registration (empty: the saved one)",
			set: func(c *DaemonConfig, v string) error {
				if v == "" {
					return nil
				}
				if err := CheckAdvertisedAddr(v); err != nil {
					return err
				}
				c.Address = v
				return nil
			}},
		{env: "WRENN_CP_URL", flag: "cp-url", def: "",
			help: "control plane base URL, like http://10.0.0.1:8000 (empty: the one saved at registration)",
			set: func(c *DaemonConfig, v string) error {
				if v == "" {
					return nil
				}
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
					return errors.New("want an http:// or https:// URL with a host and no query")
				}
				c.CPURL = strings.TrimSuffix(v, "/")
				return nil
			}},
		{env: "WRENN_AGENT_REGISTRATION_TOKEN", flag: "register", def: "", secret: true,
			help: "one-time registration token from the control plane (POST /v1/hosts); registers this host, then serves",
			set: func(c *DaemonConfig, v string) error {
				if strings.ContainsAny(v, " \t\r\n") {
					return errors.New("must not contain white space")
				}
				c.RegistrationToken = v
				return nil
			}},
		{env: "WRENN_AGENT_HEARTBEAT_INTERVAL", flag: "heartbeat-interval", def: "",
			help: "how often to heartbeat the control plane (Go duration; empty: " + DefaultHeartbeatInterval.String() + ")",
			set: func(c *DaemonConfig, v string) error {
				if v == "" {
					return nil
				}
				d, err := time.ParseDuration(v)
				if err != nil || d < time.Second || d > 10*time.Minute {
					return errors.New("want a duration from 1s to 10m, like 30s")
				}
				c.HeartbeatInterval = d
				return nil
			}},
		{env: "WRENN_AGENT_FAULTPOINT_DIR", flag: "faultpoint-dir", def: "",
			help: "tests only: directory of armed fault points (internal/faultpoint); empty disables them",
			set:  func(c *DaemonConfig, v string) error { c.FaultPointDir = strings.TrimSpace(v); return nil }},
		{env: "WRENN_AGENT_METRICS_ADDR", flag: "metrics-listen", def: "",
			help: "plain-HTTP address for Prometheus /metrics (empty: " + DefaultMetricsAddr + ")",
			set: func(c *DaemonConfig, v string) error {
				if v == "" {
					return nil
				}
				if err := checkListenAddr(v); err != nil {
					return err
				}
				c.MetricsAddr = v
				return nil
			}},
		{env: "WRENN_AGENT_VMM_UID_BASE", flag: "vmm-uid-base", def: strconv.Itoa(DefaultVMMUIDBase),
			help: "first uid/gid VMMs run as (one per network slot above it)",
			set: func(c *DaemonConfig, v string) error {
				// Below 1000 are system accounts; the top must stay below
				// 2^31 for tools that store ids signed.
				const lo, hi = 1000, math.MaxInt32 - network.DefaultSlots
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil || n < lo || n > hi {
					return fmt.Errorf("want an integer in %d-%d", lo, hi)
				}
				c.VMMUIDBase = uint32(n)
				return nil
			}},
		{env: "WRENN_AGENT_REAPER_INTERVAL", flag: "reaper-interval", def: DefaultReaperInterval.String(),
			help: "how often idle sandboxes are looked for (Go duration)",
			set: func(c *DaemonConfig, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d < time.Second || d > time.Hour {
					return errors.New("want a duration from 1s to 1h, like 10s")
				}
				c.ReaperInterval = d
				return nil
			}},
		{env: "WRENN_AGENT_METRICS_INTERVAL", flag: "metrics-interval", def: DefaultMetricsInterval.String(),
			help: "how often each running sandbox's guest is sampled into its metrics history (Go duration; 0 turns sampling off)",
			set: func(c *DaemonConfig, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || (d != 0 && (d < time.Second || d > 10*time.Minute)) {
					return errors.New("want 0 or a duration from 1s to 10m, like 5s")
				}
				c.MetricsInterval = d
				return nil
			}},
		{env: "WRENN_AGENT_METRICS_HISTORY", flag: "metrics-history", def: DefaultMetricsHistory.String(),
			help: fmt.Sprintf("how far back each sandbox's in-memory metrics history reaches (Go duration; at most %d samples are kept)", MaxMetricsSamples),
			set: func(c *DaemonConfig, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d < time.Minute || d > 24*time.Hour {
					return errors.New("want a duration from 1m to 24h, like 1h")
				}
				c.MetricsHistory = d
				return nil
			}},
		{env: "WRENN_AGENT_NAME", flag: "name", def: "wrenn",
			help: "names the agent's network namespaces, nftables table, cgroup parent and /dev/shm/<name>; 1-9 of a-z, 0-9",
			set: func(c *DaemonConfig, v string) error {
				// "<name>-<slot>" must fit the 15-byte interface name limit.
				if len(v) < 1 || len(v) > 9 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
					return errors.New("want 1-9 of a-z and 0-9")
				}
				c.Name = v
				return nil
			}},
		{env: "WRENN_AGENT_HOST_CIDR", flag: "host-cidr", def: "10.11.0.0/16",
			help: "IPv4 range of the per-slot addresses the host dials guests at",
			set:  func(c *DaemonConfig, v string) error { return parseCIDR(v, &c.HostCIDR) }},
		{env: "WRENN_AGENT_VETH_CIDR", flag: "veth-cidr", def: "10.12.0.0/16",
			help: "IPv4 range of the per-slot veth pairs (disjoint from the host range)",
			set:  func(c *DaemonConfig, v string) error { return parseCIDR(v, &c.VethCIDR) }},
		{env: "WRENN_AGENT_EGRESS_DENY", flag: "egress-deny", def: "default",
			help: "CIDRs no sandbox may reach whatever its policy allows, comma-separated; \"default\" stands for private, loopback, link-local, CGNAT, multicast and reserved ranges (and may be combined with more CIDRs); \"none\" for no ceiling beyond loopback, link-local and the host's own addresses",
			set: func(c *DaemonConfig, v string) error {
				ps, err := ParseEgressDeny(v)
				if err != nil {
					return err
				}
				c.EgressDeny = ps
				return nil
			}},
		{env: "WRENN_AGENT_INSECURE_REGISTRIES", flag: "insecure-registries", def: "",
			help: "registries (host or host:port, comma-separated) template builds may pull from over plain HTTP; loopback ones always may",
			set: func(c *DaemonConfig, v string) error {
				c.InsecureRegistries = nil
				for _, r := range strings.Split(v, ",") {
					if r = strings.TrimSpace(r); r != "" {
						c.InsecureRegistries = append(c.InsecureRegistries, r)
					}
				}
				return nil
			}},
		{env: "WRENN_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error",
			set: func(c *DaemonConfig, v string) error {
				switch strings.ToLower(v) {
				case "debug":
					c.LogLevel = slog.LevelDebug
				case "info":
					c.LogLevel = slog.LevelInfo
				case "warn":
					c.LogLevel = slog.LevelWarn
				case "error":
					c.LogLevel = slog.LevelError
				default:
					return errors.New("want debug, info, warn or error")
				}
				return nil
			}},
	}
}

// ParseDaemonConfig reads args (without the program name), then environ
// (os.Environ() form), then the --env-file if given, then the defaults;
// the first that sets a value wins. It checks every value and returns one
// errdefs.ErrInvalidArgument error naming each bad variable. Unknown
// WRENN_AGENT_* variables are errors too: a misspelt knob must not be
// silently ignored. -h prints usage to out and returns flag.ErrHelp.
func ParseDaemonConfig(args, environ []string, out io.Writer) (DaemonConfig, error) {
	all := settings()
	fs := flag.NewFlagSet("wrenn-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	flags := map[string]*string{}
	for _, s := range all {
		flags[s.env] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def))
	}
	var c DaemonConfig
	fs.StringVar(&c.EnvFile, "env-file", "", "read KEY=VALUE lines from this file; the environment and flags override it")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-agent flags: %v", err)
	}
	if fs.NArg() > 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-agent takes no arguments, got %q", fs.Args())
	}
	flagSet := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagSet[f.Name] = true })

	env := parseEnviron(environ)
	var file map[string]string
	if c.EnvFile != "" {
		var err error
		file, err = envfile.Read(c.EnvFile)
		if errors.Is(err, os.ErrNotExist) {
			return c, errdefs.New(errdefs.ErrInvalidArgument, "env file %s: no such file", c.EnvFile)
		}
		if err != nil {
			return c, err
		}
	}

	var errs []error
	c.sources = map[string]string{}
	for _, s := range all {
		v, src := s.def, "default"
		if fv, ok := file[s.env]; ok {
			v, src = fv, "env file"
		}
		if ev, ok := env[s.env]; ok {
			v, src = ev, "environment"
		}
		if flagSet[s.flag] {
			v, src = *flags[s.env], "flag --"+s.flag
		}
		c.sources[s.env] = src
		if err := s.set(&c, v); err != nil {
			shown := strconv.Quote(v)
			if s.secret {
				shown = "<redacted>"
			}
			errs = append(errs, fmt.Errorf("%s=%s (from %s): %v", s.env, shown, src, err))
		}
	}
	for _, src := range []struct {
		name string
		vars map[string]string
	}{{"environment", env}, {"env file " + c.EnvFile, file}} {
		for _, k := range slices.Sorted(maps.Keys(src.vars)) {
			if strings.HasPrefix(k, "WRENN_AGENT_") && !slices.ContainsFunc(all, func(s setting) bool { return s.env == k }) {
				errs = append(errs, fmt.Errorf("%s (in the %s): unknown setting", k, src.name))
			}
		}
	}
	if len(errs) > 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-agent config: %v", errors.Join(errs...))
	}
	return c, nil
}

// LogValue lists every setting with where it came from, secrets redacted.
func (c DaemonConfig) LogValue() slog.Value {
	values := map[string]string{
		"WRENN_DIR":                       c.Dir,
		"WRENN_VMM":                       c.VMM,
		"WRENN_HOST_LISTEN_ADDR":          c.ListenAddr,
		"WRENN_AGENT_ADDRESS":             c.Address,
		"WRENN_CP_URL":                    c.CPURL,
		"WRENN_AGENT_HEARTBEAT_INTERVAL":  c.HeartbeatEvery().String(),
		"WRENN_AGENT_METRICS_ADDR":        c.MetricsListenAddr(),
		"WRENN_AGENT_VMM_UID_BASE":        strconv.FormatUint(uint64(c.VMMUIDBase), 10),
		"WRENN_AGENT_REAPER_INTERVAL":     c.ReaperInterval.String(),
		"WRENN_AGENT_METRICS_INTERVAL":    c.MetricsInterval.String(),
		"WRENN_AGENT_METRICS_HISTORY":     c.MetricsHistory.String(),
		"WRENN_LOG_LEVEL":                 strings.ToLower(c.LogLevel.String()),
		"WRENN_AGENT_EGRESS_DENY":         formatEgressDeny(c.EgressDeny),
		"WRENN_AGENT_FAULTPOINT_DIR":      c.FaultPointDir,
		"WRENN_AGENT_INSECURE_REGISTRIES": strings.Join(c.InsecureRegistries, ","),
	}
	var attrs []slog.Attr
	for _, s := range settings() {
		v := values[s.env]
		if s.secret {
			v = "<redacted>"
		}
		attrs = append(attrs, slog.Group(s.env, "value", v, "source", c.sources[s.env]))
	}
	if c.EnvFile != "" {
		attrs = append(attrs, slog.String("env_file", c.EnvFile))
	}
	return slog.GroupValue(attrs...)
}

// checkListenAddr accepts host:port with a port in 0-65535 (an empty host
// listens on every address).
func checkListenAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want 0-65535", port)
	}
	return nil
}

// CheckAdvertisedAddr accepts an address others can dial: a host (IP or DNS
// name, not an unspecified address) and a port in 1-65535.
func CheckAdvertisedAddr(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q: want 1-65535", port)
	}
	if host == "" {
		return errors.New("want a host others can dial, not an empty one")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("host %s: want an address others can dial, not an unspecified one", host)
	}
	return nil
}

// parseEnviron turns KEY=VALUE entries into a map; later entries win, as
// in os.Getenv.
func parseEnviron(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// InsecureRegistry says whether a build may reach registry over plain
// HTTP: a loopback one, or one the operator listed.
func (c DaemonConfig) InsecureRegistry(registry string) bool {
	return ociimage.IsLoopbackRegistry(registry) || slices.Contains(c.InsecureRegistries, registry)
}

// ParseEgressDeny parses WRENN_AGENT_EGRESS_DENY: comma-separated CIDRs
// (IPv4 or IPv6; a bare address is a single host), where the word
// "default" stands for network.DefaultEgressDeny and "none" alone for an
// empty ceiling. The result is nil for exactly "default", so the network
// package's default applies.
func ParseEgressDeny(v string) ([]netip.Prefix, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "", "default":
		return nil, nil
	case "none":
		return []netip.Prefix{}, nil
	}
	out := []netip.Prefix{}
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		switch f {
		case "default":
			out = append(out, network.DefaultEgressDeny...)
			continue
		case "none", "":
			return nil, fmt.Errorf("%q: want CIDRs like 10.0.0.0/8, \"default\", or \"none\" alone", f)
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q: want a CIDR like 10.0.0.0/8 or an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q: write IPv4-mapped ranges as IPv4", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// formatEgressDeny shows the ceiling in force for the start-up log.
func formatEgressDeny(ps []netip.Prefix) string {
	if ps == nil {
		ps = network.DefaultEgressDeny
	}
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// parseCIDR parses an IPv4 prefix of at least a /24 (room for slots).
func parseCIDR(v string, out *netip.Prefix) error {
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		return errors.New("want an IPv4 CIDR of /24 or larger, like 10.11.0.0/16")
	}
	*out = p.Masked()
	return nil
}
