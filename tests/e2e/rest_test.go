package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// TestRESTJourney is the control plane issue's end-to-end check: with the
// host registered by token, one sandbox goes through create, exec, files,
// a PTY over WebSocket, the port proxy (with and without its token),
// pause, resume and delete, all through the public REST API.
func TestRESTJourney(t *testing.T) {
	st := stack(t)
	c := client{base: st.URL, cred: st.Admin.APIKey}

	// The host registered itself with the one-time token.
	var host api.Host
	c.json(t, "GET", "/v1/hosts/"+st.HostID, nil, http.StatusOK, &host)
	if host.Status != "online" || host.Cpus == nil || *host.Cpus < 1 || host.Accelerator == nil || *host.Accelerator == "" {
		t.Fatalf("host after registration: %+v", host)
	}

	var sb api.Sandbox
	start := time.Now()
	c.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 600,
		"metadata": map[string]string{"journey": "rest"}}, http.StatusCreated, &sb)
	t.Logf("create: %s", time.Since(start).Round(time.Millisecond))
	if sb.State != api.SandboxStateRunning || sb.AccessToken == nil || *sb.AccessToken == "" {
		t.Fatalf("created sandbox: %+v", sb)
	}
	defer func() { c.do(t, "DELETE", "/v1/sandboxes/"+sb.Id, nil).Body.Close() }()
	path := "/v1/sandboxes/" + sb.Id

	// exec: stdout, stderr and the exit code.
	var res api.ExecResult
	c.json(t, "POST", path+"/exec", map[string]any{"cmd": "echo out; echo err >&2; exit 3"}, http.StatusOK, &res)
	if res.ExitCode == nil || *res.ExitCode != 3 || deref(res.Stdout) != "out\n" || deref(res.Stderr) != "err\n" {
		t.Fatalf("exec result: %+v", res)
	}

	// files: a 5 MiB upload comes back byte for byte.
	payload := make([]byte, 5<<20)
	rand.Read(payload)
	resp := c.do(t, "PUT", path+"/files?path=/home/user/blob.bin", bytes.NewReader(payload))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %s", resp.Status)
	}
	resp = c.do(t, "GET", path+"/files?path=/home/user/blob.bin", nil)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("download: %d bytes, checksum differs from the %d uploaded", len(got), len(payload))
	}

	// PTY over WebSocket: type a command, see its output, resize, exit.
	ptyJourney(t, st.URL, st.Admin.APIKey, sb.Id)

	// A guest HTTP server, reached through the proxy.
	c.json(t, "POST", path+"/exec", map[string]any{
		"cmd":        "mkdir -p /tmp/www && echo hello-from-guest > /tmp/www/index.txt && cd /tmp/www && python3 -m http.server 8080 >/dev/null 2>&1",
		"background": true, "tag": "web"}, http.StatusOK, &res)
	token := *sb.AccessToken
	portPath := path + "/ports/8080/index.txt"
	body := pollProxy(t, st.URL+portPath, token)
	if body != "hello-from-guest\n" {
		t.Fatalf("through the proxy: %q", body)
	}
	noToken := client{base: st.URL}
	resp = noToken.do(t, "GET", portPath, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("proxy without a token: %s, want 401", resp.Status)
	}
	// The Host-header form: 8080-<id>.<domain>.
	req, _ := http.NewRequest("GET", st.URL+"/index.txt", nil)
	req.Host = fmt.Sprintf("8080-%s.wrenn.test", sb.Id)
	req.Header.Set("X-Access-Token", token)
	hresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if hresp.StatusCode != http.StatusOK || string(hb) != "hello-from-guest\n" {
		t.Fatalf("host-header proxy: %s %q", hresp.Status, hb)
	}

	// Pause and resume keep the server (and its state) alive.
	c.json(t, "POST", path+"/pause", nil, http.StatusOK, &sb)
	if sb.State != api.SandboxStatePaused {
		t.Fatalf("after pause: %s", sb.State)
	}
	c.json(t, "POST", path+"/resume", nil, http.StatusOK, &sb)
	if sb.State != api.SandboxStateRunning {
		t.Fatalf("after resume: %s", sb.State)
	}
	if body := pollProxy(t, st.URL+portPath, token); body != "hello-from-guest\n" {
		t.Fatalf("after resume, through the proxy: %q", body)
	}

	// Delete; the sandbox is then stopped and its routes answer 409/404.
	resp = c.do(t, "DELETE", path, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %s", resp.Status)
	}
	c.json(t, "GET", path, nil, http.StatusOK, &sb)
	if sb.State != api.SandboxStateStopped {
		t.Fatalf("after delete: %s", sb.State)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// pollProxy GETs url with the sandbox's token until the guest answers 200
// (the server may still be starting), for up to a minute.
func pollProxy(t *testing.T, url, token string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Access-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("proxy %s: %s %s", url, resp.Status, b)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("proxy %s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ptyJourney opens a terminal over WebSocket, resizes it, runs a command
// and reads its output.
func ptyJourney(t *testing.T, base, key, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := strings.Replace(base, "http://", "ws://", 1) + "/v1/sandboxes/" + id + "/pty?cols=80&rows=24"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	defer conn.CloseNow()
	resize, _ := json.Marshal(map[string]any{"type": "resize", "cols": 132, "rows": 43})
	if err := conn.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("stty size; echo pty-$((6*7)); exit\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("pty read (output so far %q): %v", out.String(), err)
		}
		if typ == websocket.MessageBinary {
			out.Write(b)
			continue
		}
		var ev struct {
			Type     string `json:"type"`
			ExitCode int    `json:"exit_code"`
		}
		if json.Unmarshal(b, &ev) == nil && ev.Type == "exit" {
			break
		}
	}
	if !strings.Contains(out.String(), "pty-42") || !strings.Contains(out.String(), "43 132") {
		t.Fatalf("pty output lacks the command's output or the new size: %q", out.String())
	}
}
