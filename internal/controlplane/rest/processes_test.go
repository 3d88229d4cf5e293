package rest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// dialWS opens a WebSocket to the API with the team's key.
func (e *sbEnv) dialWS(t testing.TB, ctx context.Context, path string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.Srv.URL, "http")+path,
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + e.team.Key}}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

type wsFrame struct {
	Type     string `json:"type"`
	Pid      int    `json:"pid"`
	Data     []byte `json:"data"`
	ExitCode *int   `json:"exit_code"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func sendJSON(t testing.TB, ctx context.Context, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("send %s: %v", b, err)
	}
}

func readFrame(t testing.TB, ctx context.Context, c *websocket.Conn) wsFrame {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("binary frame %q on a process stream", b)
	}
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// follow reads a process stream to its end: stdout, stderr, exit code.
func follow(t testing.TB, ctx context.Context, c *websocket.Conn) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	for {
		f := readFrame(t, ctx, c)
		switch f.Type {
		case "stdout":
			stdout.Write(f.Data)
		case "stderr":
			stderr.Write(f.Data)
		case "exit":
			if f.ExitCode == nil {
				t.Fatal("exit frame without exit_code")
			}
			if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Errorf("after exit: %v, want a normal close", err)
			}
			return stdout.String(), stderr.String(), *f.ExitCode
		case "error":
			t.Fatalf("error frame: %+v", f.Error)
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
}

func TestExec(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	key := env.team.Key

	var res api.ExecResult
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "echo out; echo err >&2; exit 3"}, http.StatusOK, &res)
	if res.ExitCode == nil || *res.ExitCode != 3 || orZero(res.Stdout) != "out\n" || orZero(res.Stderr) != "err\n" || res.Pid == 0 {
		t.Fatalf("exec: %+v", res)
	}
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "/bin/echo", "args": []string{"a b", "$HOME"}}, http.StatusOK, &res)
	if orZero(res.Stdout) != "a b $HOME\n" {
		t.Errorf("args are not passed verbatim: %q", orZero(res.Stdout))
	}
	// An empty args list still means "this program, no shell": no program
	// is called "echo hi" (a shell would have printed hi).
	wantError(t, env.do(t, "POST", path+"/exec", key, map[string]any{"cmd": "echo hi", "args": []string{}}), http.StatusNotFound, "not_found")
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "tr a-z A-Z", "stdin": "hello"}, http.StatusOK, &res)
	if orZero(res.Stdout) != "HELLO" {
		t.Errorf("stdin: %q", orZero(res.Stdout))
	}
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "echo $GREETING; pwd", "env": map[string]string{"GREETING": "hi"}, "cwd": "/tmp"}, http.StatusOK, &res)
	if orZero(res.Stdout) != "hi\n/tmp\n" {
		t.Errorf("env/cwd: %q", orZero(res.Stdout))
	}
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "head -c 11000000 /dev/zero"}, http.StatusOK, &res)
	if len(orZero(res.Stdout)) != maxExecOutput || !orZero(res.Truncated) || *res.ExitCode != 0 {
		t.Errorf("large output: %d bytes, truncated %v", len(orZero(res.Stdout)), res.Truncated)
	}
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "echo started; exec sleep 30", "timeout_sec": 1}, http.StatusOK, &res)
	if res.ExitCode == nil || *res.ExitCode != -1 || !strings.Contains(orZero(res.Error), "timeout") || orZero(res.Stdout) != "started\n" {
		t.Errorf("timeout: %+v", res)
	}

	for _, bad := range []map[string]any{
		{},
		{"cmd": ""},
		{"cmd": "true", "timeout_sec": 0},
		{"cmd": "true", "tag": "123"},
		{"cmd": "true", "tag": "a/b"},
		{"cmd": "true", "user": "Not A User"},
		{"cmd": "true", "env": map[string]string{"": "x"}},
		{"cmd": "true", "background": true, "stdin": "x"},
		{"cmd": "true", "bogus": 1},
	} {
		wantError(t, env.do(t, "POST", path+"/exec", key, bad), http.StatusBadRequest, "invalid_argument")
	}
}

func TestBackgroundProcesses(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	key := env.team.Key
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var res api.ExecResult
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "cat", "background": true, "tag": "catter"}, http.StatusOK, &res)
	if res.Pid == 0 || orZero(res.Tag) != "catter" || res.ExitCode != nil {
		t.Fatalf("background start: %+v", res)
	}
	var list struct{ Processes []api.Process }
	env.doJSON(t, "GET", path+"/processes", key, nil, http.StatusOK, &list)
	found := false
	for _, p := range list.Processes {
		if p.Pid == res.Pid && orZero(p.Tag) == "catter" {
			found = true
		}
	}
	if !found {
		t.Fatalf("processes %+v lack pid %d", list.Processes, res.Pid)
	}

	// Reattach by tag, feed it input, see the output, end it with eof.
	c := env.dialWS(t, ctx, path+"/processes/catter/stream")
	if f := readFrame(t, ctx, c); f.Type != "start" || f.Pid != res.Pid {
		t.Fatalf("first frame %+v, want start with pid %d", f, res.Pid)
	}
	sendJSON(t, ctx, c, map[string]any{"type": "stdin", "data": []byte("ping\n")})
	if f := readFrame(t, ctx, c); f.Type != "stdout" || string(f.Data) != "ping\n" {
		t.Fatalf("echo through cat: %+v", f)
	}
	sendJSON(t, ctx, c, map[string]any{"type": "eof"})
	if _, _, code := follow(t, ctx, c); code != 0 {
		t.Errorf("cat exit code %d", code)
	}

	// Signal by pid; an unknown process is 404 before any upgrade.
	env.doJSON(t, "POST", path+"/exec", key, map[string]any{"cmd": "sleep 600", "background": true}, http.StatusOK, &res)
	resp := env.do(t, "POST", path+"/processes/"+strconv.Itoa(res.Pid)+"/signal", key, map[string]any{"signal": "SIGKILL"})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("signal: %d", resp.StatusCode)
	}
	wantError(t, env.do(t, "POST", path+"/processes/"+strconv.Itoa(res.Pid)+"/signal", key, map[string]any{"signal": "SIGHUP"}), http.StatusBadRequest, "invalid_argument")
	wantError(t, env.do(t, "POST", path+"/processes/nosuchtag/signal", key, map[string]any{"signal": "SIGTERM"}), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "GET", path+"/processes/nosuchtag/stream", key, nil), http.StatusBadRequest, "invalid_argument")
	_, hresp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(env.Srv.URL, "http")+path+"/processes/nosuchtag/stream",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err == nil || hresp == nil || hresp.StatusCode != http.StatusNotFound {
		t.Errorf("reattach to a missing process: %v, want 404", err)
	}
}

func TestExecStream(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("stdin and exit code", func(t *testing.T) {
		c := env.dialWS(t, ctx, path+"/exec/stream")
		sendJSON(t, ctx, c, map[string]any{"cmd": "wc -c; echo done >&2; exit 4"})
		if f := readFrame(t, ctx, c); f.Type != "start" || f.Pid == 0 {
			t.Fatalf("first frame %+v, want start", f)
		}
		for range 3 {
			sendJSON(t, ctx, c, map[string]any{"type": "stdin", "data": []byte("12345")})
		}
		sendJSON(t, ctx, c, map[string]any{"type": "eof"})
		stdout, stderr, code := follow(t, ctx, c)
		if strings.TrimSpace(stdout) != "15" || stderr != "done\n" || code != 4 {
			t.Errorf("got stdout %q stderr %q code %d", stdout, stderr, code)
		}
	})
	t.Run("signal", func(t *testing.T) {
		c := env.dialWS(t, ctx, path+"/exec/stream")
		sendJSON(t, ctx, c, map[string]any{"cmd": "sleep", "args": []string{"600"}})
		readFrame(t, ctx, c)
		sendJSON(t, ctx, c, map[string]any{"type": "signal", "signal": "SIGTERM"})
		if _, _, code := follow(t, ctx, c); code != -1 {
			t.Errorf("exit code %d after SIGTERM, want -1", code)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c := env.dialWS(t, ctx, path+"/exec/stream")
		sendJSON(t, ctx, c, map[string]any{"cmd": "exec sleep 600", "timeout_sec": 1})
		readFrame(t, ctx, c)
		if _, _, code := follow(t, ctx, c); code != -1 {
			t.Errorf("exit code %d after the timeout, want -1", code)
		}
	})
	t.Run("bad request", func(t *testing.T) {
		c := env.dialWS(t, ctx, path+"/exec/stream")
		sendJSON(t, ctx, c, map[string]any{"cmd": ""})
		f := readFrame(t, ctx, c)
		if f.Type != "error" || f.Error == nil || f.Error.Code != "invalid_argument" {
			t.Fatalf("frame %+v, want an invalid_argument error", f)
		}
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Errorf("close after the error: %v", err)
		}
	})
	t.Run("client leaves: process killed", func(t *testing.T) {
		c := env.dialWS(t, ctx, path+"/exec/stream")
		sendJSON(t, ctx, c, map[string]any{"cmd": "sleep", "args": []string{"601"}, "tag": "abandoned"})
		readFrame(t, ctx, c)
		c.CloseNow()
		for {
			var list struct{ Processes []api.Process }
			env.doJSON(t, "GET", path+"/processes", env.team.Key, nil, http.StatusOK, &list)
			alive := false
			for _, p := range list.Processes {
				alive = alive || orZero(p.Tag) == "abandoned"
			}
			if !alive {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("the abandoned process still runs")
			}
			time.Sleep(20 * time.Millisecond) // polling for the kill, not timing it
		}
	})
	t.Run("plain GET", func(t *testing.T) {
		wantError(t, env.do(t, "GET", path+"/exec/stream", env.team.Key, nil), http.StatusBadRequest, "invalid_argument")
	})
}

func TestPTY(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	wantError(t, env.do(t, "GET", path+"/pty?cols=0", env.team.Key, nil), http.StatusBadRequest, "invalid_argument")
	wantError(t, env.do(t, "GET", path+"/pty?rows=1001", env.team.Key, nil), http.StatusBadRequest, "invalid_argument")

	c := env.dialWS(t, ctx, path+"/pty?cols=80&rows=24")
	sendJSON(t, ctx, c, map[string]any{"type": "resize", "cols": 132, "rows": 43})
	if err := c.Write(ctx, websocket.MessageBinary, []byte("stty size; echo pty-$((6*7)); exit 5\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("pty read (output so far %q): %v", out.String(), err)
		}
		if typ == websocket.MessageBinary {
			out.Write(b)
			continue
		}
		var f wsFrame
		if err := json.Unmarshal(b, &f); err != nil || f.Type != "exit" || f.ExitCode == nil {
			t.Fatalf("text frame %s, want exit", b)
		}
		if *f.ExitCode != 5 {
			t.Errorf("exit code %d, want 5", *f.ExitCode)
		}
		break
	}
	if !strings.Contains(out.String(), "pty-42") || !strings.Contains(out.String(), "43 132") {
		t.Errorf("terminal output lacks the command's output or the new size: %q", out.String())
	}
}

// BenchmarkExecRoundTrip is POST /exec of `true` through the API, the fake
// agent's guest proxy and a real envd: the control plane's share of an
// exec's latency (no VM).
func BenchmarkExecRoundTrip(b *testing.B) {
	env := newBenchEnv(b)
	env.guest = startGuest(b)
	env.addHost(b)
	body := []byte(`{}`)
	req, _ := http.NewRequest("POST", env.url+"/v1/sandboxes", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+env.team.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var sb api.Sandbox
	_ = json.NewDecoder(resp.Body).Decode(&sb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("create: %d", resp.StatusCode)
	}
	exec := []byte(`{"cmd":"/bin/true","args":["x"]}`)
	for b.Loop() {
		req, _ := http.NewRequest("POST", env.url+"/v1/sandboxes/"+sb.Id+"/exec", bytes.NewReader(exec))
		req.Header.Set("Authorization", "Bearer "+env.team.Key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var res api.ExecResult
		_ = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || res.ExitCode == nil || *res.ExitCode != 0 {
			b.Fatalf("exec: %d %+v", resp.StatusCode, res)
		}
	}
}

// TestWebSocketBearerSubprotocol: a browser page holding an API key (it
// cannot set headers on a WebSocket) authenticates a terminal with the
// wrenn.bearer.<base64url key> subprotocol; the server selects wrenn.v1,
// never the credential. Another team's key, or a malformed one, is
// refused as over a header.
func TestWebSocketBearerSubprotocol(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	other := env.newTeam(t, "other")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws" + strings.TrimPrefix(env.Srv.URL, "http") + "/v1/sandboxes/" + sb.Id + "/pty?cols=80&rows=24"
	dial := func(key string) (*websocket.Conn, int, error) {
		protos := []string{wsProtocol, wsBearerPrefix + base64.RawURLEncoding.EncodeToString([]byte(key))}
		if key == "" {
			protos = []string{wsProtocol, wsBearerPrefix + "%%%"}
		}
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: protos})
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return c, status, err
	}
	c, _, err := dial(env.team.Key)
	if err != nil {
		t.Fatalf("dial with the key in the subprotocol: %v", err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != wsProtocol {
		t.Errorf("selected subprotocol %q, want %q", c.Subprotocol(), wsProtocol)
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte("echo via-$((6*7)); exit 0\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for !strings.Contains(out.String(), "via-42") {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("pty read (output so far %q): %v", out.String(), err)
		}
		if typ == websocket.MessageBinary {
			out.Write(b)
		}
	}
	if _, status, err := dial(other.Key); err == nil || status != http.StatusNotFound {
		t.Errorf("another team's key in the subprotocol: status %d (err %v), want 404", status, err)
	}
	if _, status, err := dial(""); err == nil || status != http.StatusUnauthorized {
		t.Errorf("a malformed credential in the subprotocol: status %d (err %v), want 401", status, err)
	}
}
