package rest

// Issue 11 hole 8: slow clients, login abuse, limits behind a proxy.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
)

// shortDeadlines makes the slow-client bounds testable: 1 KiB per second
// of waiting, 1 s per write.
func shortDeadlines(d *Deps) {
	d.BodyWindow = time.Second
	d.BodyMinBytes = 1024
	d.WriteTimeout = time.Second
}

// trickle sends a login request's headers, then its body at step per
// byte, and returns the response (or an error) and when it came.
func trickle(t *testing.T, addr string, body string, step time.Duration) (*http.Response, time.Duration, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start := time.Now()
	hdr := fmt.Sprintf("POST /v1/auth/login HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := io.WriteString(c, hdr); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range len(body) {
			if _, err := c.Write([]byte{body[i]}); err != nil {
				return
			}
			time.Sleep(step)
		}
	}()
	// Before the fix the server waited for the whole body (here 30+ s).
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	return resp, time.Since(start), err
}

func TestSlowBodyIsCut(t *testing.T) {
	env := newTestEnv(t, shortDeadlines)
	addr := env.Srv.Listener.Addr().String()
	body := `{"email":"slow@example.com","password":"xxxxxxxxxx"}` + strings.Repeat(" ", 50)

	for _, step := range []time.Duration{
		300 * time.Millisecond, // a byte every 300 ms: each read is quick, the rate is not
		20 * time.Second,       // nothing after the first byte
	} {
		resp, took, err := trickle(t, addr, body, step)
		if err != nil {
			t.Fatalf("step %v: no response within 10 s: %v", step, err)
		}
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(data), "request_timeout") {
			t.Fatalf("step %v: status %d %s, want 408 request_timeout", step, resp.StatusCode, data)
		}
		if !resp.Close {
			t.Errorf("step %v: connection kept open after a timed-out body", step)
		}
		if took > 5*time.Second {
			t.Errorf("step %v: answered after %v", step, took)
		}
	}
}

