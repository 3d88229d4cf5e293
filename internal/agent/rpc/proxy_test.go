package rpc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/internal/agent/state"
	"github.com/wrenn/wrenn/proto/envd/filesystem"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
	"github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// fakeGuest stands in for a guest: envd and a user's server on one
// loopback port. It echoes what it received, streams on /stream, and
// echoes WebSocket messages on /ws.
type fakeGuest struct {
	srv *httptest.Server
	// release lets /stream write its second chunk.
	release chan struct{}
}

func newFakeGuest(t *testing.T) *fakeGuest {
	g := &fakeGuest{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "second\n")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"path": r.URL.EscapedPath(), "query": r.URL.RawQuery, "token": r.Header.Get("X-Access-Token"),
			"method": r.Method, "host": r.Host, "xff": r.Header.Get("X-Forwarded-For"),
		})
	})
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGuest) port(t *testing.T) int {
	_, p, err := net.SplitHostPort(g.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

type echoed struct{ Path, Query, Token, Method, Host, XFF string }

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
	return res.StatusCode
}

func TestProxyEnvd(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})

	var got echoed
	code := getJSON(t, s.client, s.url+"/sandboxes/sb1/envd/files/a%2Fb.txt?path=%2Fhome&x=1", &got)
	if code != 200 || got.Path != "/files/a%2Fb.txt" || got.Query != "path=%2Fhome&x=1" || got.Token != "secret-sb1" {
		t.Errorf("guest saw %+v (status %d), want path /files/a%%2Fb.txt, the query and the sandbox's token", got, code)
	}
	if n := m.touchCount("sb1"); n < 2 {
		t.Errorf("touches = %d, want the request to count as use (at start and end)", n)
	}

	// A caller's own token never reaches envd: the agent's replaces it.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/sandboxes/sb1/envd/", strings.NewReader("{}"))
	req.Header.Set("X-Access-Token", "forged")
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Token != "secret-sb1" || got.Path != "/" || got.Method != "POST" {
		t.Errorf("guest saw %+v", got)
	}
	if code := getJSON(t, s.client, s.url+"/sandboxes/sb1/envd?x=1", &got); code != 200 || got.Path != "/" || got.Query != "x=1" {
		t.Errorf("no trailing slash: guest saw %+v (status %d)", got, code)
	}
}

func TestProxyPort(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{envdPort: 49983})

	var got echoed
	url := fmt.Sprintf("%s/sandboxes/sb1/ports/%d/api/v1?q=1", s.url, g.port(t))
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "8080-sb1.wrenn.example"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Path != "/api/v1" || got.Query != "q=1" || got.Token != "" || got.Host != req.Host || got.XFF != "203.0.113.9" {
		t.Errorf("guest saw %+v, want /api/v1?q=1, no envd token, and the control plane's Host and X-Forwarded-For", got)
	}

	// Without a trailing slash: the guest's root, not a redirect.
	bare := fmt.Sprintf("%s/sandboxes/sb1/ports/%d", s.url, g.port(t))
	if code := getJSON(t, s.client, bare, &got); code != 200 || got.Path != "/" {
		t.Errorf("GET %s: guest saw %+v (status %d), want /", bare, got, code)
	}
	if m.touchCount("sb1") == 0 {
		t.Error("port traffic did not count as use of the sandbox")
	}
}

func TestProxyRefusals(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	paused := running("sb2")
	paused.State = state.Paused
	m.add(paused)
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})

	tests := []struct {
		name   string
		path   string
		status int
		code   string
	}{
		{name: "unknown sandbox envd", path: "/sandboxes/nope/envd/health", status: 404, code: "not_found"},
		{name: "unknown sandbox port", path: "/sandboxes/nope/ports/8080/", status: 404, code: "not_found"},
		{name: "envd port through ports", path: "/sandboxes/sb1/ports/49983/health", status: 403, code: "permission_denied"},
		{name: "configured envd port through ports", path: fmt.Sprintf("/sandboxes/sb1/ports/%d/health", g.port(t)), status: 403, code: "permission_denied"},
		{name: "port not a number", path: "/sandboxes/sb1/ports/http/", status: 400, code: "invalid_argument"},
		{name: "port zero", path: "/sandboxes/sb1/ports/0/", status: 400, code: "invalid_argument"},
		{name: "port too big", path: "/sandboxes/sb1/ports/65536/", status: 400, code: "invalid_argument"},
		{name: "paused sandbox", path: "/sandboxes/sb2/envd/health", status: 409, code: "failed_precondition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body struct {
				Error struct{ Code, Message string }
			}
			if status := getJSON(t, s.client, s.url+tt.path, &body); status != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
				t.Errorf("status %d body %+v, want %d %s with a message", status, body, tt.status, tt.code)
			}
		})
	}

	t.Run("guest not listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close() // nothing listens there now
		var body struct{ Error struct{ Code string } }
		if status := getJSON(t, s.client, fmt.Sprintf("%s/sandboxes/sb1/ports/%d/", s.url, port), &body); status != 502 || body.Error.Code != "unavailable" {
			t.Errorf("status %d body %+v, want 502 unavailable", status, body)
		}
	})
}

