package guestinit

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	def := DefaultConfig()
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cmdline string
		want    Config
		errs    []string // substrings, one per expected problem
	}{
		{
			name:    "bare command line gives defaults",
			cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw init=/usr/local/sbin/wrenn-init\n",
			want:    def,
		},
		{
			name:    "all parameters",
			cmdline: "console=ttyS0 wrenn.hostname=sbx-1.example wrenn.dns=10.0.0.2,2001:db8::53 wrenn.ip=10.1.2.2/24 wrenn.gw=10.1.2.1 rw",
			want: Config{
				Hostname: "sbx-1.example",
				DNS:      addrs("10.0.0.2", "2001:db8::53"),
				Address:  netip.MustParsePrefix("10.1.2.2/24"),
				Gateway:  netip.MustParseAddr("10.1.2.1"),
			},
		},
		{
			name:    "quoted value",
			cmdline: `wrenn.dns="9.9.9.9, 1.0.0.1" quiet`,
			want:    with(func(c *Config) { c.DNS = addrs("9.9.9.9", "1.0.0.1") }),
		},
		{
			name:    "bad hostname keeps default",
			cmdline: "wrenn.hostname=-bad_name",
			want:    def,
			errs:    []string{"wrenn.hostname"},
		},
		{
			name:    "over-long hostname",
			cmdline: "wrenn.hostname=" + strings.Repeat("a", 65),
			want:    def,
			errs:    []string{"1 to 64"},
		},
		{
			name:    "empty hostname",
			cmdline: "wrenn.hostname=",
			want:    def,
			errs:    []string{"wrenn.hostname"},
		},
		{
			name:    "one bad dns entry keeps the good ones",
			cmdline: "wrenn.dns=1.1.1.1,nope,9.9.9.9",
			want:    with(func(c *Config) { c.DNS = addrs("1.1.1.1", "9.9.9.9") }),
			errs:    []string{`"nope"`},
		},
		{
			name:    "more than three dns servers",
			cmdline: "wrenn.dns=1.1.1.1,1.0.0.1,8.8.8.8,8.8.4.4",
			want:    with(func(c *Config) { c.DNS = addrs("1.1.1.1", "1.0.0.1", "8.8.8.8") }),
			errs:    []string{"more than 3"},
		},
		{
			name:    "empty dns list keeps default",
			cmdline: "wrenn.dns=",
			want:    def,
			errs:    []string{"no servers"},
		},
		{
			name:    "ip without prefix length",
			cmdline: "wrenn.ip=169.254.0.21",
			want:    def,
			errs:    []string{"prefix length"},
		},
		{
			name:    "gateway outside prefix falls back to both defaults",
			cmdline: "wrenn.ip=10.0.0.2/30 wrenn.gw=10.0.1.1",
			want:    def,
			errs:    []string{"outside"},
		},
		{
			name:    "gateway equal to address",
			cmdline: "wrenn.ip=10.0.0.2/30 wrenn.gw=10.0.0.2",
			want:    def,
			errs:    []string{"own address"},
		},
		{
			name:    "gateway alone within default prefix",
			cmdline: "wrenn.gw=169.254.0.21",
			want:    def,
			errs:    []string{"own address"},
		},
		{
			name:    "bad gateway",
			cmdline: "wrenn.gw=gateway",
			want:    def,
			errs:    []string{"not an IP address"},
		},
		{
			name:    "unknown wrenn parameter is reported",
			cmdline: "wrenn.bogus=1 other.param=2",
			want:    def,
			errs:    []string{"unknown parameter wrenn.bogus"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", tt.errs)
			}
			for _, s := range tt.errs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"spaces and newline", "  a=1   b \n", []string{"a=1", "b"}},
		{"quoted value", `a="x y" b=2`, []string{"a=x y", "b=2"}},
		{"quoted whole", `"a=x y"`, []string{"a=x y"}},
		{"empty quotes", `a="" b`, []string{"a=", "b"}},
		{"unterminated quote runs to end", `a="x y`, []string{"a=x y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitCmdline(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("splitCmdline(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			name: "resolv.conf",
			got:  ResolvConf([]netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2001:4860:4860::8888")}),
			want: "# Written by wrenn-init at boot from wrenn.dns.\nnameserver 8.8.8.8\nnameserver 2001:4860:4860::8888\n",
		},
		{
			name: "hosts",
			got:  Hosts("sbx"),
			want: "# Written by wrenn-init at boot.\n127.0.0.1\tlocalhost\n127.0.1.1\tsbx\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
		},
		{
			name: "chrony",
			got:  ChronyConf("/dev/ptp0"),
			want: "# Written by wrenn-init at boot.\nrefclock PHC /dev/ptp0 poll -2 dpoll -2 offset 0\nmakestep 1 -1\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if string(tt.got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", tt.got, tt.want)
			}
		})
	}
}
