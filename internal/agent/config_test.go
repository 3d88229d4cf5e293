package agent

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
)

func TestParseDaemonConfig(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "agent.env")
	if err := os.WriteFile(envFile, []byte(`# wrenn-agent
export WRENN_DIR="/srv/wrenn"
WRENN_VMM = 'qemu'

WRENN_AGENT_REAPER_INTERVAL=30s
WRENN_CP_TOKEN=not-ours
`), 0o600); err != nil {
		t.Fatal(err)
	}
	defaults := DaemonConfig{Dir: DefaultDir, VMM: "auto", ListenAddr: ":50051", VMMUIDBase: DefaultVMMUIDBase,
		ReaperInterval: DefaultReaperInterval, LogLevel: slog.LevelInfo, Name: "wrenn",
		MetricsInterval: DefaultMetricsInterval, MetricsHistory: DefaultMetricsHistory,
		HostCIDR: netip.MustParsePrefix("10.11.0.0/16"), VethCIDR: netip.MustParsePrefix("10.12.0.0/16")}
	with := func(f func(*DaemonConfig)) DaemonConfig { c := defaults; f(&c); return c }

	tests := []struct {
		name    string
		args    []string
		env     []string
		want    DaemonConfig
		sources map[string]string
	}{
		{name: "defaults", want: defaults,
			sources: map[string]string{"WRENN_DIR": "default", "WRENN_VMM": "default"}},
		{name: "environment", env: []string{"WRENN_DIR=/data/wrenn/", "WRENN_VMM=firecracker", "WRENN_HOST_LISTEN_ADDR=10.0.0.2:7000",
			"WRENN_AGENT_VMM_UID_BASE=300000", "WRENN_AGENT_REAPER_INTERVAL=1m", "WRENN_LOG_LEVEL=DEBUG", "PATH=/bin"},
			want: with(func(c *DaemonConfig) {
				c.Dir, c.VMM, c.ListenAddr, c.VMMUIDBase, c.ReaperInterval, c.LogLevel = "/data/wrenn", "firecracker", "10.0.0.2:7000", 300000, time.Minute, slog.LevelDebug
			}),
			sources: map[string]string{"WRENN_DIR": "environment", "WRENN_LOG_LEVEL": "environment"}},
		{name: "flags beat the environment", args: []string{"--dir=/flag", "-vmm", "qemu", "--log-level=error"},
			env:     []string{"WRENN_DIR=/env", "WRENN_VMM=firecracker"},
			want:    with(func(c *DaemonConfig) { c.Dir, c.VMM, c.LogLevel = "/flag", "qemu", slog.LevelError }),
			sources: map[string]string{"WRENN_DIR": "flag --dir", "WRENN_VMM": "flag --vmm", "WRENN_HOST_LISTEN_ADDR": "default"}},
		{name: "env file under the environment", args: []string{"--env-file", envFile}, env: []string{"WRENN_VMM=auto"},
			want: with(func(c *DaemonConfig) {
				c.Dir, c.ReaperInterval, c.EnvFile = "/srv/wrenn", 30*time.Second, envFile
			}),
			sources: map[string]string{"WRENN_DIR": "env file", "WRENN_VMM": "environment", "WRENN_AGENT_REAPER_INTERVAL": "env file"}},
		{name: "version", args: []string{"--version"}, want: with(func(c *DaemonConfig) { c.ShowVersion = true })},
		{name: "a second agent beside the first", env: []string{"WRENN_AGENT_NAME=wtest", "WRENN_AGENT_HOST_CIDR=10.40.0.0/16", "WRENN_AGENT_VETH_CIDR=10.41.0.0/16"},
			want: with(func(c *DaemonConfig) {
				c.Name, c.HostCIDR, c.VethCIDR = "wtest", netip.MustParsePrefix("10.40.0.0/16"), netip.MustParsePrefix("10.41.0.0/16")
			})},
		{name: "metrics sampling off, longer history", env: []string{"WRENN_AGENT_METRICS_INTERVAL=0", "WRENN_AGENT_METRICS_HISTORY=3h"},
			want: with(func(c *DaemonConfig) { c.MetricsInterval, c.MetricsHistory = 0, 3*time.Hour })},
		{name: "metrics interval flag", args: []string{"--metrics-interval=10s"},
			want: with(func(c *DaemonConfig) { c.MetricsInterval = 10 * time.Second })},
		{name: "listen on any host", env: []string{"WRENN_HOST_LISTEN_ADDR=[::]:0"}, want: with(func(c *DaemonConfig) { c.ListenAddr = "[::]:0" })},
		{name: "egress ceiling", env: []string{"WRENN_AGENT_EGRESS_DENY= 198.51.100.0/24, 203.0.113.7 ,fd00::1/8"},
			want: with(func(c *DaemonConfig) {
				c.EgressDeny = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("fd00::/8")}
			})},
		{name: "egress ceiling extends the default", args: []string{"--egress-deny=default,198.51.100.0/24"},
			want: with(func(c *DaemonConfig) {
				c.EgressDeny = append(append([]netip.Prefix{}, network.DefaultEgressDeny...), netip.MustParsePrefix("198.51.100.0/24"))
			})},
		{name: "no egress ceiling", env: []string{"WRENN_AGENT_EGRESS_DENY=none"},
			want: with(func(c *DaemonConfig) { c.EgressDeny = []netip.Prefix{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDaemonConfig(tt.args, tt.env, io.Discard)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			srcs := got.sources
			got.sources = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config = %+v\nwant     %+v", got, tt.want)
			}
			for k, want := range tt.sources {
				if srcs[k] != want {
					t.Errorf("source of %s = %q, want %q", k, srcs[k], want)
				}
			}
		})
	}
}

