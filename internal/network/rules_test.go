package network

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func mustLayout(t *testing.T, cfg PoolConfig) *layout {
	t.Helper()
	l, err := cfg.layout()
	if err != nil {
		t.Fatalf("layout: %v", err)
	}
	return l
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the generated rules (run with -update if intended)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// goldenTables are the rulesets the golden files pin.
func goldenTables(t *testing.T) []struct {
	name string
	tbl  table
} {
	l := mustLayout(t, PoolConfig{})
	s := &Slot{Index: 7, l: l}
	hostAddrs := []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32"), netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name string
		tbl  table
	}{
		{"host.golden", hostTable(l)},
		{"slot_internet.golden", slotTable(s, Policy{
			Internet: true,
			AllowOut: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("10.99.1.0/24"), netip.MustParsePrefix("8.8.8.8/32")},
			DenyOut:  []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24")},
		}, hostAddrs)},
		{"slot_offline.golden", slotTable(s, Policy{}, hostAddrs)},
	}
	return tests
}

func TestGoldenRules(t *testing.T) {
	for _, tt := range goldenTables(t) {
		t.Run(tt.name, func(t *testing.T) {
			golden(t, tt.name, tt.tbl.render())
		})
	}
}

func TestEgressPrecedence(t *testing.T) {
	l := mustLayout(t, PoolConfig{})
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	decide := func(pol Policy, dst string) verdictKind {
		return egressVerdict(egressRules(l, pol, []netip.Prefix{p("192.0.2.2/32")}), netip.MustParseAddr(dst))
	}
	tests := []struct {
		name string
		pol  Policy
		dst  string
		want verdictKind
	}{
		{"internet on", Policy{Internet: true}, "203.0.113.1", vAccept},
		{"internet off", Policy{}, "203.0.113.1", vReject},
		{"deny beats internet", Policy{Internet: true, DenyOut: []netip.Prefix{p("203.0.113.0/24")}}, "203.0.113.1", vReject},
		{"allow beats internet off", Policy{AllowOut: []netip.Prefix{p("203.0.113.1/32")}}, "203.0.113.1", vAccept},
		{"deny beats allow", Policy{AllowOut: []netip.Prefix{p("203.0.113.1/32")}, DenyOut: []netip.Prefix{p("203.0.113.0/24")}}, "203.0.113.1", vReject},
		{"private blocked with internet", Policy{Internet: true}, "192.168.1.1", vReject},
		{"cgnat blocked with internet", Policy{Internet: true}, "100.64.0.1", vReject},
		{"private allowed explicitly", Policy{AllowOut: []netip.Prefix{p("192.168.0.0/16")}}, "192.168.1.1", vAccept},
		{"other slots never", Policy{Internet: true, AllowOut: []netip.Prefix{p("10.0.0.0/8")}}, "10.11.0.9", vReject},
		{"veth range never", Policy{Internet: true, AllowOut: []netip.Prefix{p("10.0.0.0/8")}}, "10.12.0.9", vReject},
		{"metadata never", Policy{Internet: true, AllowOut: []netip.Prefix{p("169.254.169.254/32")}}, "169.254.169.254", vReject},
		{"host address never", Policy{Internet: true, AllowOut: []netip.Prefix{p("0.0.0.0/0")}}, "192.0.2.2", vReject},
		{"allow all opens private", Policy{AllowOut: []netip.Prefix{p("0.0.0.0/0")}}, "10.1.2.3", vAccept},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decide(tt.pol, tt.dst); got != tt.want {
				t.Errorf("verdict for %s = %d, want %d", tt.dst, got, tt.want)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		pol     Policy
		wantErr bool
	}{
		{"empty", Policy{}, false},
		{"ipv4", Policy{AllowOut: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, false},
		{"ipv6 allow", Policy{AllowOut: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}, true},
		{"invalid deny", Policy{DenyOut: []netip.Prefix{{}}}, true},
		{"mapped v4", Policy{DenyOut: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pol.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestCompact(t *testing.T) {
	p := netip.MustParsePrefix
	got := compact([]netip.Prefix{p("10.1.2.0/24"), p("10.0.0.0/8"), p("192.168.1.5/16"), p("10.2.0.0/16"), p("8.8.8.8/32"), p("8.8.8.8/32")})
	want := []netip.Prefix{p("8.8.8.8/32"), p("10.0.0.0/8"), p("192.168.0.0/16")}
	if len(got) != len(want) {
		t.Fatalf("compact = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("compact = %v, want %v", got, want)
		}
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     PoolConfig
		wantErr bool
	}{
		{"defaults", PoolConfig{}, false},
		{"test prefix", PoolConfig{Prefix: "wt1a2b-", Slots: 64}, false},
		{"prefix too long for index", PoolConfig{Prefix: "wrenn-sandbox-", Slots: 1024}, true},
		{"bad prefix char", PoolConfig{Prefix: "wr/enn"}, true},
		{"negative slots", PoolConfig{Slots: -1}, true},
		{"host cidr too small", PoolConfig{HostCIDR: netip.MustParsePrefix("10.11.0.0/24"), Slots: 1024}, true},
		{"veth cidr too small", PoolConfig{VethCIDR: netip.MustParsePrefix("10.12.0.0/22"), Slots: 1024}, true},
		{"veth cidr just fits", PoolConfig{VethCIDR: netip.MustParsePrefix("10.12.0.0/21"), Slots: 1023}, false},
		{"overlap", PoolConfig{HostCIDR: netip.MustParsePrefix("10.0.0.0/8")}, true},
		{"host bits", PoolConfig{HostCIDR: netip.MustParsePrefix("10.11.0.1/16")}, true},
		{"ipv6", PoolConfig{HostCIDR: netip.MustParsePrefix("fd00::/64")}, true},
		{"relative dir", PoolConfig{NetNSDir: "run/netns"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.layout()
			if (err != nil) != tt.wantErr {
				t.Fatalf("layout() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestSlotNames(t *testing.T) {
	l := mustLayout(t, PoolConfig{})
	tests := []struct {
		index                       int
		ns, veth, hostIP, vh, vnsIP string
	}{
		{1, "wrenn-1", "wrenn-1", "10.11.0.1", "10.12.0.2", "10.12.0.3"},
		{300, "wrenn-300", "wrenn-300", "10.11.1.44", "10.12.2.88", "10.12.2.89"},
		{1024, "wrenn-1024", "wrenn-1024", "10.11.4.0", "10.12.8.0", "10.12.8.1"},
	}
	for _, tt := range tests {
		s := &Slot{Index: tt.index, l: l}
		got := []string{s.NetNSName(), s.HostVeth(), s.HostIP().String(), s.VethHostAddr().String(), s.VethNSAddr().String()}
		want := []string{tt.ns, tt.veth, tt.hostIP, tt.vh, tt.vnsIP}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("slot %d: got %v, want %v", tt.index, got, want)
				break
			}
		}
		if s.NetNSPath() != "/run/netns/"+tt.ns {
			t.Errorf("slot %d: NetNSPath %s", tt.index, s.NetNSPath())
		}
		if i, ok := l.parseIndex(s.NetNSName()); !ok || i != tt.index {
			t.Errorf("parseIndex(%s) = %d, %v", s.NetNSName(), i, ok)
		}
	}
	for _, name := range []string{"wrenn-", "wrenn-0", "wrenn-01", "wrenn-1025", "wrenn-1x", "wrenn-x1", "eth0", "wrenn"} {
		if i, ok := l.parseIndex(name); ok {
			t.Errorf("parseIndex(%q) = %d, want not ours", name, i)
		}
	}
}
