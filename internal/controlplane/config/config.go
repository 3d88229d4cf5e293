// Package config is wrenn-cp's configuration: one Config built once in main
// from flags, the environment and an optional .env file, validated as a
// whole (every bad setting is named), and logged with secrets redacted.
// Nothing else in the control plane reads the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/envfile"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// Config is wrenn-cp's configuration.
type Config struct {
	// ListenAddr is WRENN_CP_LISTEN_ADDR: where the API (and the host
	// registry agents call) is served, HTTP/1.1 and h2c.
	ListenAddr string
	// DatabaseURL is DATABASE_URL (secret: it may hold a password).
	DatabaseURL string
	// JWTSecret is WRENN_JWT_SECRET, the session-token signing key.
	JWTSecret []byte
	// Domain is WRENN_DOMAIN: sandbox ports are served at
	// {port}-{sandboxID}.{Domain}.
	Domain string
	// PublicURL is WRENN_CP_URL, the URL users and agents reach this
	// control plane at (no trailing slash).
	PublicURL string
	// RateLimit is WRENN_RATE_LIMIT: requests per second per API key or
	// user.
	RateLimit float64
	// AllowedOrigins is WRENN_ALLOWED_ORIGINS: origins allowed to open
	// WebSockets; empty means the API's own host only.
	AllowedOrigins []string
	// HostTimeout is WRENN_HOST_TIMEOUT: a host silent this long is
	// unreachable.
	HostTimeout time.Duration
	// LogLevel is WRENN_LOG_LEVEL.
	LogLevel slog.Level
	// TLSMode is WRENN_TLS: "" (plain HTTP unless TLSCert is set) or
	// "self-signed" (a serving certificate from the cluster CA).
	TLSMode string
	// TLSCert and TLSKey are WRENN_TLS_CERT and WRENN_TLS_KEY: PEM files of
	// the certificate (chain) and key to serve HTTPS with.
	TLSCert, TLSKey string
	// TLSNames is WRENN_TLS_NAMES: DNS names and IPs of the self-signed
	// serving certificate; empty means the public URL's host, the listen
	// host, localhost and the loopback addresses.
	TLSNames []string
	// MetricsAddr is WRENN_METRICS_ADDR: a separate plain-HTTP listener for
	// Prometheus' /metrics, which is unauthenticated and so never on the
	// API port; empty disables it.
	MetricsAddr string
	// FaultPointDir is WRENN_CP_FAULTPOINT_DIR, for fault-injection tests
	// only (internal/faultpoint): where armed fault points are. Empty, as
	// in production: none.
	FaultPointDir string
	// TeamLimits are the default per-team quotas (WRENN_TEAM_MAX_*).
	TeamLimits TeamLimits
	// Edge is WRENN_TRUSTED_PROXIES and WRENN_CLIENT_IP_HEADER (edge.go).
	Edge Edge
	// Signup is WRENN_SIGNUP: open, invite or closed (see access.go).
	Signup string
	// AllowPrivateHostAddresses is WRENN_ALLOW_PRIVATE_HOST_ADDRESSES:
	// byoc hosts may be at internal addresses.
	AllowPrivateHostAddresses bool
	// EnvFile is the env file read, if any.
	EnvFile string
	// ShowVersion is --version.
	ShowVersion bool

	sources map[string]string
}

// Defaults.
const (
	DefaultListenAddr  = ":8000"
	DefaultDomain      = "localhost"
	DefaultPublicURL   = "http://127.0.0.1:8000"
	DefaultRateLimit   = 50
	DefaultHostTimeout = 90 * time.Second
	// DefaultMetricsAddr keeps /metrics on loopback: it is unauthenticated
	// and tells anyone who reads it about every team's traffic.
	DefaultMetricsAddr = "127.0.0.1:9464"
	// DefaultEnvFile is read when --env-file is not given and it exists.
	DefaultEnvFile = ".env"
	// MinJWTSecret is the shortest session signing key accepted (HS256
	// wants at least its 256-bit output size).
	MinJWTSecret = 32
	// heartbeatInterval is the agents'; a host timeout must exceed it.
	heartbeatInterval = 30 * time.Second
)

