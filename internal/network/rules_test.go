package network

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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
	// An operator who opened every range (empty ceiling): the tenant's
	// lists decide everything but the always-blocked ranges.
	l := mustLayout(t, PoolConfig{EgressDeny: []netip.Prefix{}})
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

// TestEgressCeiling: with the default ceiling, an allow rule never opens a
// range the operator denies, even if the policy check were bypassed (the
// rules alone must hold), and the public Internet is unaffected.
func TestEgressCeiling(t *testing.T) {
	p := netip.MustParsePrefix
	deflt := mustLayout(t, PoolConfig{})
	custom := mustLayout(t, PoolConfig{EgressDeny: []netip.Prefix{p("203.0.113.0/24"), p("fd00::/8")}})
	tests := []struct {
		name string
		l    *layout
		pol  Policy
		dst  string
		want verdictKind
	}{
		{"rfc1918 allow cannot open 10/8", deflt, Policy{AllowOut: []netip.Prefix{p("10.0.0.0/8")}}, "10.99.0.1", vReject},
		{"rfc1918 allow cannot open 192.168/16", deflt, Policy{Internet: true, AllowOut: []netip.Prefix{p("192.168.0.0/16")}}, "192.168.1.1", vReject},
		{"cgnat allow cannot open", deflt, Policy{AllowOut: []netip.Prefix{p("100.64.0.0/10")}}, "100.64.0.1", vReject},
		{"allow all cannot open 172.16/12", deflt, Policy{AllowOut: []netip.Prefix{p("0.0.0.0/0")}}, "172.16.5.5", vReject},
		{"broadcast", deflt, Policy{AllowOut: []netip.Prefix{p("0.0.0.0/0")}}, "255.255.255.255", vReject},
		{"public allow still works", deflt, Policy{AllowOut: []netip.Prefix{p("8.8.8.8/32")}}, "8.8.8.8", vAccept},
		{"internet still works", deflt, Policy{Internet: true}, "1.1.1.1", vAccept},
		{"custom ceiling beats allow", custom, Policy{AllowOut: []netip.Prefix{p("203.0.113.0/24")}}, "203.0.113.9", vReject},
		{"custom ceiling beats internet", custom, Policy{Internet: true}, "203.0.113.9", vReject},
		{"custom ceiling lets private be allowed", custom, Policy{AllowOut: []netip.Prefix{p("10.99.0.0/16")}}, "10.99.0.1", vAccept},
		{"custom ceiling keeps private default-blocked", custom, Policy{Internet: true}, "10.99.0.1", vReject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := egressVerdict(egressRules(tt.l, tt.pol, nil), netip.MustParseAddr(tt.dst))
			if got != tt.want {
				t.Errorf("verdict for %s = %d, want %d", tt.dst, got, tt.want)
			}
		})
	}
}

// TestCheckCeiling: an allow_out overlapping the ceiling, in either
// direction (wider or narrower than a denied range), is refused as
// InvalidArgument naming both prefixes; disjoint ones pass.
func TestCheckCeiling(t *testing.T) {
	p := netip.MustParsePrefix
	ceiling := DefaultEgressDeny
	tests := []struct {
		name    string
		allow   []string
		wantErr string // substring; "" = accepted
	}{
		{"none", nil, ""},
		{"public", []string{"8.8.8.8/32", "203.0.113.0/24"}, ""},
		{"exact private", []string{"10.0.0.0/8"}, "allow_out 10.0.0.0/8 overlaps 10.0.0.0/8"},
		{"inside private", []string{"8.8.8.8/32", "192.168.1.0/24"}, "allow_out 192.168.1.0/24 overlaps 192.168.0.0/16"},
		{"wider than private", []string{"172.0.0.0/8"}, "allow_out 172.0.0.0/8 overlaps 172.16.0.0/12"},
		{"everything", []string{"0.0.0.0/0"}, "allow_out 0.0.0.0/0 overlaps 0.0.0.0/8"},
		{"cgnat host", []string{"100.100.100.100/32"}, "overlaps 100.64.0.0/10"},
		{"metadata", []string{"169.254.169.254/32"}, "overlaps 169.254.0.0/16"},
		{"loopback", []string{"127.0.0.1/32"}, "overlaps 127.0.0.0/8"},
		{"multicast", []string{"239.1.1.1/32"}, "overlaps 224.0.0.0/4"},
		{"broadcast", []string{"255.255.255.255/32"}, "overlaps 240.0.0.0/4"},
		{"just below 10/8", []string{"9.255.255.0/24"}, ""},
		{"just above 172.16/12", []string{"172.32.0.0/11"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pol Policy
			for _, a := range tt.allow {
				pol.AllowOut = append(pol.AllowOut, p(a))
			}
			err := checkCeiling(pol, ceiling)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkCeiling(%v) = %v, want accepted", tt.allow, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkCeiling(%v) = %v, want an error containing %q", tt.allow, err, tt.wantErr)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
		})
	}
	// Deny rules may name anything: they only narrow further.
	if err := checkCeiling(Policy{DenyOut: []netip.Prefix{p("10.0.0.0/8")}}, ceiling); err != nil {
		t.Errorf("deny_out inside the ceiling refused: %v", err)
	}
	// An empty ceiling refuses nothing.
	if err := checkCeiling(Policy{AllowOut: []netip.Prefix{p("10.0.0.0/8")}}, []netip.Prefix{}); err != nil {
		t.Errorf("empty ceiling refused an allow: %v", err)
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
		{"egress deny host bits", PoolConfig{EgressDeny: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}}, true},
		{"egress deny empty", PoolConfig{EgressDeny: []netip.Prefix{}}, false},
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
