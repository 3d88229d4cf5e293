package envdclient_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/envd"
	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
)

const testTimeout = 30 * time.Second

// server is a real envd (internal/envd.Run in dev mode) on loopback.
type server struct {
	URL string
}

func newServer(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := envd.Config{Listener: ln, Dev: true, User: me(t)}
	go func() { done <- envd.Run(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("envd: %v", err)
		}
	})
	s := &server{URL: "http://" + ln.Addr().String()}
	// Run may still be wiring up when it is first dialled; the listener
	// already queues connections, so WaitReady succeeds as soon as it serves.
	wctx, wcancel := context.WithTimeout(ctx, testTimeout)
	defer wcancel()
	c := envdclient.New(s.URL)
	defer c.CloseIdleConnections()
	if err := c.WaitReady(wctx); err != nil {
		t.Fatalf("envd did not come up: %v", err)
	}
	return s
}

func me(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	return u.Username
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// transports runs a test over both h2c and HTTP/1.1.
var transports = []struct {
	name string
	opts []envdclient.Option
}{
	{name: "h2c"},
	{name: "http1", opts: []envdclient.Option{envdclient.WithHTTP1()}},
}

func newClient(t *testing.T, s *server, opts ...envdclient.Option) *envdclient.Client {
	c := envdclient.New(s.URL, append([]envdclient.Option{envdclient.WithUser(me(t))}, opts...)...)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestRun(t *testing.T) {
	s := newServer(t)
	cases := []struct {
		name       string
		req        envdclient.RunRequest
		stdin      string
		wantOut    string
		wantErr    string
		wantCode   int
		wantExited bool
	}{
		{name: "echo", req: envdclient.RunRequest{Cmd: "echo", Args: []string{"hello"}}, wantOut: "hello\n", wantExited: true},
		{name: "exit code and stderr", req: envdclient.RunRequest{Cmd: "sh", Args: []string{"-c", "echo out; echo err >&2; exit 3"}},
			wantOut: "out\n", wantErr: "err\n", wantCode: 3, wantExited: true},
		{name: "env and cwd", req: envdclient.RunRequest{Cmd: "sh", Args: []string{"-c", `echo "$FOO $(pwd)"`},
			Env: map[string]string{"FOO": "bar"}, Cwd: "/"}, wantOut: "bar /\n", wantExited: true},
		{name: "stdin", req: envdclient.RunRequest{Cmd: "tr", Args: []string{"a-z", "A-Z"}}, stdin: "shout\n",
			wantOut: "SHOUT\n", wantExited: true},
	}
	for _, tr := range transports {
		c := newClient(t, s, tr.opts...)
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				var out, errb bytes.Buffer
				req := tc.req
				req.Stdout, req.Stderr = &out, &errb
				if tc.stdin != "" {
					req.Stdin = strings.NewReader(tc.stdin)
				}
				res, err := c.Run(testCtx(t), req)
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if res.ExitCode != tc.wantCode || res.Exited != tc.wantExited {
					t.Errorf("result = %+v, want exit %d exited %v", res, tc.wantCode, tc.wantExited)
				}
				if out.String() != tc.wantOut || errb.String() != tc.wantErr {
					t.Errorf("stdout %q stderr %q, want %q %q", out.String(), errb.String(), tc.wantOut, tc.wantErr)
				}
			})
		}
	}
}

func TestRunLargeOutputInOrder(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	var out bytes.Buffer
	res, err := c.Run(testCtx(t), envdclient.RunRequest{Cmd: "seq", Args: []string{"1", "20000"}, Stdout: &out})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run: %+v %v", res, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 20000 {
		t.Fatalf("got %d lines, want 20000", len(lines))
	}
	for i, l := range lines {
		if want := strconv.Itoa(i + 1); l != want {
			t.Fatalf("line %d = %q, want %q", i, l, want)
		}
	}
}

func TestRunBigStdin(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	in := make([]byte, 1<<20)
	_, _ = rand.Read(in)
	var out bytes.Buffer
	res, err := c.Run(testCtx(t), envdclient.RunRequest{Cmd: "sha256sum", Stdin: bytes.NewReader(in), Stdout: &out})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run: %+v %v", res, err)
	}
	sum := sha256.Sum256(in)
	if got := strings.Fields(out.String()); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("guest sha256 %q, want %x", out.String(), sum)
	}
}