// setting is one knob. flag is empty for secrets: command lines are
// visible to every user of the machine.
type setting struct {
	env, flag, def, help string
	required, secret     bool
	set                  func(c *Config, v string) error
}

func settings() []setting {
	return append([]setting{
		{env: "WRENN_CP_LISTEN_ADDR", flag: "listen", def: DefaultListenAddr, help: "address to serve the API on (host:port)",
			set: func(c *Config, v string) error {
				if err := checkHostPort(v); err != nil {
					return err
				}
				c.ListenAddr = v
				return nil
			}},
		{env: "DATABASE_URL", required: true, secret: true, help: "PostgreSQL connection string",
			set: func(c *Config, v string) error {
				if _, err := pgxpool.ParseConfig(v); err != nil {
					return errors.New("not a valid PostgreSQL connection string (postgres://user:password@host:5432/db)")
				}
				c.DatabaseURL = v
				return nil
			}},
		{env: "WRENN_JWT_SECRET", required: true, secret: true, help: "session token signing key",
			set: func(c *Config, v string) error {
				if len(v) < MinJWTSecret {
					return fmt.Errorf("must be at least %d bytes (got %d); e.g. openssl rand -hex 32", MinJWTSecret, len(v))
				}
				c.JWTSecret = []byte(v)
				return nil
			}},
		{env: "WRENN_DOMAIN", flag: "domain", def: DefaultDomain, help: "domain sandbox ports are served under ({port}-{sandbox}.DOMAIN)",
			set: func(c *Config, v string) error {
				d := strings.ToLower(v)
				host := d
				if h, port, err := net.SplitHostPort(d); err == nil {
					if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
						return fmt.Errorf("port %q: want 1-65535", port)
					}
					host = h
				}
				if !validDNSName(host) {
					return errors.New("want a DNS name, optionally with :port, and no scheme or path")
				}
				c.Domain = d
				return nil
			}},
		{env: "WRENN_CP_URL", flag: "url", def: DefaultPublicURL, help: "public URL of the control plane",
			set: func(c *Config, v string) error {
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return errors.New("want an absolute http:// or https:// URL")
				}
				if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
					return errors.New("want no user, query or fragment")
				}
				c.PublicURL = strings.TrimRight(v, "/")
				return nil
			}},
		{env: "WRENN_RATE_LIMIT", flag: "rate-limit", def: strconv.Itoa(DefaultRateLimit), help: "requests per second per API key or user (burst 2x)",
			set: func(c *Config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(f) || f <= 0 || f > 1e6 {
					return errors.New("want a number of requests per second above 0 and at most 1000000")
				}
				c.RateLimit = f
				return nil
			}},
		{env: "WRENN_ALLOWED_ORIGINS", flag: "allowed-origins", def: "", help: "comma-separated origins allowed to open WebSockets",
			set: func(c *Config, v string) error {
				c.AllowedOrigins = nil
				if strings.TrimSpace(v) == "" {
					return nil
				}
				for _, o := range strings.Split(v, ",") {
					o = strings.TrimSpace(o)
					if o == "" || strings.ContainsAny(o, " \t") {
						return errors.New("want a comma-separated list of origins with no empty entries")
					}
					c.AllowedOrigins = append(c.AllowedOrigins, o)
				}
				return nil
			}},
		{env: "WRENN_HOST_TIMEOUT", flag: "host-timeout", def: DefaultHostTimeout.String(), help: "a host silent this long is unreachable (Go duration)",
			set: func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d <= heartbeatInterval || d > time.Hour {
					return fmt.Errorf("want a duration above %v (the agents' heartbeat interval) and at most 1h, like 90s", heartbeatInterval)
				}
				c.HostTimeout = d
				return nil
			}},
		{env: "WRENN_TLS", flag: "tls", def: "", help: "serve HTTPS with a certificate issued from the cluster CA: self-signed (or set WRENN_TLS_CERT and WRENN_TLS_KEY; empty: plain HTTP)",
			set: func(c *Config, v string) error {
				switch strings.ToLower(strings.TrimSpace(v)) {
				case "", "off":
					c.TLSMode = ""
				case "self-signed":
					c.TLSMode = "self-signed"
				default:
					return errors.New("want self-signed, or empty for plain HTTP (certificate files go in WRENN_TLS_CERT and WRENN_TLS_KEY)")
				}
				return nil
			}},
		{env: "WRENN_TLS_CERT", flag: "tls-cert", def: "", help: "PEM certificate (chain) file to serve HTTPS with; needs WRENN_TLS_KEY",
			set: func(c *Config, v string) error { c.TLSCert = strings.TrimSpace(v); return nil }},
		{env: "WRENN_TLS_KEY", flag: "tls-key", def: "", help: "PEM private key file of WRENN_TLS_CERT",
			set: func(c *Config, v string) error { c.TLSKey = strings.TrimSpace(v); return nil }},
		{env: "WRENN_TLS_NAMES", flag: "tls-names", def: "", help: "comma-separated DNS names and IPs of the self-signed certificate (default: the WRENN_CP_URL host, the listen host, localhost, 127.0.0.1, ::1)",
			set: func(c *Config, v string) error {
				c.TLSNames = nil
				for _, n := range strings.Split(v, ",") {
					n = strings.ToLower(strings.TrimSpace(n))
					if n == "" {
						continue
					}
					if net.ParseIP(strings.Trim(n, "[]")) == nil && !validDNSName(strings.TrimPrefix(n, "*.")) {
						return fmt.Errorf("%q: want DNS names or IP addresses, comma-separated", n)
					}
					c.TLSNames = append(c.TLSNames, strings.Trim(n, "[]"))
				}
				return nil
			}},
		{env: "WRENN_METRICS_ADDR", flag: "metrics-listen", def: DefaultMetricsAddr, help: "plain-HTTP address for Prometheus /metrics, unauthenticated (host:port; empty disables)",
			set: func(c *Config, v string) error {
				c.MetricsAddr = strings.TrimSpace(v)
				if c.MetricsAddr == "" {
					return nil
				}
				return checkHostPort(c.MetricsAddr)
			}},
		{env: "WRENN_CP_FAULTPOINT_DIR", flag: "faultpoint-dir", def: "",
			help: "tests only: directory of armed fault points (internal/faultpoint); empty disables them",
			set:  func(c *Config, v string) error { c.FaultPointDir = strings.TrimSpace(v); return nil }},
		{env: "WRENN_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error",
			set: func(c *Config, v string) error {
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
	}, slices.Concat(teamLimitSettings(), accessSettings(), edgeSettings())...)
}

