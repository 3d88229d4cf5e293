package portfwd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var fwdAddr = netip.MustParseAddr("127.0.0.2")

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestParseProcNet(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("fixtures are from a little-endian kernel")
	}
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 84 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 85 1 0 100 0 0 10 0
   2: 150000A9:C2A6 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 86 1 0 100 0 0 10 0
   3: 020000A9:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 87 1 0 100 0 0 10 0
`
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000000000000:0017 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000
`
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "tcp", in: tcp, want: []string{"127.0.0.1:8080", "0.0.0.0:22", "169.0.0.2:80"}},
		{name: "tcp6", in: tcp6, want: []string{"[::1]:8081", "[::]:23", "127.0.0.1:8082"}},
		{name: "header only", in: "  sl  local_address rem_address   st\n", want: nil},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNet([]byte(tt.in))
			if err != nil {
				t.Fatalf("parseProcNet: %v", err)
			}
			var s []string
			for _, ap := range got {
				s = append(s, ap.String())
			}
			if !slices.Equal(s, tt.want) {
				t.Errorf("parseProcNet = %v, want %v", s, tt.want)
			}
		})
	}
}

func TestParseProcNetBadInput(t *testing.T) {
	tests := []struct{ name, line string }{
		{name: "no colon", line: "0: 0100007F1F90 00000000:0000 0A"},
		{name: "bad hex address", line: "0: 0100007G:1F90 00000000:0000 0A"},
		{name: "odd address length", line: "0: 0100007:1F90 00000000:0000 0A"},
		{name: "bad port", line: "0: 0100007F:XYZ 00000000:0000 0A"},
		{name: "port out of range", line: "0: 0100007F:1FFFF 00000000:0000 0A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parseProcNet([]byte("header\n" + tt.line + "\n")); err == nil {
				t.Errorf("parseProcNet = %v, want error", got)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	aps := func(ss ...string) []netip.AddrPort {
		var out []netip.AddrPort
		for _, s := range ss {
			out = append(out, netip.MustParseAddrPort(s))
		}
		return out
	}
	tests := []struct {
		name  string
		socks []netip.AddrPort
		ours  []uint16 // ports already forwarded
		want  map[uint16]string
	}{
		{name: "loopback v4", socks: aps("127.0.0.1:80"), want: map[uint16]string{80: "127.0.0.1:80"}},
		{name: "loopback v6", socks: aps("[::1]:80"), want: map[uint16]string{80: "[::1]:80"}},
		{name: "prefers 127.0.0.1", socks: aps("127.0.0.53:80", "[::1]:80", "127.0.0.1:80"), want: map[uint16]string{80: "127.0.0.1:80"}},
		{name: "other loopback address", socks: aps("127.0.0.53:53"), want: map[uint16]string{53: "127.0.0.53:53"}},
		{name: "wildcard v4 already reachable", socks: aps("127.0.0.1:80", "0.0.0.0:80"), want: map[uint16]string{}},
		{name: "wildcard v6 already reachable", socks: aps("[::]:80", "127.0.0.1:80"), want: map[uint16]string{}},
		{name: "excluded port", socks: aps("127.0.0.1:49983"), want: map[uint16]string{}},
		{name: "non-loopback only", socks: aps("10.0.0.1:80"), want: map[uint16]string{}},
		{name: "forward address bound by someone else", socks: aps("127.0.0.1:80", "127.0.0.2:80"), want: map[uint16]string{}},
		{name: "own listener is not a reason to stop", socks: aps("127.0.0.1:80", "127.0.0.2:80"), ours: []uint16{80}, want: map[uint16]string{80: "127.0.0.1:80"}},
		{name: "own listener alone is never forwarded", socks: aps("127.0.0.2:80"), ours: []uint16{80}, want: map[uint16]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(Config{Addrs: []netip.Addr{fwdAddr}, Exclude: []uint16{49983}}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.ours {
				f.forwards[p] = &forward{}
			}
			got := map[uint16]string{}
			for p, ap := range f.plan(tt.socks) {
				got[p] = ap.String()
			}
			if len(got) != len(tt.want) {
				t.Fatalf("plan = %v, want %v", got, tt.want)
			}
			for p, w := range tt.want {
				if got[p] != w {
					t.Errorf("plan = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestNewRejectsBadAddrs(t *testing.T) {
	tests := []struct {
		name  string
		addrs []netip.Addr
	}{
		{name: "none"},
		{name: "wildcard v4", addrs: []netip.Addr{netip.IPv4Unspecified()}},
		{name: "wildcard v6", addrs: []netip.Addr{netip.IPv6Unspecified()}},
		{name: "zero", addrs: []netip.Addr{{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(Config{Addrs: tt.addrs}, testLogger(t)); err == nil {
				t.Error("New succeeded, want error")
			}
		})
	}
}

// echoServer accepts connections on ln and, for each, reads until EOF and
// then writes back what it read, so a client has to half-close to get its
// reply.
func echoServer(t *testing.T, ln net.Listener) {
	t.Helper()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(b)
			}()
		}
	}()
}

// roundTrip sends msg to addr, half-closes, and returns the reply.
func roundTrip(addr string, msg []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func startForwarder(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	f, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return f
}

// TestForwardLifecycle runs the real forwarder against this machine's
// socket table: a loopback server becomes reachable on the forward address,
// data round-trips with a half-close, and the forward goes away with it.
func TestForwardLifecycle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	fwd := netip.AddrPortFrom(fwdAddr, port).String()

	f := startForwarder(t, Config{Addrs: []netip.Addr{fwdAddr}, Interval: 20 * time.Millisecond})
	waitFor(t, "forward to appear", func() bool { return reachable(fwd) })

	msg := bytes.Repeat([]byte("wrenn "), 200_000) // larger than socket buffers
	got, err := roundTrip(fwd, msg)
	if err != nil {
		t.Fatalf("round trip through forward: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("round trip returned %d bytes, want %d", len(got), len(msg))
	}
	if !slices.Contains(f.Ports(), port) {
		t.Errorf("Ports() = %v, missing %d", f.Ports(), port)
	}

	ln.Close()
	waitFor(t, "forward to disappear", func() bool { return !reachable(fwd) })
	waitFor(t, "Ports to drop the port", func() bool { return !slices.Contains(f.Ports(), port) })
}

// TestForwardIPv6Loopback forwards a server bound only on ::1.
func TestForwardIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	echoServer(t, ln)
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	fwd := netip.AddrPortFrom(fwdAddr, port).String()

	startForwarder(t, Config{Addrs: []netip.Addr{fwdAddr}, Interval: 20 * time.Millisecond})
	waitFor(t, "forward to appear", func() bool { return reachable(fwd) })
	got, err := roundTrip(fwd, []byte("hello v6"))
	if err != nil || string(got) != "hello v6" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
}

// TestSyncSkips drives single scans by hand to check the ports that must
// not be forwarded, and that a forward's own listener does not displace it.
func TestSyncSkips(t *testing.T) {
	ctx := t.Context()
	listen := func(addr string) (net.Listener, uint16) {
		t.Helper()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
	}
	_, excluded := listen("127.0.0.1:0")
	_, wildcard := listen("0.0.0.0:0")
	_, plain := listen("127.0.0.1:0")
	_, taken := listen("127.0.0.1:0")
	listen(netip.AddrPortFrom(fwdAddr, taken).String())

	f, err := New(Config{Addrs: []netip.Addr{fwdAddr}, Exclude: []uint16{excluded}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.shutdown)

	f.sync(ctx)
	first := f.forwards[plain]
	if first == nil {
		t.Fatalf("port %d not forwarded; forwarded: %v", plain, f.Ports())
	}
	f.sync(ctx) // now sees its own listener on 127.0.0.2:plain
	if f.forwards[plain] != first {
		t.Errorf("second scan replaced the forward of port %d", plain)
	}
	if got := first.target.String(); got != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), plain).String() {
		t.Errorf("target = %s", got)
	}
	ports := f.Ports()
	for _, p := range []uint16{excluded, wildcard, taken} {
		if slices.Contains(ports, p) {
			t.Errorf("port %d forwarded, want skipped (forwarded: %v)", p, ports)
		}
	}
}

// TestShutdownClosesConnections checks that cancelling Run closes proxied
// connections still open, so envd's shutdown never waits on a client.
func TestShutdownClosesConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoServer(t, ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	fwd := netip.AddrPortFrom(fwdAddr, port).String()

	f, err := New(Config{Addrs: []netip.Addr{fwdAddr}, Interval: 20 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "forward to appear", func() bool { return reachable(fwd) })

	c, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("pending")); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("read on a proxied connection succeeded after shutdown")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("proxied connection still open after shutdown")
	}
	if reachable(fwd) {
		t.Error("forward still listening after shutdown")
	}
}

func TestReadListenersMissingTCP6(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := readListeners(root); err == nil {
		t.Error("readListeners without net/tcp succeeded")
	}
	tcp := "header\n   0: 0100007F:1F90 00000000:0000 0A 0\n"
	if err := os.WriteFile(filepath.Join(root, "net", "tcp"), []byte(tcp), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readListeners(root)
	if err != nil || len(got) != 1 {
		t.Errorf("readListeners = %v, %v; want one socket", got, err)
	}
}
