package wrenn_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
	"github.com/wrenn/wrenn/sdk/go/wrenntest"
)

func noEnv(string) string { return "" }

func newClient(t *testing.T, srv *wrenntest.Server, opts ...wrenn.Option) *wrenn.Client {
	t.Helper()
	opts = append([]wrenn.Option{wrenn.WithEnv(noEnv), wrenn.WithBaseURL(srv.URL), wrenn.WithAPIKey(srv.APIKey)}, opts...)
	c, err := wrenn.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewClientConfig(t *testing.T) {
	env := map[string]string{"WRENN_API_KEY": "wrn_env", "WRENN_API_URL": "https://env.example:9000/"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		opts    []wrenn.Option
		wantURL string
		wantErr string
	}{
		{name: "env", opts: []wrenn.Option{wrenn.WithEnv(getenv)}, wantURL: "https://env.example:9000"},
		{name: "options override env", opts: []wrenn.Option{wrenn.WithEnv(getenv), wrenn.WithBaseURL("http://opt:1")}, wantURL: "http://opt:1"},
		{name: "default URL", opts: []wrenn.Option{wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k")}, wantURL: wrenn.DefaultBaseURL},
		{name: "no key", opts: []wrenn.Option{wrenn.WithEnv(noEnv)}, wantErr: "no API key"},
		{name: "bad URL", opts: []wrenn.Option{wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k"), wrenn.WithBaseURL("localhost:8000")}, wantErr: "base URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := wrenn.NewClient(tt.opts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.BaseURL() != tt.wantURL {
				t.Errorf("BaseURL = %q, want %q", c.BaseURL(), tt.wantURL)
			}
		})
	}
}

func TestCreateRequestShape(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv, wrenn.WithUserAgent("myagent/2"))
	ctx := context.Background()
	sb, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{
		Template: "python", VCPUs: 2, MemoryMB: 1024, Timeout: 1500 * time.Millisecond,
		OnTimeout: api.Pause, Metadata: map[string]string{"user": "ada"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sb.ID == "" || sb.AccessToken == "" || sb.Details.State != api.SandboxStateRunning {
		t.Fatalf("sandbox = %+v", sb)
	}
	req := srv.LastRequest("POST", "/v1/sandboxes")
	if got := req.Header.Get("Authorization"); got != "Bearer "+srv.APIKey {
		t.Errorf("Authorization = %q", got)
	}
	if got := req.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := req.Header.Get("User-Agent"); !strings.HasPrefix(got, "myagent/2 wrenn-go-sdk/") {
		t.Errorf("User-Agent = %q", got)
	}
	var body map[string]any
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"template": "python", "vcpus": 2.0, "memory_mb": 1024.0, "timeout_sec": 2.0, "on_timeout": "pause", "metadata": map[string]any{"user": "ada"}}
	if len(body) != len(want) {
		t.Errorf("body = %v, want %v (unset fields must be omitted)", body, want)
	}
	for k, v := range want {
		if b, _ := json.Marshal(body[k]); string(b) != mustJSON(v) {
			t.Errorf("body[%s] = %s, want %s", k, b, mustJSON(v))
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestLifecycleCalls(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv, wrenn.WithDomain("wrenn.example.com"))
	ctx := context.Background()
	sb, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := sb.Pause(ctx); err != nil || d.State != api.SandboxStatePaused {
		t.Fatalf("pause = %v, %v", d, err)
	}
	if _, err := sb.Pause(ctx); !wrenn.IsConflict(err) || !errors.Is(err, wrenn.ErrFailedPrecondition) {
		t.Fatalf("second pause err = %v, want a conflict", err)
	}
	if d, err := sb.Resume(ctx); err != nil || d.State != api.SandboxStateRunning {
		t.Fatalf("resume = %v, %v", d, err)
	}
	if d, err := sb.Hibernate(ctx); err != nil || d.State != api.SandboxStateHibernated {
		t.Fatalf("hibernate = %v, %v", d, err)
	}
	if d, err := sb.Resume(ctx); err != nil || d.State != api.SandboxStateRunning {
		t.Fatalf("resume from hibernation = %v, %v", d, err)
	}
	if d, err := sb.SetTimeout(ctx, 90*time.Second); err != nil || d.TimeoutSec != 90 {
		t.Fatalf("timeout = %v, %v", d, err)
	}
	if got := string(srv.LastRequest("POST", "/v1/sandboxes/"+sb.ID+"/timeout").Body); got != `{"timeout_sec":90}` {
		t.Errorf("timeout body = %s", got)
	}
	forks, err := sb.Fork(ctx, 3)
	if err != nil || len(forks) != 3 {
		t.Fatalf("fork = %v, %v", forks, err)
	}
	if forks[0].Details.ForkedFrom == nil || *forks[0].Details.ForkedFrom != sb.ID || forks[0].AccessToken == "" {
		t.Errorf("fork details = %+v", forks[0].Details)
	}
	if m, err := sb.Metrics(ctx); err != nil || m.VmmMemoryBytes == nil {
		t.Fatalf("metrics = %v, %v", m, err)
	}
	if logs, err := sb.Logs(ctx, 100); err != nil || !strings.Contains(logs, sb.ID) {
		t.Fatalf("logs = %q, %v", logs, err)
	}
	if q := srv.LastRequest("GET", "/v1/sandboxes/"+sb.ID+"/logs").Query.Get("tail_bytes"); q != "100" {
		t.Errorf("tail_bytes = %q", q)
	}
	if got, want := sb.Host(8080), "8080-"+sb.ID+".wrenn.example.com"; got != want {
		t.Errorf("Host = %q, want %q", got, want)
	}
	if got, want := sb.PortURL(3000), srv.URL+"/v1/sandboxes/"+sb.ID+"/ports/3000/"; got != want {
		t.Errorf("PortURL = %q, want %q", got, want)
	}
	again, err := c.Sandboxes.Connect(ctx, sb.ID)
	if err != nil || again.ID != sb.ID || again.AccessToken != "" {
		t.Fatalf("connect = %+v, %v", again, err)
	}
	if err := sb.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Info(ctx); !wrenn.IsNotFound(err) {
		t.Fatalf("info after kill: %v, want not found", err)
	}
}

func TestListFollowsPages(t *testing.T) {
	srv := wrenntest.New(t)
	srv.PageSize = 2
	for i := range 5 {
		md := map[string]string{"n": "odd"}
		if i%2 == 0 {
			md["n"] = "even"
		}
		srv.AddSandbox(api.Sandbox{Metadata: md})
	}
	srv.AddSandbox(api.Sandbox{State: api.SandboxStatePaused, Metadata: map[string]string{"n": "even"}})
	c := newClient(t, srv)
	ctx := context.Background()

	all, err := c.Sandboxes.List(ctx, wrenn.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Fatalf("got %d sandboxes, want 6", len(all))
	}
	var lists int
	for _, r := range srv.Requests() {
		if r.Method == "GET" && r.Path == "/v1/sandboxes" {
			lists++
		}
	}
	if lists != 3 {
		t.Errorf("made %d list requests, want 3 pages", lists)
	}
	ids := map[string]bool{}
	for _, sb := range all {
		if ids[sb.ID] {
			t.Errorf("duplicate %s", sb.ID)
		}
		ids[sb.ID] = true
	}

	even, err := c.Sandboxes.List(ctx, wrenn.ListOptions{States: []api.SandboxState{api.SandboxStateRunning}, Metadata: map[string]string{"n": "even"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(even) != 3 {
		t.Fatalf("filtered: got %d, want 3", len(even))
	}
	q := srv.LastRequest("GET", "/v1/sandboxes").Query
	if q.Get("state") != "running" || q.Get("metadata") != "n=even" {
		t.Errorf("filter query = %v", q)
	}
}

func TestListStopsOnRepeatedCursor(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"sandboxes":[],"next_cursor":"same"}`)
	}))
	defer hs.Close()
	c, err := wrenn.NewClient(wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k"), wrenn.WithBaseURL(hs.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sandboxes.List(context.Background(), wrenn.ListOptions{}); err == nil || !strings.Contains(err.Error(), "repeated cursor") {
		t.Fatalf("err = %v, want repeated cursor", err)
	}
}

func TestErrorDecoding(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		retryAfter string
		check      func(error) bool
		wantCode   string
		wantMsg    string
		wantRetry  time.Duration
	}{
		{name: "not found", status: 404, body: `{"error":{"code":"not_found","message":"sandbox \"x\" not found"}}`, check: wrenn.IsNotFound, wantCode: "not_found", wantMsg: `sandbox "x" not found`},
		{name: "unauthorized", status: 401, body: `{"error":{"code":"unauthenticated","message":"bad key"}}`, check: wrenn.IsUnauthorized, wantCode: "unauthenticated", wantMsg: "bad key"},
		{name: "conflict", status: 409, body: `{"error":{"code":"already_exists","message":"dup"}}`, check: wrenn.IsConflict, wantCode: "already_exists", wantMsg: "dup"},
		{name: "rate limited", status: 429, body: `{"error":{"code":"rate_limited","message":"slow down"}}`, retryAfter: "7", check: wrenn.IsRateLimited, wantCode: "rate_limited", wantMsg: "slow down", wantRetry: 7 * time.Second},
		{name: "not JSON", status: 502, body: "<html>bad gateway</html>", check: wrenn.IsUnavailable, wantCode: "unavailable", wantMsg: "<html>bad gateway</html>"},
		{name: "empty body", status: 403, check: wrenn.IsPermissionDenied, wantCode: "permission_denied", wantMsg: "Forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer hs.Close()
			c, err := wrenn.NewClient(wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k"), wrenn.WithBaseURL(hs.URL))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Sandboxes.Connect(context.Background(), "x")
			if !tt.check(err) {
				t.Fatalf("check(%v) = false", err)
			}
			var e *wrenn.Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is not a *wrenn.Error", err)
			}
			if e.Status != tt.status || e.Code != tt.wantCode || e.Message != tt.wantMsg {
				t.Errorf("error = %+v, want %d %s %q", e, tt.status, tt.wantCode, tt.wantMsg)
			}
			if d, _ := wrenn.RetryAfter(err); d != tt.wantRetry {
				t.Errorf("RetryAfter = %v, want %v", d, tt.wantRetry)
			}
			if wrenn.IsNotFound(err) != (tt.wantCode == "not_found") {
				t.Errorf("IsNotFound disagrees with code %s", tt.wantCode)
			}
		})
	}
}

func TestFaultFromFake(t *testing.T) {
	srv := wrenntest.New(t)
	srv.AddFault(wrenntest.Fault{Method: "GET", Path: "/v1/templates", Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: "3", Times: 1})
	c := newClient(t, srv)
	ctx := context.Background()
	_, err := c.Templates.List(ctx)
	if d, ok := wrenn.RetryAfter(err); !wrenn.IsRateLimited(err) || !ok || d != 3*time.Second {
		t.Fatalf("first list: %v (retry %v)", err, d)
	}
	tpls, err := c.Templates.List(ctx)
	if err != nil || len(tpls) == 0 {
		t.Fatalf("second list = %v, %v", tpls, err)
	}
	bad, _ := wrenn.NewClient(wrenn.WithEnv(noEnv), wrenn.WithAPIKey("wrn_wrong"), wrenn.WithBaseURL(srv.URL))
	if _, err := bad.Templates.List(ctx); !wrenn.IsUnauthorized(err) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestRunWithoutCallbacksUsesPOST(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	res, err := sb.Commands.Run(ctx, "echo", wrenn.RunOptions{Args: []string{"hi", "there"}, Cwd: "/tmp", Env: map[string]string{"A": "1"}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.Stdout != "hi there\n" {
		t.Fatalf("result = %+v", res)
	}
	var body api.ExecRequest
	if err := json.Unmarshal(srv.LastRequest("POST", "/v1/sandboxes/"+sb.ID+"/exec").Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Cmd != "echo" || body.Args == nil || len(*body.Args) != 2 || *body.Cwd != "/tmp" || (*body.Env)["A"] != "1" || *body.TimeoutSec != 10 || body.Background != nil {
		t.Errorf("exec body = %s", srv.LastRequest("POST", "/v1/sandboxes/"+sb.ID+"/exec").Body)
	}
	res, err = sb.Commands.Run(ctx, "exit 3", wrenn.RunOptions{})
	if err != nil || res.ExitCode != 3 {
		t.Fatalf("exit 3: %+v, %v", res, err)
	}
}

func TestRunStreamsWithStdinAndExitCode(t *testing.T) {
	srv := wrenntest.New(t)
	srv.Exec = func(ctx context.Context, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) int {
		// Upper-case stdin to stdout, report its size on stderr.
		b, _ := io.ReadAll(stdin)
		_, _ = stdout.Write(bytes.ToUpper(b))
		_, _ = io.WriteString(stderr, "read "+strings.Repeat("x", len(b)%7)+"\n")
		return 42
	}
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	input := strings.Repeat("hello wrenn ", 10000) // several stdin frames
	var mu sync.Mutex
	var gotOut, gotErr bytes.Buffer
	res, err := sb.Commands.Run(ctx, "upper", wrenn.RunOptions{
		Stdin:    strings.NewReader(input),
		OnStdout: func(b []byte) { mu.Lock(); gotOut.Write(b); mu.Unlock() },
		OnStderr: func(b []byte) { mu.Lock(); gotErr.Write(b); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 42 || res.PID == 0 {
		t.Errorf("result exit %d pid %d", res.ExitCode, res.PID)
	}
	want := strings.ToUpper(input)
	if gotOut.String() != want || res.Stdout != want {
		t.Errorf("stdout: callback %d bytes, result %d bytes, want %d", gotOut.Len(), len(res.Stdout), len(want))
	}
	if gotErr.String() != res.Stderr || !strings.HasPrefix(res.Stderr, "read ") {
		t.Errorf("stderr = %q / %q", gotErr.String(), res.Stderr)
	}
}

func TestRunStreamErrorFrame(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	// An empty cmd makes the fake answer the ExecRequest with an error frame.
	_, err := sb.Commands.Run(ctx, "", wrenn.RunOptions{OnStdout: func([]byte) {}})
	if !wrenn.IsInvalidArgument(err) {
		t.Fatalf("err = %v, want invalid_argument from the error frame", err)
	}
	// A paused sandbox refuses the upgrade with an HTTP error.
	if _, err := sb.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = sb.Commands.Run(ctx, "echo", wrenn.RunOptions{OnStdout: func([]byte) {}})
	if !wrenn.IsConflict(err) {
		t.Fatalf("err = %v, want conflict from the refused handshake", err)
	}
}

func TestRunCancelKillsCommand(t *testing.T) {
	srv := wrenntest.New(t)
	started := make(chan struct{})
	killed := make(chan struct{})
	srv.Exec = func(ctx context.Context, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) int {
		_, _ = io.WriteString(stdout, "running\n")
		<-ctx.Done()
		close(killed)
		return 137
	}
	c := newClient(t, srv)
	sb, _ := c.Sandboxes.Create(context.Background(), wrenn.CreateOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	_, err := sb.Commands.Run(ctx, "server", wrenn.RunOptions{OnStdout: func([]byte) {
		once.Do(func() { close(started); cancel() })
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	<-started
	<-killed // the fake saw the kill (a hang here fails by test timeout)
}

func TestBackgroundStartWaitStdinKill(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})

	var out bytes.Buffer
	var mu sync.Mutex
	h, err := sb.Commands.Start(ctx, "cat", wrenn.RunOptions{Tag: "worker", OnStdout: func(b []byte) { mu.Lock(); out.Write(b); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if h.PID == 0 || h.Tag != "worker" {
		t.Fatalf("handle pid %d tag %q", h.PID, h.Tag)
	}
	body := string(srv.LastRequest("POST", "/v1/sandboxes/"+sb.ID+"/exec").Body)
	if !strings.Contains(body, `"background":true`) || !strings.Contains(body, `"tag":"worker"`) {
		t.Errorf("start body = %s", body)
	}
	procs, err := sb.Commands.List(ctx)
	if err != nil || len(procs) != 1 || procs[0].Pid != h.PID {
		t.Fatalf("list = %+v, %v", procs, err)
	}
	if err := h.SendStdin(ctx, []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if err := h.CloseStdin(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := h.Wait(ctx)
	if err != nil || res.ExitCode != 0 || res.Stdout != "ping\n" {
		t.Fatalf("wait = %+v, %v", res, err)
	}

	// A second one is reattached by tag and killed.
	h2, err := sb.Commands.Start(ctx, "sleep", wrenn.RunOptions{Tag: "sleeper"})
	if err != nil {
		t.Fatal(err)
	}
	h2.Disconnect()
	if _, err := h2.Wait(ctx); !errors.Is(err, wrenn.ErrDisconnected) {
		t.Fatalf("wait after disconnect: %v", err)
	}
	h3, err := sb.Commands.Connect(ctx, "sleeper", wrenn.ConnectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h3.PID != h2.PID {
		t.Errorf("reattached pid %d, want %d", h3.PID, h2.PID)
	}
	if err := h3.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(srv.LastRequest("POST", "/v1/sandboxes/"+sb.ID+"/processes/"+strconv.Itoa(h2.PID)+"/signal").Body); got != `{"signal":"SIGKILL"}` {
		t.Errorf("signal body = %s", got)
	}
	res, err = h3.Wait(ctx)
	if err != nil || res.ExitCode != 137 {
		t.Fatalf("wait after kill = %+v, %v", res, err)
	}
	if _, err := sb.Commands.Connect(ctx, "nobody", wrenn.ConnectOptions{}); !wrenn.IsNotFound(err) {
		t.Fatalf("connect to unknown tag: %v", err)
	}
}

func TestPTYFrames(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	var mu sync.Mutex
	var screen bytes.Buffer
	term, err := sb.PTY.Create(ctx, wrenn.PTYOptions{Cols: 100, Rows: 30, Cmd: "/bin/sh", OnData: func(b []byte) {
		mu.Lock()
		screen.Write(b)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := term.Resize(ctx, 120, 40); err != nil {
		t.Fatal(err)
	}
	if err := term.SendInput(ctx, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if err := term.SendInput(ctx, []byte("exit 5\r")); err != nil {
		t.Fatal(err)
	}
	code, err := term.Wait(ctx)
	if err != nil || code != 5 {
		t.Fatalf("wait = %d, %v", code, err)
	}
	mu.Lock()
	got := screen.String()
	mu.Unlock()
	for _, want := range []string{"fake pty 100x30 /bin/sh\r\n", "resized 120x40\r\n", "ls\r", "exit 5\r"} {
		if !strings.Contains(got, want) {
			t.Errorf("screen %q lacks %q", got, want)
		}
	}
	sess := srv.PTYSessions()
	if len(sess) != 1 || sess[0].Cols != 100 || sess[0].Rows != 30 || sess[0].Cmd != "/bin/sh" || len(sess[0].Resizes) != 1 || sess[0].Resizes[0] != [2]int{120, 40} || string(sess[0].Input) != "ls\rexit 5\r" {
		t.Errorf("session = %+v", sess)
	}
	// Kill on a finished terminal is harmless.
	if err := term.Kill(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPTYKill(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	term, err := sb.PTY.Create(ctx, wrenn.PTYOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := term.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := term.Wait(ctx); err == nil {
		t.Fatal("Wait after Kill returned no error")
	}
}

func TestFilesRoundTrip(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx := context.Background()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	fi, err := sb.Files.Write(ctx, "/home/user/dir/a.txt", strings.NewReader("alpha"))
	if err != nil || fi.Path != "/home/user/dir/a.txt" || *fi.Size != 5 {
		t.Fatalf("write = %+v, %v", fi, err)
	}
	req := srv.LastRequest("PUT", "/v1/sandboxes/"+sb.ID+"/files")
	if req.Query.Get("path") != "/home/user/dir/a.txt" || req.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("write request = %+v", req)
	}
	rc, err := sb.Files.Read(ctx, "/home/user/dir/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "alpha" {
		t.Errorf("read %q", b)
	}
	if _, err := sb.Files.MakeDir(ctx, "/home/user/dir/sub"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Files.MakeDir(ctx, "/home/user/dir/sub"); !wrenn.IsConflict(err) {
		t.Errorf("second mkdir: %v", err)
	}
	entries, err := sb.Files.List(ctx, "/home/user/dir", 2)
	if err != nil || len(entries) != 2 {
		t.Fatalf("list = %+v, %v", entries, err)
	}
	if srv.LastRequest("GET", "/v1/sandboxes/"+sb.ID+"/files/list").Query.Get("depth") != "2" {
		t.Error("depth not sent")
	}
	if _, err := sb.Files.Rename(ctx, "/home/user/dir/a.txt", "/home/user/dir/sub/b.txt"); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Files.Stat(ctx, "/home/user/dir/sub/b.txt")
	if err != nil || st.Type != api.File {
		t.Fatalf("stat = %+v, %v", st, err)
	}
	if ok, err := sb.Files.Exists(ctx, "/home/user/dir/a.txt"); ok || err != nil {
		t.Errorf("old name exists = %v, %v", ok, err)
	}
	if err := sb.Files.Remove(ctx, "/home/user/dir"); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Files.Read(ctx, "/home/user/dir/sub/b.txt"); !wrenn.IsNotFound(err) {
		t.Errorf("read removed: %v", err)
	}
}

func TestFilesWatch(t *testing.T) {
	srv := wrenntest.New(t)
	c := newClient(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sb, _ := c.Sandboxes.Create(ctx, wrenn.CreateOptions{})
	events, err := sb.Files.Watch(ctx, "/home/user", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Files.Write(ctx, "/home/user/x/y.txt", strings.NewReader("1")); err != nil {
		t.Fatal(err)
	}
	want := []api.FileEvent{{Type: api.Create, Name: "x"}, {Type: api.Create, Name: "x/y.txt"}, {Type: api.Write, Name: "x/y.txt"}}
	for _, w := range want {
		ev := <-events
		if ev.Err != nil || ev.FileEvent != w {
			t.Fatalf("event = %+v, want %+v", ev, w)
		}
	}
	cancel()
	for ev := range events {
		if ev.Err != nil {
			t.Fatalf("event after cancel: %v", ev.Err)
		}
	}
}

// TestFilesStreamLarge moves 64 MiB each way through a server that only
// hashes, and checks that the client allocated far less than the body.
func TestFilesStreamLarge(t *testing.T) {
	const size = 64 << 20
	var gotSum [32]byte
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "PUT":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			copy(gotSum[:], h.Sum(nil))
			_ = json.NewEncoder(w).Encode(api.FileInfo{Name: "big", Path: r.URL.Query().Get("path"), Type: api.File, Size: &n})
		case "GET":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, io.LimitReader(&pattern{}, size))
		}
	}))
	defer hs.Close()
	c, err := wrenn.NewClient(wrenn.WithEnv(noEnv), wrenn.WithAPIKey("k"), wrenn.WithBaseURL(hs.URL))
	if err != nil {
		t.Fatal(err)
	}
	sb := c.Sandboxes.Handle("big")
	ctx := context.Background()

	wantSum := sha256.Sum256(nil)
	{
		h := sha256.New()
		_, _ = io.Copy(h, io.LimitReader(&pattern{}, size))
		copy(wantSum[:], h.Sum(nil))
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, io.LimitReader(&pattern{}, size))
		pw.CloseWithError(err)
	}()
	fi, err := sb.Files.Write(ctx, "/big", pr)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := sb.Files.Read(ctx, "/big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)

	if *fi.Size != size || gotSum != wantSum {
		t.Errorf("upload: server got %d bytes, checksum match %v", *fi.Size, gotSum == wantSum)
	}
	var readSum [32]byte
	copy(readSum[:], h.Sum(nil))
	if n != size || readSum != wantSum {
		t.Errorf("download: %d bytes, checksum match %v", n, readSum == wantSum)
	}
	// Allocation covers client and server (same process); both stream, so
	// the total stays far below one copy of the body.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("allocated %d MiB moving 2x64 MiB: something buffers the body", alloc>>20)
	} else {
		t.Logf("allocated %.1f MiB moving 2x64 MiB", float64(alloc)/(1<<20))
	}
}

// pattern is an endless deterministic byte stream.
type pattern struct{ off int }

func (g *pattern) Read(p []byte) (int, error) {
	for i := range p {
		n := g.off + i
		p[i] = byte(n*7 + n>>11)
	}
	g.off += len(p)
	return len(p), nil
}