// Parse reads args (without the program name), environ (os.Environ()
// form) and the env file: --env-file, or ./.env when that flag is absent
// and the file exists. A flag beats the environment, which beats the file,
// which beats the default. It returns one errdefs.ErrInvalidArgument error
// naming every bad or missing setting, and unknown WRENN_CP_* variables
// (a misspelt knob must not be silently ignored). -h prints usage to out
// and returns flag.ErrHelp.
func Parse(args, environ []string, out io.Writer) (Config, error) {
	all := settings()
	fs := flag.NewFlagSet("wrenn-cp", flag.ContinueOnError)
	fs.SetOutput(out)
	flags := map[string]*string{}
	for _, s := range all {
		if s.flag != "" {
			flags[s.env] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def))
		}
	}
	var c Config
	fs.StringVar(&c.EnvFile, "env-file", "", "read KEY=VALUE lines from this file (default ./.env if present); the environment and flags override it")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: wrenn-cp [flags]\n\nSecrets are read only from the environment or the env file:\n")
		for _, s := range all {
			if s.flag == "" {
				fmt.Fprintf(out, "  %s: %s (required)\n", s.env, s.help)
			}
		}
		fmt.Fprintln(out, "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp flags: %v", err)
	}
	if fs.NArg() > 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp takes no arguments, got %q", fs.Args())
	}
	if c.ShowVersion {
		return c, nil
	}
	flagSet := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagSet[f.Name] = true })

	env := parseEnviron(environ)
	file, err := loadEnvFile(&c)
	if err != nil {
		return c, err
	}

	var errs []error
	c.sources = map[string]string{}
	for _, s := range all {
		v, src, ok := s.def, "default", !s.required
		if fv, found := file[s.env]; found {
			v, src, ok = fv, "env file", true
		}
		if ev, found := env[s.env]; found {
			v, src, ok = ev, "environment", true
		}
		if s.flag != "" && flagSet[s.flag] {
			v, src, ok = *flags[s.env], "flag --"+s.flag, true
		}
		c.sources[s.env] = src
		if !ok || (s.required && v == "") {
			errs = append(errs, fmt.Errorf("%s: required (%s)", s.env, s.help))
			continue
		}
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
			if strings.HasPrefix(k, "WRENN_CP_") && !slices.ContainsFunc(all, func(s setting) bool { return s.env == k }) {
				errs = append(errs, fmt.Errorf("%s (in the %s): unknown setting", k, src.name))
			}
		}
	}
	errs = append(errs, c.checkTLS()...)
	if len(errs) > 0 {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "wrenn-cp config: %v", errors.Join(errs...))
	}
	return c, nil
}