func TestBackgroundProcess(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx := testCtx(t)

	var out syncBuffer
	p, err := c.Start(ctx, envdclient.RunRequest{Cmd: "cat", Tag: "bg", OpenStdin: true, Stdout: &out})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()
	if p.PID() == 0 {
		t.Fatal("Start returned pid 0")
	}

	list, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	found := false
	for _, pi := range list {
		found = found || (pi.PID == p.PID() && pi.Tag == "bg" && pi.Cmd == "cat")
	}
	if !found {
		t.Fatalf("List = %+v, want pid %d tagged bg", list, p.PID())
	}

	// A second attachment by tag sees output produced from now on.
	var out2 syncBuffer
	p2, err := c.Connect(ctx, envdclient.ByTag("bg"), &out2, nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer p2.Close()
	if p2.PID() != p.PID() {
		t.Errorf("Connect pid = %d, want %d", p2.PID(), p.PID())
	}
	if err := p.SendStdin(ctx, []byte("ping\n")); err != nil {
		t.Fatalf("SendStdin: %v", err)
	}
	if err := p.CloseStdin(ctx); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	res, err := p.Wait(ctx)
	if err != nil || res.ExitCode != 0 || !res.Exited {
		t.Fatalf("Wait: %+v %v", res, err)
	}
	if _, err := p2.Wait(ctx); err != nil {
		t.Fatalf("Wait on reattached handle: %v", err)
	}
	if out.String() != "ping\n" || out2.String() != "ping\n" {
		t.Errorf("outputs %q and %q, want ping", out.String(), out2.String())
	}
}

func TestKill(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx := testCtx(t)
	p, err := c.Start(ctx, envdclient.RunRequest{Cmd: "sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()
	if err := p.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	res, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if res.Exited || res.ExitCode == 0 {
		t.Errorf("after SIGKILL result = %+v, want a signal death", res)
	}
}

func TestPTYResize(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx := testCtx(t)
	var out syncBuffer
	p, err := c.Start(ctx, envdclient.RunRequest{Cmd: "sh", OpenStdin: true, PTY: &envdclient.PTYSize{Cols: 80, Rows: 24}, Stdout: &out})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()
	if err := p.Resize(ctx, envdclient.PTYSize{Cols: 123, Rows: 45}); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	if err := p.SendStdin(ctx, []byte("stty size; exit\n")); err != nil {
		t.Fatalf("SendStdin: %v", err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if !strings.Contains(out.String(), "45 123") {
		t.Errorf("terminal output %q does not contain the new size 45 123", out.String())
	}
}

func TestRunContextEnds(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	_, err := c.Run(ctx, envdclient.RunRequest{Cmd: "sleep", Args: []string{"60"}, Tag: "doomed"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run past deadline: %v, want DeadlineExceeded", err)
	}
	// Run killed it: poll until envd no longer lists it.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := c.List(testCtx(t))
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		alive := false
		for _, pi := range list {
			alive = alive || pi.Tag == "doomed"
		}
		if !alive {
			return
		}
		select {
		case <-t.Context().Done():
			t.Fatal("process still listed")
		case <-tick.C:
		}
	}
}

func TestErrorKinds(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	dir := t.TempDir()
	cases := []struct {
		name string
		call func(ctx context.Context) error
		want error
	}{
		{name: "connect to missing pid", want: errdefs.ErrNotFound, call: func(ctx context.Context) error {
			_, err := c.Connect(ctx, envdclient.ByPID(1<<30), nil, nil)
			return err
		}},
		{name: "connect to missing tag", want: errdefs.ErrNotFound, call: func(ctx context.Context) error {
			_, err := c.Connect(ctx, envdclient.ByTag("nope"), nil, nil)
			return err
		}},
		{name: "empty command", want: errdefs.ErrInvalidArgument, call: func(ctx context.Context) error {
			_, err := c.Run(ctx, envdclient.RunRequest{})
			return err
		}},
		{name: "download missing file", want: errdefs.ErrNotFound, call: func(ctx context.Context) error {
			_, err := c.Download(ctx, filepath.Join(dir, "missing"))
			return err
		}},
		{name: "download empty path", want: errdefs.ErrInvalidArgument, call: func(ctx context.Context) error {
			_, err := c.Download(ctx, "")
			return err
		}},
		{name: "unknown user", want: errdefs.ErrInvalidArgument, call: func(ctx context.Context) error {
			_, err := c.Download(ctx, filepath.Join(dir, "x"), envdclient.AsUser("no-such-user-xyz"))
			return err
		}},
		{name: "unreachable envd", want: errdefs.ErrUnavailable, call: func(ctx context.Context) error {
			return envdclient.New("http://" + closedAddr(t)).Health(ctx)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(testCtx(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want kind %v", err, tc.want)
			}
		})
	}
}

func TestUploadDownload(t *testing.T) {
	s := newServer(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := newClient(t, s, tr.opts...)
			ctx := testCtx(t)
			path := filepath.Join(t.TempDir(), "sub", "blob")
			h := sha256.New()
			const size = 8 << 20
			if err := c.Upload(ctx, path, io.TeeReader(io.LimitReader(rand.Reader, size), h)); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			rc, err := c.Download(ctx, path)
			if err != nil {
				t.Fatalf("Download: %v", err)
			}
			defer rc.Close()
			h2 := sha256.New()
			n, err := io.Copy(h2, rc)
			if err != nil {
				t.Fatalf("read download: %v", err)
			}
			if n != size || !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
				t.Fatalf("downloaded %d bytes with a different hash, want %d identical", n, size)
			}
		})
	}
}

func TestInitAccessToken(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx := testCtx(t)
	if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "s3cret", EnvVars: map[string]string{"A": "1"}}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	// The client adopted the token.
	env, err := c.Envs(ctx)
	if err != nil || env["A"] != "1" {
		t.Fatalf("Envs = %v, %v; want A=1", env, err)
	}
	m, err := c.Metrics(ctx)
	if err != nil || m.CPUCount < 1 || m.MemTotal <= 0 || m.MemUsed <= 0 || m.MemUsed > m.MemTotal {
		t.Fatalf("Metrics = %+v, %v", m, err)
	}

	anon := envdclient.New(s.URL)
	t.Cleanup(anon.CloseIdleConnections)
	if err := anon.Health(ctx); err != nil {
		t.Fatalf("Health needs no token, got %v", err)
	}
	if _, err := anon.Envs(ctx); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("Envs without token: %v, want unauthenticated", err)
	}
	if _, err := anon.Run(ctx, envdclient.RunRequest{Cmd: "true"}); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Errorf("Run without token: %v, want unauthenticated", err)
	}
	anon.SetAccessToken("s3cret")
	if _, err := anon.Envs(ctx); err != nil {
		t.Errorf("Envs after SetAccessToken: %v", err)
	}
}

