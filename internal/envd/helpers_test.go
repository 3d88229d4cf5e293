package envd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
	pb "github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// testEnvd is a real envd served on a random loopback port in dev mode.
type testEnvd struct {
	url    string
	port   int
	cancel context.CancelFunc
	done   chan error
}

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	return u.Username
}

// startEnvd runs Run on 127.0.0.1:0 until the test ends; edit may adjust
// the config first.
func startEnvd(t *testing.T, edit func(*Config)) *testEnvd {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listener: ln, Dev: true, User: currentUser(t)}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &testEnvd{
		url:    "http://" + ln.Addr().String(),
		port:   ln.Addr().(*net.TCPAddr).Port,
		cancel: cancel,
		done:   make(chan error, 1),
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { e.done <- Run(ctx, cfg, logger) }()
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("envd Run: %v", err)
		}
	})
	waitFor(t, "envd health", func() bool {
		resp, err := http1().Get(e.url + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent
	})
	return e
}

// stop cancels Run and returns its result; calling it twice is fine.
func (e *testEnvd) stop() error {
	e.cancel()
	select {
	case err, ok := <-e.done:
		if ok {
			close(e.done)
		}
		return err
	case <-time.After(30 * time.Second):
		return context.DeadlineExceeded
	}
}

func http1() *http.Client {
	return &http.Client{Transport: &http.Transport{}, Timeout: 60 * time.Second}
}

// h2c returns a client that speaks only prior-knowledge cleartext HTTP/2.
func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 60 * time.Second}
}

var clients = []struct {
	name  string
	new   func() *http.Client
	proto int
}{
	{name: "http1", new: http1, proto: 1},
	{name: "h2c", new: h2c, proto: 2},
}

// do sends one plain HTTP request, with the token header unless token is
// "-", and returns the status and body.
func do(t *testing.T, hc *http.Client, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "-" {
		req.Header.Set(accessTokenHeader, token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// initEnvd posts body to /init and fails the test unless it returns 204.
func initEnvd(t *testing.T, e *testEnvd, token string, body any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	if code, resp := do(t, http1(), http.MethodPost, e.url+"/init", token, b); code != http.StatusNoContent {
		t.Fatalf("POST /init = %d %s, want 204", code, resp)
	}
}

// errorBody decodes envd's JSON error and checks its status and kind.
func checkError(t *testing.T, code int, body []byte, wantCode int, wantKind string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("status = %d (%s), want %d", code, body, wantCode)
	}
	var eb envdhttp.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if eb.Code != wantCode || eb.Kind != wantKind || eb.Message == "" {
		t.Errorf("error body = %+v, want code %d kind %s and a message", eb, wantCode, wantKind)
	}
}

func withToken[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if token != "-" {
		req.Header().Set(accessTokenHeader, token)
	}
	return req
}

func processClient(hc *http.Client, e *testEnvd) processconnect.ProcessClient {
	return processconnect.NewProcessClient(hc, e.url)
}

func filesystemClient(hc *http.Client, e *testEnvd) filesystemconnect.FilesystemClient {
	return filesystemconnect.NewFilesystemClient(hc, e.url)
}

// run starts cmd through the process service and returns its stdout once
// it ends.
func run(t *testing.T, pc processconnect.ProcessClient, token, cmd string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := pc.Start(ctx, withToken(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: cmd, Args: args}}, token))
	if err != nil {
		t.Fatalf("start %s: %v", cmd, err)
	}
	defer stream.Close()
	var out strings.Builder
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			out.Write(d.GetStdout())
		}
		if end := ev.GetEnd(); end != nil {
			if end.GetExitCode() != 0 {
				t.Fatalf("%s exited %d: %s", cmd, end.GetExitCode(), end.GetError())
			}
			return out.String()
		}
	}
	t.Fatalf("stream of %s ended without an end event: %v", cmd, stream.Err())
	return ""
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