// TestProxyRefusalsSpeakConnect: envd's Connect calls through the proxy
// to a paused or unknown sandbox fail with the Connect code of the
// refusal, unary and streaming, so the control plane can answer 409 or
// 404 (an error body in the REST shape read as "unknown", a 500).
func TestProxyRefusalsSpeakConnect(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	paused := running("sb2")
	paused.State = state.Paused
	m.add(paused)
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})
	ctx := context.Background()
	for _, tt := range []struct {
		id   string
		want connect.Code
	}{{"sb2", connect.CodeFailedPrecondition}, {"nope", connect.CodeNotFound}} {
		base := s.url + "/sandboxes/" + tt.id + "/envd"
		_, err := filesystemconnect.NewFilesystemClient(s.client, base).Stat(ctx, connect.NewRequest(&filesystem.StatRequest{Path: "/"}))
		if code := connect.CodeOf(err); code != tt.want {
			t.Errorf("unary Stat on %s: %v (code %v), want %v", tt.id, err, code, tt.want)
		}
		stream, err := processconnect.NewProcessClient(s.client, base).Start(ctx, connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "true"}}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
			stream.Close()
		}
		if code := connect.CodeOf(err); code != tt.want {
			t.Errorf("streaming Start on %s: %v (code %v), want %v", tt.id, err, code, tt.want)
		}
	}
}

// TestProxyStreams checks a response arrives chunk by chunk: the guest
// writes its second chunk only after the client has read the first, which
// would deadlock if the proxy buffered.
func TestProxyStreams(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})

	res, err := s.client.Get(s.url + "/sandboxes/sb1/envd/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	first, err := r.ReadString('\n')
	if err != nil || first != "first\n" {
		t.Fatalf("first chunk = %q, %v", first, err)
	}
	close(g.release)
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
}

// TestProxyEndsWithSandbox: a stream open when its sandbox is destroyed
// ends then, though the guest never closes it (a dead VM sends no FIN).
func TestProxyEndsWithSandbox(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})

	res, err := s.client.Get(s.url + "/sandboxes/sb1/envd/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	if first, err := r.ReadString('\n'); err != nil || first != "first\n" {
		t.Fatalf("first chunk = %q, %v", first, err)
	}
	if err := m.Destroy(context.Background(), "sb1"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	select {
	case <-done:
		// Ended (an error or EOF both end the client's wait); the guest
		// never released its second chunk.
	case <-time.After(10 * time.Second):
		t.Fatal("the stream stayed open 10 s after its sandbox was destroyed")
	}
}

func TestProxyWebSocket(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{})
	ctx := context.Background()

	route := fmt.Sprintf("/sandboxes/sb1/ports/%d/ws?x=1", g.port(t))
	c, res, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(s.url, "https")+route, &websocket.DialOptions{HTTPClient: s.client})
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", route, err, res)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	typ, b, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(b) != "echo:hello" {
		t.Fatalf("read = %v %q %v", typ, b, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if m.touchCount("sb1") == 0 {
		t.Error("WebSocket traffic did not count as use of the sandbox")
	}
}

func TestProxyEnvdWebSocket(t *testing.T) {
	g := newFakeGuest(t)
	m := newFakeManager()
	m.add(running("sb1"))
	s := startAgent(t, m, serverOpts{envdPort: g.port(t)})
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(s.url, "https")+"/sandboxes/sb1/envd/ws", &websocket.DialOptions{HTTPClient: s.client})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageBinary, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "echo:\x01\x02" {
		t.Fatalf("read = %q %v", b, err)
	}
}