// checkTLS checks the TLS settings together: certificate files come in
// pairs, and they exclude the self-signed mode.
func (c Config) checkTLS() []error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("WRENN_TLS_CERT and WRENN_TLS_KEY: set both or neither"))
	}
	if c.TLSMode != "" && (c.TLSCert != "" || c.TLSKey != "") {
		errs = append(errs, errors.New("WRENN_TLS=self-signed and WRENN_TLS_CERT/WRENN_TLS_KEY: choose one"))
	}
	return errs
}

// loadEnvFile reads --env-file (which must exist) or, without it,
// DefaultEnvFile if it exists.
func loadEnvFile(c *Config) (map[string]string, error) {
	if c.EnvFile != "" {
		m, err := envfile.Read(c.EnvFile)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "--env-file %s: no such file", c.EnvFile)
		}
		return m, err
	}
	m, err := envfile.Read(DefaultEnvFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err == nil {
		c.EnvFile = DefaultEnvFile
	}
	return m, err
}

// LogValue lists every setting with where it came from; secrets are
// redacted (the database URL keeps everything but its password).
func (c Config) LogValue() slog.Value {
	values := map[string]string{
		"WRENN_CP_LISTEN_ADDR":    c.ListenAddr,
		"DATABASE_URL":            redactDSN(c.DatabaseURL),
		"WRENN_JWT_SECRET":        "<redacted>",
		"WRENN_DOMAIN":            c.Domain,
		"WRENN_CP_URL":            c.PublicURL,
		"WRENN_RATE_LIMIT":        strconv.FormatFloat(c.RateLimit, 'g', -1, 64),
		"WRENN_ALLOWED_ORIGINS":   strings.Join(c.AllowedOrigins, ","),
		"WRENN_HOST_TIMEOUT":      c.HostTimeout.String(),
		"WRENN_METRICS_ADDR":      c.MetricsAddr,
		"WRENN_CP_FAULTPOINT_DIR": c.FaultPointDir,
		"WRENN_LOG_LEVEL":         strings.ToLower(c.LogLevel.String()),
		"WRENN_TLS":               c.TLSMode,
		"WRENN_TLS_CERT":          c.TLSCert,
		"WRENN_TLS_KEY":           c.TLSKey,
		"WRENN_TLS_NAMES":         strings.Join(c.TLSNames, ","),
	}
	maps.Copy(values, c.teamLimitValues())
	maps.Copy(values, c.accessValues())
	maps.Copy(values, c.edgeValues())
	var attrs []slog.Attr
	for _, s := range settings() {
		attrs = append(attrs, slog.Group(s.env, "value", values[s.env], "source", c.sources[s.env]))
	}
	if c.EnvFile != "" {
		attrs = append(attrs, slog.String("env_file", c.EnvFile))
	}
	return slog.GroupValue(attrs...)
}

// redactDSN hides the password of a URL-form connection string; other
// forms are hidden whole (a key=value DSN can carry password= anywhere).
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "<redacted>"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("want host:port, e.g. :8000 or 127.0.0.1:8000")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want 0-65535", port)
	}
	return nil
}

func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	return true
}

func parseEnviron(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}