// A body that keeps the minimum rate is read however long it takes.
func TestSteadyBodyIsRead(t *testing.T) {
	env := newTestEnv(t, shortDeadlines)
	c, err := net.Dial("tcp", env.Srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"email":"steady@example.com","password":"xxxxxxxxxx"` + strings.Repeat(" ", 6000) + `}`
	fmt.Fprintf(c, "POST /v1/auth/login HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	// 1200 bytes every 600 ms: about 3 s in all, three times the window.
	for i := 0; i < len(body); i += 1200 {
		if _, err := io.WriteString(c, body[i:min(i+1200, len(body))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401 (the body arrived whole)", resp.StatusCode)
	}
}

// Long responses are not cut by the deadlines: an exec that is silent for
// three times the write timeout, and an exec stream quiet as long.
func TestLongRequestsOutliveDeadlines(t *testing.T) {
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	te := newTestEnv(t, shortDeadlines, func(d *Deps) { d.Agents = fa })
	env := &sbEnv{testEnv: te, agents: fa, guest: startGuest(t), team: te.newTeam(t, "long")}
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id

	var res api.ExecResult
	env.doJSON(t, "POST", path+"/exec", env.team.Key, map[string]any{"cmd": "sleep 3; echo ok"}, http.StatusOK, &res)
	if orZero(res.Stdout) != "ok\n" {
		t.Fatalf("exec: %+v", res)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := env.dialWS(t, ctx, path+"/exec/stream")
	sendJSON(t, ctx, c, map[string]any{"cmd": "echo a; sleep 3; echo b"})
	if f := readFrame(t, ctx, c); f.Type != "start" {
		t.Fatalf("first frame %+v, want start", f)
	}
	stdout, _, code := follow(t, ctx, c)
	if stdout != "a\nb\n" || code != 0 {
		t.Fatalf("stream: %q exit %d", stdout, code)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}

func TestLoginThrottled(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")
	login := func(email, pw string) *http.Response {
		return env.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": pw})
	}
	// Five wrong passwords are answered; the sixth attempt waits, even with
	// the right password (so a throttled guesser learns nothing).
	for range 5 {
		wantError(t, login(a.Email, "wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	resp := login(strings.ToUpper(a.Email), a.Password)
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	wantError(t, resp, http.StatusTooManyRequests, "rate_limited")

	// An unknown email is throttled the same way: a 429 does not tell
	// whether the account exists.
	for range 5 {
		wantError(t, login("nobody@example.com", "wrong password"), http.StatusUnauthorized, "unauthenticated")
	}
	wantError(t, login("nobody@example.com", "wrong password"), http.StatusTooManyRequests, "rate_limited")

	// Once the delay has passed, the right password works and clears the
	// count.
	env.Clock.Advance(time.Second)
	env.doJSON(t, "POST", "/v1/auth/login", "", map[string]any{"email": a.Email, "password": a.Password}, http.StatusOK, nil)
	wantError(t, login(a.Email, "wrong password"), http.StatusUnauthorized, "unauthenticated")
}

// Per-address limits follow WRENN_CLIENT_IP_HEADER only from trusted
// proxies: from anyone else the header is ignored, so it cannot buy a
// client fresh buckets.
func TestClientIPHeaderTrust(t *testing.T) {
	try := func(env *testEnv, xff string) int {
		resp := env.doHeader(t, "POST", "/v1/auth/login", "", map[string]any{"email": uuid.NewString() + "@example.com", "password": "x"},
			http.Header{"X-Forwarded-For": {xff}})
		return resp.StatusCode
	}
	// RateLimit 1: a burst of 2 per address.
	untrusted := newTestEnv(t, func(d *Deps) { d.RateLimit = 1 })
	got := []int{try(untrusted, "198.51.100.1"), try(untrusted, "198.51.100.2"), try(untrusted, "198.51.100.3")}
	if got[2] != http.StatusTooManyRequests {
		t.Errorf("untrusted peer: statuses %v, want the third limited (header ignored)", got)
	}

	trusted := newTestEnv(t, func(d *Deps) {
		d.RateLimit = 1
		d.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	})
	got = []int{try(trusted, "198.51.100.1"), try(trusted, "198.51.100.2"), try(trusted, "198.51.100.3")}
	for i, s := range got {
		if s == http.StatusTooManyRequests {
			t.Errorf("trusted proxy: request %d for its own client limited: %v", i, got)
		}
	}
	// The same client behind the proxy is limited; a client-written entry
	// left of it does not help.
	got = []int{try(trusted, "198.51.100.9"), try(trusted, "6.6.6.6, 198.51.100.9"), try(trusted, "7.7.7.7, 198.51.100.9")}
	if got[2] != http.StatusTooManyRequests {
		t.Errorf("one client behind the proxy: statuses %v, want the third limited", got)
	}
}

// A body sent to a sandbox's port belongs to the guest's protocol, which
// may idle (a bidirectional stream): the progress deadline leaves it alone.
func TestProxiedBodyMayIdle(t *testing.T) {
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	te := newTestEnv(t, shortDeadlines, func(d *Deps) { d.Agents = fa })
	env := &sbEnv{testEnv: te, agents: fa, guest: startGuest(t), team: te.newTeam(t, "proxy")}
	env.addHost(t)
	sb := env.create(t, map[string]any{"public_ports": []int{9000}})
	c, err := net.Dial("tcp", env.Srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/sandboxes/%s/ports/9000/idle HTTP/1.1\r\nHost: api.test\r\nContent-Length: 10\r\n\r\nhello", sb.Id)
	time.Sleep(3 * time.Second) // three windows without a byte
	io.WriteString(c, "world")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(data), "body=helloworld") {
		t.Fatalf("status %d %s, want the whole body proxied", resp.StatusCode, data)
	}
}

// A client that stops reading a response cannot hold its handler and
// connection forever: each write must complete within WriteTimeout, else
// the server drops the connection. (Before, the write blocked for as long
// as the client liked.)
func TestStalledReaderIsCut(t *testing.T) {
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	te := newTestEnv(t, shortDeadlines, func(d *Deps) { d.Agents = fa })
	env := &sbEnv{testEnv: te, agents: fa, guest: startGuest(t), team: te.newTeam(t, "stall")}
	env.addHost(t)
	sb := env.create(t, map[string]any{})

	closed := make(chan string, 16)
	hs := httptest.NewUnstartedServer(env.Server.Handler())
	hs.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	hs.Start()
	defer hs.Close()
	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 10 MB of output: far more than the socket buffers hold.
	body := `{"cmd":"head -c 10000000 /dev/zero | tr '\\0' a"}`
	fmt.Fprintf(conn, "POST /v1/sandboxes/%s/exec HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		sb.Id, env.team.Key, len(body), body)
	// Read nothing.
	select {
	case addr := <-closed:
		if addr != conn.LocalAddr().String() {
			t.Fatalf("closed %s, not the stalled client %s", addr, conn.LocalAddr())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server still holds a connection whose client stopped reading 30 s ago")
	}
}

// Password checks beyond what the CPUs can hash are refused at once (503
// with Retry-After) instead of queueing without bound.
func TestLoginHashesBounded(t *testing.T) {
	gate := auth.NewHashGate(1, 0, time.Second)
	env := newTestEnv(t, func(d *Deps) { d.HashGate = gate })
	a := env.newTeam(t, "hashes")
	hold, held := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- gate.Do(context.Background(), func() { close(held); <-hold }) }()
	<-held
	resp := env.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": a.Email, "password": a.Password})
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	wantError(t, resp, http.StatusServiceUnavailable, "unavailable")
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	env.doJSON(t, "POST", "/v1/auth/login", "", map[string]any{"email": a.Email, "password": a.Password}, http.StatusOK, nil)
}

// Over HTTP/2 (h2c, as SDKs behind a TLS proxy speak) a trickled body is
// cut the same way, and only its stream fails.
func TestSlowBodyHTTP2(t *testing.T) {
	env := newTestEnv(t, shortDeadlines)
	hs := httptest.NewUnstartedServer(env.Server.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	defer hs.Close()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		for _, b := range []byte(`{"email":"h2@example.com","password":"xxxxxxxxxxxxxxxx"}`) {
			if _, err := pw.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		pw.Close()
	}()
	start := time.Now()
	req, _ := http.NewRequest("POST", hs.URL+"/v1/auth/login", pr)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 8*time.Second {
		t.Fatalf("HTTP/%d status %d after %v: %s; want HTTP/2 408 within seconds", resp.ProtoMajor, resp.StatusCode, time.Since(start), data)
	}
	// The connection still serves other streams.
	r2, err := client.Get(hs.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
}