func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 4 {
			envdhttp.WriteError(w, errdefs.New(errdefs.ErrUnavailable, "starting"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	c := envdclient.New(srv.URL, envdclient.WithHTTP1())
	if err := c.WaitReady(testCtx(t)); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("health polled %d times, want 4", n)
	}

	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	err := envdclient.New("http://" + closedAddr(t)).WaitReady(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("WaitReady on nothing: %v, want deadline exceeded with the last unavailable error", err)
	}
}

func TestDialContextIsUsed(t *testing.T) {
	s := newServer(t)
	var dials atomic.Int32
	addr := strings.TrimPrefix(s.URL, "http://")
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	// The URL names an address only the dialer knows how to reach.
	c := envdclient.New("http://169.254.0.21:49983", envdclient.WithDialContext(dial), envdclient.WithUser(me(t)))
	t.Cleanup(c.CloseIdleConnections)
	var out bytes.Buffer
	if _, err := c.Run(testCtx(t), envdclient.RunRequest{Cmd: "echo", Args: []string{"via", "dialer"}, Stdout: &out}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if out.String() != "via dialer\n" || dials.Load() == 0 {
		t.Fatalf("out %q after %d dials", out.String(), dials.Load())
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestHTTPErrorKinds(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   error // nil: no kind
	}{
		{name: "kind wins over status", status: http.StatusConflict, body: `{"code":409,"kind":"already_exists","message":"exists"}`, want: errdefs.ErrAlreadyExists},
		{name: "e2b body without kind", status: http.StatusNotFound, body: `{"code":404,"message":"no such file"}`, want: errdefs.ErrNotFound},
		{name: "plain text 507", status: http.StatusInsufficientStorage, body: "disk full", want: errdefs.ErrResourceExhausted},
		{name: "401 empty body", status: http.StatusUnauthorized, want: errdefs.ErrUnauthenticated},
		{name: "502 from a proxy", status: http.StatusBadGateway, body: "<html>bad gateway</html>", want: errdefs.ErrUnavailable},
		{name: "opaque 500", status: http.StatusInternalServerError, body: `{"code":500,"kind":"internal","message":"boom"}`},
	}
	kinds := []error{errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument, errdefs.ErrFailedPrecondition,
		errdefs.ErrPermissionDenied, errdefs.ErrUnauthenticated, errdefs.ErrResourceExhausted, errdefs.ErrUnavailable}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			_, err := envdclient.New(srv.URL, envdclient.WithHTTP1()).Download(testCtx(t), "/x")
			if err == nil {
				t.Fatal("Download succeeded on an error status")
			}
			for _, k := range kinds {
				if errors.Is(err, k) != (k == tc.want) {
					t.Errorf("err %q: errors.Is(%v) = %v", err, k, !(k == tc.want))
				}
			}
		})
	}
}