func TestParseDaemonConfigRejects(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(badFile, []byte("WRENN_DIR=/ok\nthis is not an assignment\n1BAD=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  []string
		// want are substrings the error must contain, naming each culprit.
		want []string
	}{
		{name: "relative dir", env: []string{"WRENN_DIR=var/lib/wrenn"}, want: []string{`WRENN_DIR="var/lib/wrenn"`, "absolute"}},
		{name: "dir too long for sockets", env: []string{"WRENN_DIR=/" + strings.Repeat("d", 60)}, want: []string{"WRENN_DIR=", "unix socket"}},
		{name: "unknown vmm", env: []string{"WRENN_VMM=kvmtool"}, want: []string{`WRENN_VMM="kvmtool"`, "auto, qemu or firecracker"}},
		{name: "listen without port", env: []string{"WRENN_HOST_LISTEN_ADDR=localhost"}, want: []string{"WRENN_HOST_LISTEN_ADDR=", "host:port"}},
		{name: "listen port out of range", env: []string{"WRENN_HOST_LISTEN_ADDR=:70000"}, want: []string{"WRENN_HOST_LISTEN_ADDR=", "0-65535"}},
		{name: "uid base not a number", env: []string{"WRENN_AGENT_VMM_UID_BASE=lots"}, want: []string{"WRENN_AGENT_VMM_UID_BASE=", "integer"}},
		{name: "uid base root", env: []string{"WRENN_AGENT_VMM_UID_BASE=0"}, want: []string{"WRENN_AGENT_VMM_UID_BASE=\"0\""}},
		{name: "uid base system range", env: []string{"WRENN_AGENT_VMM_UID_BASE=100"}, want: []string{"WRENN_AGENT_VMM_UID_BASE="}},
		{name: "uid base overflows", env: []string{"WRENN_AGENT_VMM_UID_BASE=4294967295"}, want: []string{"WRENN_AGENT_VMM_UID_BASE="}},
		{name: "reaper interval unparsable", env: []string{"WRENN_AGENT_REAPER_INTERVAL=often"}, want: []string{"WRENN_AGENT_REAPER_INTERVAL="}},
		{name: "reaper interval too short", args: []string{"--reaper-interval=1ms"}, want: []string{"WRENN_AGENT_REAPER_INTERVAL=\"1ms\" (from flag --reaper-interval)"}},
		{name: "metrics interval too short", env: []string{"WRENN_AGENT_METRICS_INTERVAL=100ms"}, want: []string{`WRENN_AGENT_METRICS_INTERVAL="100ms"`, "0 or a duration"}},
		{name: "metrics interval unparsable", env: []string{"WRENN_AGENT_METRICS_INTERVAL=often"}, want: []string{"WRENN_AGENT_METRICS_INTERVAL="}},
		{name: "metrics history too long", env: []string{"WRENN_AGENT_METRICS_HISTORY=48h"}, want: []string{`WRENN_AGENT_METRICS_HISTORY="48h"`}},
		{name: "metrics history zero", env: []string{"WRENN_AGENT_METRICS_HISTORY=0"}, want: []string{"WRENN_AGENT_METRICS_HISTORY="}},
		{name: "log level", env: []string{"WRENN_LOG_LEVEL=loud"}, want: []string{`WRENN_LOG_LEVEL="loud"`}},
		{name: "agent name too long for interface names", env: []string{"WRENN_AGENT_NAME=averylongname"}, want: []string{"WRENN_AGENT_NAME="}},
		{name: "agent name with a dash", env: []string{"WRENN_AGENT_NAME=a-b"}, want: []string{"WRENN_AGENT_NAME="}},
		{name: "host range not IPv4", env: []string{"WRENN_AGENT_HOST_CIDR=fd00::/64"}, want: []string{"WRENN_AGENT_HOST_CIDR="}},
		{name: "veth range too small", env: []string{"WRENN_AGENT_VETH_CIDR=10.12.0.0/28"}, want: []string{"WRENN_AGENT_VETH_CIDR="}},
		{name: "egress ceiling not a CIDR", env: []string{"WRENN_AGENT_EGRESS_DENY=10.0.0.0/8,intranet"}, want: []string{"WRENN_AGENT_EGRESS_DENY=", `"intranet"`}},
		{name: "egress ceiling prefix too long", env: []string{"WRENN_AGENT_EGRESS_DENY=10.0.0.0/33"}, want: []string{"WRENN_AGENT_EGRESS_DENY="}},
		{name: "egress ceiling none among others", env: []string{"WRENN_AGENT_EGRESS_DENY=none,10.0.0.0/8"}, want: []string{"WRENN_AGENT_EGRESS_DENY=", `"none"`}},
		{name: "egress ceiling empty entry", env: []string{"WRENN_AGENT_EGRESS_DENY=10.0.0.0/8,,"}, want: []string{"WRENN_AGENT_EGRESS_DENY="}},
		{name: "misspelt agent knob", env: []string{"WRENN_AGENT_VMM_UID_BSE=1"}, want: []string{"WRENN_AGENT_VMM_UID_BSE", "unknown setting"}},
		{name: "every bad variable named at once", env: []string{"WRENN_DIR=rel", "WRENN_VMM=x", "WRENN_LOG_LEVEL=y"},
			want: []string{"WRENN_DIR=", "WRENN_VMM=", "WRENN_LOG_LEVEL="}},
		{name: "missing env file", args: []string{"--env-file", filepath.Join(dir, "none.env")}, want: []string{"env file", "none.env"}},
		{name: "malformed env file", args: []string{"--env-file", badFile}, want: []string{"line 2", "line 3"}},
		{name: "unknown flag", args: []string{"--frobnicate"}, want: []string{"frobnicate"}},
		{name: "stray argument", args: []string{"serve"}, want: []string{"no arguments", "serve"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDaemonConfig(tt.args, tt.env, io.Discard)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("parse = %v, want InvalidArgument", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseDaemonConfigHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := ParseDaemonConfig([]string{"-h"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), "-"+s.flag) || !strings.Contains(out.String(), s.env) {
			t.Errorf("usage does not mention --%s / %s:\n%s", s.flag, s.env, out.String())
		}
	}
}

func TestDaemonConfigLog(t *testing.T) {
	c, err := ParseDaemonConfig([]string{"--vmm=qemu"}, []string{"WRENN_DIR=/srv/w"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	for _, want := range []string{
		"config.WRENN_DIR.value=/srv/w", "config.WRENN_DIR.source=environment",
		"config.WRENN_VMM.value=qemu", `config.WRENN_VMM.source="flag --vmm"`,
		"config.WRENN_AGENT_VMM_UID_BASE.value=200000", "config.WRENN_AGENT_VMM_UID_BASE.source=default",
		"config.WRENN_LOG_LEVEL.value=info",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log line lacks %s:\n%s", want, buf.String())
		}
	}
}
