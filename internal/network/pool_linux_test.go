//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// The root tests below build a private world so that nothing on the machine
// changes except entries under /run/netns with a random test prefix:
//
//	"<w>host" plays the host: the pool's HostNetNS, with 198.51.100.1/24 on
//	          up0, a default route to the "internet", and 192.168.77.1 on lo.
//	"<w>inet" plays the internet: 198.51.100.2/24 on up1 and, on lo, servers'
//	          addresses 203.0.113.1 (public), 10.99.0.1 (RFC 1918),
//	          100.64.0.1 (CGNAT) and 169.254.169.254 (metadata).
//	slots     "<w>-<i>" with emulated guests "<w>-<i>g" (EmulateGuest).
//
// Blocked egress is rejected with ICMP admin-prohibited, which the guest's
// connect sees as EHOSTUNREACH; a missing listener would be ECONNREFUSED and
// a missing route a timeout, so the tests can tell our rule apart.

const (
	netnsDir   = DefaultNetNSDir
	dialTime   = 3 * time.Second
	envdPort   = "49983"
	hostUpAddr = "198.51.100.1"
	inetUpAddr = "198.51.100.2"
)

type world struct {
	t      *testing.T
	name   string // prefix of every namespace this test makes
	hostNS string
	inetNS string
	cfg    PoolConfig
}

// newWorld skips unless we are root and can make namespaces and nftables.
func newWorld(t *testing.T) *world {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and nftables tables")
	}
	w := &world{t: t, name: fmt.Sprintf("wt%04x", rand.IntN(0x10000))}
	w.hostNS = filepath.Join(netnsDir, w.name+"host")
	w.inetNS = filepath.Join(netnsDir, w.name+"inet")
	t.Cleanup(w.sweep)
	if err := createNamedNetNS(netnsDir, w.name+"host"); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	if err := w.probeNftables(); err != nil {
		t.Skipf("cannot program nftables in a namespace here: %v", err)
	}
	if err := createNamedNetNS(netnsDir, w.name+"inet"); err != nil {
		t.Fatal(err)
	}
	inet, err := openNetNS(w.inetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer inet.Close()
	w.must(withHandle(w.hostNS, func(h *netlink.Handle) error {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1", PeerNamespace: netlink.NsFd(inet)}); err != nil {
			return err
		}
		if err := addrUp(h, "up0", &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(hostUpAddr + "/24"))}); err != nil {
			return err
		}
		if err := addrUp(h, "lo", &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.168.77.1/32"))}); err != nil {
			return err
		}
		return defaultRoute(h, netip.MustParseAddr(inetUpAddr))
	}))
	w.must(withHandle(w.inetNS, func(h *netlink.Handle) error {
		if err := addrUp(h, "up1", &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(inetUpAddr + "/24"))}); err != nil {
			return err
		}
		if err := addrUp(h, "lo", nil); err != nil {
			return err
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, a := range []string{"203.0.113.1/32", "10.99.0.1/32", "100.64.0.1/32", "169.254.169.254/32"} {
			if err := h.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a))}); err != nil {
				return err
			}
		}
		// So that the "internet" can try to open connections to slots.
		return h.RouteReplace(&netlink.Route{Dst: ipNet(DefaultHostCIDR), Gw: net.ParseIP(hostUpAddr)})
	}))
	// No operator ceiling: most tests here exercise the tenant's rules,
	// private ranges included. TestEgressCeilingEnforced sets one.
	w.cfg = PoolConfig{Prefix: w.name + "-", Slots: 64, HostNetNS: w.hostNS, EmulateGuest: true, EgressDeny: []netip.Prefix{}}
	return w
}

func (w *world) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) probeNftables() error {
	ns, err := openNetNS(w.hostNS)
	if err != nil {
		return err
	}
	defer ns.Close()
	return replaceTable(int(ns), table{name: "probe", chains: []chain{{name: "c"}}})
}

