package hostaddr

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/wrenn/wrenn/internal/errdefs"
)

func TestForbidden(t *testing.T) {
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true},
		{"10.0.0.1", true}, {"172.16.0.1", true}, {"172.31.255.255", true}, {"192.168.0.1", true},
		{"169.254.169.254", true}, {"fe80::1", true}, {"fd00:ec2::254", true}, {"fc00::1", true},
		{"0.0.0.0", true}, {"::", true}, {"0.1.2.3", true},
		{"224.0.0.1", true}, {"ff02::1", true}, {"255.255.255.255", true},
		{"100.64.0.1", true}, {"100.127.255.255", true},
		{"::ffff:10.0.0.1", true}, {"::ffff:127.0.0.1", true},
		{"64:ff9b::a00:1", true}, // NAT64 of 10.0.0.1
		{"2002:a00:1::", true},   // 6to4 of 10.0.0.1

		{"8.8.8.8", false}, {"203.0.113.9", false}, {"172.32.0.1", false}, {"100.128.0.1", false},
		{"2606:4700::1111", false}, {"::ffff:8.8.8.8", false}, {"64:ff9b::808:808", false},
	} {
		if got := Forbidden(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("Forbidden(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
}

type resolver map[string][]netip.Addr

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := r[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestCheck(t *testing.T) {
	r := resolver{
		"ok.example.com":    {netip.MustParseAddr("203.0.113.1")},
		"mixed.example.com": {netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("192.168.1.1")},
		"meta.example.com":  {netip.MustParseAddr("169.254.169.254")},
	}
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"203.0.113.1:50051", true},
		{"ok.example.com:50051", true},
		{"mixed.example.com:50051", false}, // any forbidden address refuses the name
		{"meta.example.com:80", false},
		{"missing.example.com:50051", false},
		{"127.0.0.1:50051", false},
		{"[::1]:50051", false},
		{"no-port", false},
	} {
		err := Check(context.Background(), r, c.addr)
		if (err == nil) != c.ok {
			t.Errorf("Check(%s) = %v, want ok=%v", c.addr, err, c.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Check(%s) = %v, want invalid_argument", c.addr, err)
		}
	}
}

// TestControlRefusesInternalDial: the dial-time check sees the address
// actually dialled, after resolution (DNS rebinding cannot slip past).
func TestControlRefusesInternalDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: Control}
	_, err = d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if !errors.Is(err, ErrForbiddenDial) {
		t.Fatalf("dial loopback with Control: %v, want ErrForbiddenDial", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_, err = d.DialContext(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	if !errors.Is(err, ErrForbiddenDial) {
		t.Fatalf("dial localhost with Control: %v, want ErrForbiddenDial", err)
	}
	if err := Control("tcp4", "203.0.113.1:443", nil); err != nil {
		t.Errorf("public address refused: %v", err)
	}
}
