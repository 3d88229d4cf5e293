//go:build linux

package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/network"
)

// internet is a test-made network namespace standing in for the internet
// (203.0.113.2) and for a cloud metadata service (169.254.169.254), each
// serving HTTP on port 80, routed from the host through a veth.
type internet struct {
	ns       string
	public   string // "internet" server address
	metadata string
}

func newInternet(t *testing.T, run int) *internet {
	t.Helper()
	veth := fmt.Sprintf("tinet%d", run%50)
	in := &internet{ns: veth, public: "203.0.113.2", metadata: "169.254.169.254"}
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", in.ns).Run()
	_ = exec.Command("ip", "link", "del", veth).Run()
	sh("ip", "netns", "add", in.ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", veth).Run()
		_ = exec.Command("ip", "netns", "del", in.ns).Run()
		_ = exec.Command("ip", "route", "del", in.metadata+"/32").Run()
	})
	sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", in.ns)
	sh("ip", "addr", "add", "203.0.113.1/30", "dev", veth)
	sh("ip", "link", "set", veth, "up")
	sh("ip", "route", "replace", in.metadata+"/32", "via", "203.0.113.2")
	sh("ip", "-n", in.ns, "link", "set", "lo", "up")
	sh("ip", "-n", in.ns, "addr", "add", "203.0.113.2/30", "dev", "eth0")
	sh("ip", "-n", in.ns, "addr", "add", in.metadata+"/32", "dev", "lo")
	sh("ip", "-n", in.ns, "link", "set", "eth0", "up")
	sh("ip", "-n", in.ns, "route", "add", "default", "via", "203.0.113.1")
	for _, addr := range []string{in.public + ":80", in.metadata + ":80"} {
		serveIn(t, "/run/netns/"+in.ns, addr, "internet "+addr)
	}
	return in
}

// serveIn serves HTTP answering body on addr inside the namespace at nsPath
// ("" = the test's own namespace) until the test ends.
func serveIn(t *testing.T, nsPath, addr, body string) {
	t.Helper()
	ln, err := listenIn(nsPath, addr)
	if err != nil {
		t.Fatalf("listen on %s in %q: %v", addr, nsPath, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// listenIn opens a listener inside another network namespace: the socket is
// created on a thread switched into that namespace and stays there.
func listenIn(nsPath, addr string) (net.Listener, error) {
	if nsPath == "" {
		return net.Listen("tcp", addr)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	defer netns.Set(orig)
	return net.Listen("tcp", addr)
}

// curl fetches url from inside a sandbox and returns the body, or "" when
// the connection failed (a refused or unreachable destination).
func curl(ctx context.Context, t *testing.T, m *agent.Manager, id, url string) string {
	t.Helper()
	out, _, code := run(ctx, t, m, id, "curl -sS --max-time 5 "+url)
	if code != 0 {
		return ""
	}
	return out
}

// TestIsolation: five sandboxes at once; none reaches another, the host's
// addresses or the metadata service; egress follows each one's policy.
func TestIsolation(t *testing.T) {
	h := newHarness(t)
	ctx := ctxFor(t, 10*time.Minute)
	m := h.agent(ctx)
	in := newInternet(t, h.run)

	// Every blocked destination answers the host directly, so a failure
	// from inside a sandbox is the policy at work, not a missing route.
	hostIP := firstHostAddr(t)
	serveIn(t, "", hostIP+":18080", "host")
	for _, u := range []string{"http://" + in.public, "http://" + in.metadata, "http://" + hostIP + ":18080"} {
		if body := hostGet(t, u); body == "" {
			t.Fatalf("the host itself cannot reach %s: the test setup is broken", u)
		}
	}

	policies := []network.Policy{
		{Internet: false},
		{Internet: true},
		{Internet: true, DenyOut: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		{Internet: false, AllowOut: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/32")}},
		{Internet: true},
	}
	ids := make([]string, len(policies))
	var g errgroup.Group
	g.SetLimit(3) // 2 cores under TCG: boots at most three at a time
	for i, pol := range policies {
		g.Go(func() error {
			info, err := m.Create(ctx, agent.CreateRequest{Network: pol, MemoryMB: 256})
			if err != nil {
				return fmt.Errorf("create sandbox %d: %w", i, err)
			}
			ids[i] = info.ID
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			if id != "" {
				_ = m.Destroy(context.Background(), id)
			}
		}
	})

	// Every sandbox serves on port 8000 inside the guest.
	addrs := make([]string, len(ids))
	for i, id := range ids {
		_, _, code := run(ctx, t, m, id, fmt.Sprintf("nohup python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 & sleep 0.1; echo sandbox-%d > index.html", i))
		if code != 0 {
			t.Fatalf("start server in sandbox %d", i)
		}
		info, err := m.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = info.Address
	}
	// The host (agent/proxy) reaches every guest's server.
	for i, a := range addrs {
		want := fmt.Sprintf("sandbox-%d", i)
		if !pollHostGet(t, "http://"+a+":8000/index.html", want) {
			t.Fatalf("host cannot reach sandbox %d's server at %s", i, a)
		}
	}

	internetWant := []bool{false, true, false, true, true}
	for i, id := range ids {
		t.Run(fmt.Sprintf("sandbox%d", i), func(t *testing.T) {
			if got := curl(ctx, t, m, id, "http://"+in.public) != ""; got != internetWant[i] {
				t.Errorf("policy %+v: reached the internet = %v, want %v", policies[i], got, internetWant[i])
			}
			if body := curl(ctx, t, m, id, "http://"+in.metadata); body != "" {
				t.Errorf("reached the metadata service: %q", body)
			}
			if body := curl(ctx, t, m, id, "http://"+hostIP+":18080"); body != "" {
				t.Errorf("reached the host at %s: %q", hostIP, body)
			}
			other := (i + 1) % len(ids)
			if body := curl(ctx, t, m, id, "http://"+addrs[other]+":8000/index.html"); body != "" {
				t.Errorf("reached sandbox %d at %s: %q", other, addrs[other], body)
			}
		})
	}

	// Policy changes at runtime: cut sandbox 1 off, then let it out again.
	if err := m.SetNetwork(ctx, ids[1], network.Policy{Internet: false}); err != nil {
		t.Fatal(err)
	}
	if body := curl(ctx, t, m, ids[1], "http://"+in.public); body != "" {
		t.Errorf("internet still reachable after SetNetwork(internet:false)")
	}
	if err := m.SetNetwork(ctx, ids[1], network.Policy{Internet: true}); err != nil {
		t.Fatal(err)
	}
	if body := curl(ctx, t, m, ids[1], "http://"+in.public); body == "" {
		t.Errorf("internet unreachable after SetNetwork(internet:true)")
	}
}

func firstHostAddr(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-4", "-o", "route", "get", "1.1.1.1").Output()
	if err != nil {
		t.Fatalf("find the host's address: %v", err)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "src" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no src in %q", out)
	return ""
}

var hostClient = &http.Client{Timeout: 5 * time.Second}

func hostGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := hostClient.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return string(b)
}

// pollHostGet polls url from the host until it answers with want.
func pollHostGet(t *testing.T, url, want string) bool {
	t.Helper()
	var once sync.Once
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(hostGet(t, url), want) {
			return true
		}
		once.Do(func() { t.Logf("waiting for %s", url) })
		time.Sleep(200 * time.Millisecond)
	}
	return false
}