// sweep deletes every namespace whose name starts with the world's prefix;
// the veths and tables inside go with them.
func (w *world) sweep() {
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), w.name) {
			if err := deleteNamedNetNS(netnsDir, e.Name()); err != nil {
				w.t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// ours lists the slot namespaces and host links the pool has made.
func (w *world) ours() (netnses, links []string) {
	w.t.Helper()
	entries, err := os.ReadDir(netnsDir)
	w.must(err)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), w.cfg.Prefix) {
			netnses = append(netnses, e.Name())
		}
	}
	w.must(withHandle(w.hostNS, func(h *netlink.Handle) error {
		ls, err := h.LinkList()
		for _, l := range ls {
			if strings.HasPrefix(l.Attrs().Name, w.cfg.Prefix) {
				links = append(links, l.Attrs().Name)
			}
		}
		return err
	}))
	sort.Strings(netnses)
	sort.Strings(links)
	return netnses, links
}

// serve answers every connection to addr inside nsPath with banner.
func (w *world) serve(nsPath, addr, banner string) {
	w.t.Helper()
	var ln net.Listener
	w.must(inNetNS(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(banner))
			c.Close()
		}
	}()
	w.t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// serveEcho echoes every connection to addr inside nsPath.
func (w *world) serveEcho(nsPath, addr string) {
	w.t.Helper()
	var ln net.Listener
	w.must(inNetNS(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(c, c) }()
		}
	}()
	w.t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// dialConn opens a connection from inside nsPath, closed at cleanup.
func (w *world) dialConn(nsPath, addr string) net.Conn {
	w.t.Helper()
	var c net.Conn
	w.must(inNetNS(nsPath, func() (err error) {
		c, err = (&net.Dialer{Timeout: dialTime}).Dial("tcp4", addr)
		return err
	}))
	w.t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg and expects it back within a second.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, got %q", msg, buf)
	}
	return nil
}

// dial connects from inside nsPath and returns what the server said.
func dial(nsPath, addr string, timeout time.Duration) (string, error) {
	var banner string
	err := inNetNS(nsPath, func() error {
		c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		banner = string(b)
		return err
	})
	return banner, err
}

// expect dials and checks the outcome: a banner, or "" for rejected by policy.
func (w *world) expect(from, addr, want string) {
	w.t.Helper()
	got, err := dial(from, addr, dialTime)
	switch {
	case want == "" && !errors.Is(err, syscall.EHOSTUNREACH):
		w.t.Errorf("dial %s from %s: got %q, %v; want rejected (EHOSTUNREACH)", addr, filepath.Base(from), got, err)
	case want != "" && (err != nil || got != want):
		w.t.Errorf("dial %s from %s: got %q, %v; want %q", addr, filepath.Base(from), got, err, want)
	}
}

// TestRulesCompile checks that every rule of the golden rulesets compiles
// to kernel expressions (no root needed).
func TestRulesCompile(t *testing.T) {
	for _, tt := range goldenTables(t) {
		for _, c := range tt.tbl.chains {
			for _, r := range c.rules {
				if _, err := r.compile(); err != nil {
					t.Errorf("%s chain %s rule %q: %v", tt.name, c.name, r.render(), err)
				}
			}
		}
	}
}

