package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wrenn/wrenn/internal/clocktest"
)

func newClock() *clocktest.Clock {
	return clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

func TestBucketsEvictIdle(t *testing.T) {
	clk := newClock()
	l := NewBuckets(10, clk)
	for i := range 100 {
		if ok, _ := l.Allow(fmt.Sprint("k", i)); !ok {
			t.Fatalf("first request of k%d refused", i)
		}
	}
	if n := l.Len(); n != 100 {
		t.Fatalf("%d buckets, want 100", n)
	}
	clk.Advance(l.Idle())
	l.Allow("fresh")
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after every other key went idle, want 1", n)
	}
	// A bucket in use is kept, and its state with it.
	for range 20 {
		l.Allow("busy")
	}
	ok, wait := l.Allow("busy")
	if ok || wait <= 0 {
		t.Fatalf("21st request in a burst of 20: ok=%v wait=%v", ok, wait)
	}
	clk.Advance(l.Idle() / 2)
	l.Allow("other")
	if ok, _ := l.Allow("busy"); !ok {
		t.Fatal("busy refused after refilling")
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("%d buckets, want 3 (fresh, busy, other)", n)
	}
}

func TestClientIP(t *testing.T) {
	trusted, err := ParsePrefixes("10.0.0.0/8, 192.0.2.7, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	c := NewClientIP(trusted, "")
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer: header ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"trusted peer, one hop", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client-written entries left of the real one are ignored", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:5000", []string{"198.51.100.1, 192.0.2.7, 10.9.9.9"}, "198.51.100.1"},
		{"repeated header lines", "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.1, 10.2.2.2"}, "198.51.100.1"},
		{"trusted peer, no header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"garbage from a trusted hop stops at the last good one", "10.1.2.3:5000", []string{"not-an-ip, 10.2.2.2"}, "10.2.2.2"},
		{"ports and IPv6", "[fd00::1]:5000", []string{"[2001:db8::5]:443"}, "2001:db8::5"},
		{"v4-mapped peer", "[::ffff:10.1.2.3]:5000", []string{"198.51.100.1"}, "198.51.100.1"},
	}
	for _, tc := range cases {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := c.Of(r); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
	// A custom header, and nothing trusted: the peer, always.
	c = NewClientIP([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "X-Real-IP")
	r, _ := http.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.1:1"
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	r.Header.Set("X-Real-Ip", "2.2.2.2")
	if got := c.Of(r); got != "2.2.2.2" {
		t.Errorf("custom header: got %s", got)
	}
	if got := NewClientIP(nil, "").Of(r); got != "10.0.0.1" {
		t.Errorf("no trusted proxies: got %s", got)
	}
	if _, err := ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestLoginThrottle(t *testing.T) {
	clk := newClock()
	th := NewLoginThrottle(clk)
	a := AccountKey("  Alice@Example.com ")
	if a != "alice@example.com" {
		t.Fatalf("AccountKey: %q", a)
	}
	for i := range DefaultFreeFailures {
		if ok, _ := th.Check(a); !ok {
			t.Fatalf("attempt %d refused within the free failures", i+1)
		}
		th.Fail(a)
	}
	// Each failure past the free ones doubles the delay.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		ok, wait := th.Check(a)
		if ok || wait != want {
			t.Fatalf("check: ok=%v wait=%v, want refused for %v", ok, wait, want)
		}
		clk.Advance(want)
		if ok, _ := th.Check(a); !ok {
			t.Fatalf("still refused after %v", want)
		}
		th.Fail(a)
	}
	// Other accounts are untouched; the cap holds.
	if ok, _ := th.Check("bob@example.com"); !ok {
		t.Fatal("another account throttled")
	}
	for range 40 {
		clk.Advance(DefaultMaxDelay)
		th.Fail(a)
	}
	if _, wait := th.Check(a); wait != DefaultMaxDelay {
		t.Fatalf("delay %v, want the cap %v", wait, DefaultMaxDelay)
	}
	// A success clears; a long quiet spell forgets.
	th.Succeed(a)
	if ok, _ := th.Check(a); !ok {
		t.Fatal("refused after success")
	}
	for range DefaultFreeFailures + 1 {
		th.Fail(a)
	}
	clk.Advance(DefaultForget)
	th.Fail(a)
	if ok, _ := th.Check(a); !ok {
		t.Fatal("old failures not forgotten")
	}
}

func TestLoginThrottleBoundedMemory(t *testing.T) {
	clk := newClock()
	th := NewLoginThrottle(clk)
	for i := range maxAccounts + 10 {
		th.Fail(fmt.Sprint("u", i))
	}
	if n := th.Len(); n > maxAccounts {
		t.Fatalf("%d accounts held, cap %d", n, maxAccounts)
	}
}

func TestLimiterMiddleware(t *testing.T) {
	clk := newClock()
	reg := prometheus.NewRegistry()
	rejected := RejectedCounter()
	reg.MustRegister(rejected)
	l := NewLimiter("principal", 1, clk, rejected)
	reg.MustRegister(l)
	var refusedWait time.Duration
	h := l.Middleware(func(r *http.Request) string { return r.Header.Get("K") },
		func(w http.ResponseWriter, _ *http.Request, wait time.Duration) {
			refusedWait = wait
			w.WriteHeader(http.StatusTooManyRequests)
		})(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	codes := func(key string, n int) []int {
		var out []int
		for range n {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("K", key)
			h.ServeHTTP(rec, req)
			out = append(out, rec.Code)
		}
		return out
	}
	// 1 rps, burst 2: the third request at once is refused; another key
	// has its own bucket.
	if got := codes("a", 3); got[0] != 204 || got[1] != 204 || got[2] != 429 {
		t.Fatalf("key a: %v", got)
	}
	if refusedWait <= 0 {
		t.Fatalf("refusal wait %v", refusedWait)
	}
	if got := codes("b", 1); got[0] != 204 {
		t.Fatalf("key b: %v", got)
	}
	if n := testutil.ToFloat64(rejected.WithLabelValues("principal")); n != 1 {
		t.Fatalf("rejected counter %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "wrenn_api_rate_limit_buckets"); err != nil || n != 1 {
		t.Fatalf("bucket gauge series %d %v", n, err)
	}
}