// TestEgressCeilingEnforced: under the default operator ceiling a slot whose
// policy allows 10.0.0.0/8 (as one recorded before the ceiling existed
// would) still cannot reach a server in 10/8, while the same server answers
// the host, and a tenant's attempt to set such a policy is refused as
// InvalidArgument. Before the ceiling, "allow beats private" opened it (see
// TestSlotNetworking's "rfc1918 allowed explicitly", which runs without a
// ceiling).
func TestEgressCeilingEnforced(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	cfg := w.cfg
	cfg.EgressDeny = nil // the default ceiling
	pool, err := NewPool(cfg, slog.New(slog.DiscardHandler))
	w.must(err)
	w.must(pool.Reclaim(ctx))
	p := netip.MustParsePrefix
	open := Policy{Internet: true, AllowOut: []netip.Prefix{p("10.0.0.0/8"), p("100.64.0.0/10")}}

	s, err := pool.Acquire(ctx)
	w.must(err)
	// Setup enforces the ceiling without refusing (a recorded policy must
	// still resume); the rules must hold on their own.
	w.must(pool.Setup(ctx, s, open))
	w.serve(w.inetNS, "10.99.0.1:80", "private")
	w.serve(w.inetNS, "100.64.0.1:80", "cgnat")
	w.serve(w.inetNS, "203.0.113.1:80", "internet")

	w.expect(w.hostNS, "10.99.0.1:80", "private") // the listener is there
	w.expect(s.GuestNetNSPath(), "10.99.0.1:80", "")
	w.expect(s.GuestNetNSPath(), "100.64.0.1:80", "")
	w.expect(s.GuestNetNSPath(), "203.0.113.1:80", "internet")

	for _, pol := range []Policy{open, {AllowOut: []netip.Prefix{p("10.99.0.1/32")}}, {AllowOut: []netip.Prefix{p("0.0.0.0/0")}}} {
		err := s.SetPolicy(ctx, pol)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("SetPolicy(%v) = %v, want InvalidArgument naming the overlap", pol.AllowOut, err)
		}
		if err := pool.CheckPolicy(pol); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CheckPolicy(%v) = %v, want InvalidArgument", pol.AllowOut, err)
		}
	}
	// The refused update left the running rules alone.
	w.expect(s.GuestNetNSPath(), "10.99.0.1:80", "")
	w.expect(s.GuestNetNSPath(), "203.0.113.1:80", "internet")
	w.must(pool.Release(ctx, s))
}

func TestSlotNetworking(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	pool, err := NewPool(w.cfg, slog.New(slog.DiscardHandler))
	w.must(err)
	w.must(pool.Reclaim(ctx))

	var slots []*Slot
	for range 2 {
		s, err := pool.Acquire(ctx)
		w.must(err)
		w.must(pool.Setup(ctx, s, Policy{Internet: true}))
		slots = append(slots, s)
	}
	a, b := slots[0], slots[1]
	w.serve(a.GuestNetNSPath(), "0.0.0.0:"+envdPort, "guest-a")
	w.serve(b.GuestNetNSPath(), "0.0.0.0:"+envdPort, "guest-b")
	w.serve(w.inetNS, "203.0.113.1:80", "internet")
	w.serve(w.inetNS, "10.99.0.1:80", "private")
	w.serve(w.inetNS, "100.64.0.1:80", "cgnat")
	w.serve(w.inetNS, "169.254.169.254:80", "metadata")
	w.serve(w.hostNS, hostUpAddr+":80", "host")
	w.serve(w.hostNS, "192.168.77.1:80", "host-private")
	hostPort := func(s *Slot) string { return net.JoinHostPort(s.HostIP().String(), envdPort) }

	t.Run("kernel holds the slot ruleset as modelled", func(t *testing.T) {
		ns, err := openNetNS(a.NetNSPath())
		w.must(err)
		defer ns.Close()
		counts, ok, err := tableRuleCount(int(ns), DefaultTable)
		w.must(err)
		hostAddrs, err := hostAddresses(w.hostNS)
		w.must(err)
		want := map[string]int{}
		for _, c := range slotTable(a, Policy{Internet: true}, hostAddrs).chains {
			want[c.name] = len(c.rules)
		}
		if !ok || fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("slot table rules per chain = %v (present %v), want %v", counts, ok, want)
		}
	})

	t.Run("host reaches each guest at its slot address", func(t *testing.T) {
		w.expect(w.hostNS, hostPort(a), "guest-a")
		w.expect(w.hostNS, hostPort(b), "guest-b")
	})

	t.Run("blocked targets are reachable without the policy", func(t *testing.T) {
		// Proves the rejections below come from our rules, not from a
		// missing route or listener.
		w.expect(w.hostNS, "169.254.169.254:80", "metadata")
		w.expect(w.hostNS, "10.99.0.1:80", "private")
		w.expect(w.hostNS, "100.64.0.1:80", "cgnat")
	})

	p := netip.MustParsePrefix
	tests := []struct {
		name string
		pol  Policy
		dst  string
		want string // "" = rejected
	}{
		{"internet on", Policy{Internet: true}, "203.0.113.1:80", "internet"},
		{"internet off", Policy{}, "203.0.113.1:80", ""},
		{"deny beats internet", Policy{Internet: true, DenyOut: []netip.Prefix{p("203.0.113.0/24")}}, "203.0.113.1:80", ""},
		{"deny beats allow", Policy{AllowOut: []netip.Prefix{p("203.0.113.1/32")}, DenyOut: []netip.Prefix{p("203.0.113.0/24")}}, "203.0.113.1:80", ""},
		{"allow beats internet off", Policy{AllowOut: []netip.Prefix{p("203.0.113.1/32")}}, "203.0.113.1:80", "internet"},
		{"rfc1918 blocked despite internet", Policy{Internet: true}, "10.99.0.1:80", ""},
		{"cgnat blocked despite internet", Policy{Internet: true}, "100.64.0.1:80", ""},
		{"rfc1918 allowed explicitly", Policy{AllowOut: []netip.Prefix{p("10.99.0.0/16")}}, "10.99.0.1:80", "private"},
		{"cgnat allowed explicitly", Policy{AllowOut: []netip.Prefix{p("100.64.0.0/10")}}, "100.64.0.1:80", "cgnat"},
		{"metadata never", Policy{Internet: true, AllowOut: []netip.Prefix{p("169.254.0.0/16")}}, "169.254.169.254:80", ""},
		{"other slot never", Policy{Internet: true, AllowOut: []netip.Prefix{p("10.0.0.0/8")}}, hostPort(b), ""},
		{"host address never", Policy{Internet: true, AllowOut: []netip.Prefix{p("0.0.0.0/0")}}, hostUpAddr + ":80", ""},
		{"private host address never", Policy{Internet: true, AllowOut: []netip.Prefix{p("192.168.0.0/16")}}, "192.168.77.1:80", ""},
		{"internet back on", Policy{Internet: true}, "203.0.113.1:80", "internet"},
	}
	// Each case changes the policy of the running slot, so together they
	// also show SetPolicy taking effect at runtime, in both directions.
	for _, tt := range tests {
		t.Run("egress "+tt.name, func(t *testing.T) {
			if err := a.SetPolicy(ctx, tt.pol); err != nil {
				t.Fatalf("SetPolicy: %v", err)
			}
			w.expect(a.GuestNetNSPath(), tt.dst, tt.want)
		})
	}

	t.Run("other slot unaffected by a's policy", func(t *testing.T) {
		w.must(a.SetPolicy(ctx, Policy{}))
		w.expect(b.GuestNetNSPath(), "203.0.113.1:80", "internet")
		w.expect(a.GuestNetNSPath(), "203.0.113.1:80", "")
	})

	t.Run("only the host opens connections into a guest", func(t *testing.T) {
		// The internet routes 10.11/16 to our host; the host must drop it.
		_, err := dial(w.inetNS, hostPort(a), 500*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dial from the internet into slot a: %v; want a timeout (dropped)", err)
		}
		// A guest cannot open one to another guest either (host forward
		// and slot egress both refuse).
		w.expect(a.GuestNetNSPath(), hostPort(b), "")
	})

	t.Run("new policy cuts refused established connections only", func(t *testing.T) {
		w.serveEcho(w.inetNS, "203.0.113.1:7")
		w.serveEcho(w.inetNS, "10.99.0.1:7")
		w.must(a.SetPolicy(ctx, Policy{Internet: true, AllowOut: []netip.Prefix{p("10.99.0.0/16")}}))
		refused := w.dialConn(a.GuestNetNSPath(), "203.0.113.1:7")
		kept := w.dialConn(a.GuestNetNSPath(), "10.99.0.1:7")
		for _, c := range []net.Conn{refused, kept} {
			if err := echo(c, "before"); err != nil {
				t.Fatalf("echo before the change: %v", err)
			}
		}
		w.must(a.SetPolicy(ctx, Policy{Internet: true, AllowOut: []netip.Prefix{p("10.99.0.0/16")}, DenyOut: []netip.Prefix{p("203.0.113.1/32")}}))
		if err := echo(refused, "after"); err == nil {
			t.Error("connection to a now-denied destination still works")
		}
		if err := echo(kept, "after"); err != nil {
			t.Errorf("connection to a still-allowed destination broke: %v", err)
		}
	})

	t.Run("invalid policy", func(t *testing.T) {
		if err := a.SetPolicy(ctx, Policy{AllowOut: []netip.Prefix{p("2001:db8::/32")}}); err == nil {
			t.Error("SetPolicy with an IPv6 prefix succeeded")
		}
	})

	t.Run("release removes everything of the slot", func(t *testing.T) {
		w.must(pool.Release(ctx, b))
		w.must(pool.Release(ctx, b)) // second release is a no-op
		netnses, links := w.ours()
		if want := []string{a.NetNSName(), a.NetNSName() + "g"}; !slices.Equal(netnses, want) {
			t.Errorf("namespaces after release: %v, want %v", netnses, want)
		}
		if want := []string{a.HostVeth()}; !slices.Equal(links, want) {
			t.Errorf("host links after release: %v, want %v", links, want)
		}
		w.must(withHandle(w.hostNS, func(h *netlink.Handle) error {
			routes, err := h.RouteGet(net.IP(b.HostIP().AsSlice()))
			if err == nil && len(routes) > 0 && routes[0].Gw.Equal(net.IP(b.VethNSAddr().AsSlice())) {
				t.Errorf("route to %s via the released slot still present", b.HostIP())
			}
			return nil
		}))
		// The host table has no per-slot rules: same shape as installed.
		ns, err := openNetNS(w.hostNS)
		w.must(err)
		defer ns.Close()
		counts, ok, err := tableRuleCount(int(ns), w.cfg.tableOrDefault())
		w.must(err)
		want := map[string]int{}
		for _, c := range hostTable(pool.l).chains {
			want[c.name] = len(c.rules)
		}
		if !ok || fmt.Sprint(counts) != fmt.Sprint(want) {
			t.Errorf("host table rules per chain = %v (present %v), want %v", counts, ok, want)
		}
		w.must(pool.Release(ctx, a))
		if netnses, links := w.ours(); len(netnses)+len(links) != 0 {
			t.Errorf("left after releasing all: %v %v", netnses, links)
		}
	})
}

func (c PoolConfig) tableOrDefault() string {
	if c.Table == "" {
		return DefaultTable
	}
	return c.Table
}

func TestReclaim(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	before, err := NewPool(w.cfg, nil)
	w.must(err)

	// Three sandboxes, set up concurrently, then the agent "crashes".
	slots := make([]*Slot, 3)
	var g errgroup.Group
	for i := range slots {
		s, err := before.Acquire(ctx)
		w.must(err)
		slots[i] = s
		g.Go(func() error { return before.Setup(ctx, s, Policy{Internet: true}) })
	}
	w.must(g.Wait())
	keep := slots[1]
	w.serve(keep.GuestNetNSPath(), "0.0.0.0:"+envdPort, "kept")
	// Debris of a crash mid-setup: a mount point that never got a netns,
	// and a file that is not ours.
	for _, name := range []string{w.cfg.Prefix + "9", w.cfg.Prefix + "x"} {
		w.must(os.WriteFile(filepath.Join(netnsDir, name), nil, 0o444))
	}

	after, err := NewPool(w.cfg, nil)
	w.must(err)
	adopted, err := after.Adopt(keep.Index)
	w.must(err)
	w.must(after.Reclaim(ctx))

	netnses, links := w.ours()
	if want := []string{keep.NetNSName(), keep.NetNSName() + "g", w.cfg.Prefix + "x"}; !slices.Equal(netnses, want) {
		t.Errorf("namespaces after reclaim: %v, want %v", netnses, want)
	}
	if want := []string{keep.HostVeth()}; !slices.Equal(links, want) {
		t.Errorf("host links after reclaim: %v, want %v", links, want)
	}
	w.expect(w.hostNS, net.JoinHostPort(keep.HostIP().String(), envdPort), "kept")

	// The adopted slot stays fully manageable.
	w.serve(w.inetNS, "203.0.113.1:80", "internet")
	w.expect(adopted[0].GuestNetNSPath(), "203.0.113.1:80", "internet")
	w.must(adopted[0].SetPolicy(ctx, Policy{}))
	w.expect(adopted[0].GuestNetNSPath(), "203.0.113.1:80", "")
	if s, err := after.Acquire(ctx); err != nil || s.Index == keep.Index {
		t.Errorf("Acquire after adopt = %v, %v; must not hand out adopted slot %d", s, err, keep.Index)
	}
	w.must(after.Release(ctx, adopted[0]))
	if netnses, links := w.ours(); len(links) != 0 || !slices.Equal(netnses, []string{w.cfg.Prefix + "x"}) {
		t.Errorf("left after release: %v %v", netnses, links)
	}
}

// TestSetupReleaseTiming builds real slots (TAP, no guest emulation) and
// reports median setup and release times.
func TestSetupReleaseTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing run skipped in -short mode")
	}
	w := newWorld(t)
	ctx := context.Background()
	cfg := w.cfg
	cfg.EmulateGuest = false
	pool, err := NewPool(cfg, nil)
	w.must(err)
	w.must(pool.Reclaim(ctx))
	const runs = 20
	var setup, release []time.Duration
	for i := range runs {
		s, err := pool.Acquire(ctx)
		w.must(err)
		start := time.Now()
		w.must(pool.Setup(ctx, s, Policy{Internet: true}))
		setup = append(setup, time.Since(start))
		if i == 0 {
			w.must(withHandle(s.NetNSPath(), func(h *netlink.Handle) error {
				l, err := h.LinkByName(TapName)
				if err != nil {
					return err
				}
				if l.Type() != "tuntap" || l.Attrs().Flags&net.FlagUp == 0 {
					t.Errorf("%s is %s, flags %v; want an up tuntap", TapName, l.Type(), l.Attrs().Flags)
				}
				return nil
			}))
		}
		start = time.Now()
		w.must(pool.Release(ctx, s))
		release = append(release, time.Since(start))
	}
	if netnses, links := w.ours(); len(netnses)+len(links) != 0 {
		t.Errorf("left after %d cycles: %v %v", runs, netnses, links)
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	t.Logf("over %d runs: setup median %v (min %v, max %v); release median %v (min %v, max %v)",
		runs, median(setup), setup[0], setup[len(setup)-1], median(release), release[0], release[len(release)-1])
}

func TestSetupFailureCleansUp(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	pool, err := NewPool(w.cfg, nil)
	w.must(err)
	w.must(pool.Reclaim(ctx))
	slots, err := pool.Adopt(5)
	w.must(err)
	s := slots[0]
	// A host link already holding the slot's veth name makes the veth step fail
	// after the netns and guest link exist.
	w.must(withHandle(w.hostNS, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.HostVeth()}, PeerName: "squatter"})
	}))
	err = pool.Setup(ctx, s, Policy{Internet: true})
	if err == nil || !strings.Contains(err.Error(), "veth") {
		t.Fatalf("Setup with the veth name taken = %v, want a veth error", err)
	}
	if netnses, links := w.ours(); len(netnses)+len(links) != 0 {
		t.Errorf("left after failed setup: %v %v", netnses, links)
	}
	// The slot stays acquired and a second Setup succeeds.
	w.must(pool.Setup(ctx, s, Policy{Internet: true}))
	w.must(pool.Release(ctx, s))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	s2, err := pool.Acquire(ctx)
	w.must(err)
	if err := pool.Setup(cancelled, s2, Policy{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Setup with a cancelled context = %v, want context.Canceled", err)
	}
	if netnses, links := w.ours(); len(netnses)+len(links) != 0 {
		t.Errorf("left after cancelled setup: %v %v", netnses, links)
	}
	if err := pool.Setup(ctx, s2, Policy{DenyOut: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}); err == nil {
		t.Error("Setup with an IPv6 deny prefix succeeded")
	}
}
