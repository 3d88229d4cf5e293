package envd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/wrenn/wrenn/proto/envd/filesystem"
	pb "github.com/wrenn/wrenn/proto/envd/process"
)

func TestHealth(t *testing.T) {
	e := startEnvd(t, nil)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			hc := c.new()
			resp, err := hc.Get(e.url + "/health")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent || resp.ProtoMajor != c.proto {
				t.Errorf("GET /health = %d over HTTP/%d, want 204 over HTTP/%d", resp.StatusCode, resp.ProtoMajor, c.proto)
			}
			code, body := do(t, hc, http.MethodPost, e.url+"/health", "-", nil)
			checkError(t, code, body, http.StatusMethodNotAllowed, "invalid_argument")
		})
	}
	// Still open, without a token, once a token is set.
	initEnvd(t, e, "-", map[string]any{"accessToken": "secret"})
	if code, body := do(t, http1(), http.MethodGet, e.url+"/health", "-", nil); code != http.StatusNoContent {
		t.Errorf("GET /health after /init = %d %s, want 204", code, body)
	}
}

// TestTokenRule checks every route against a missing, a wrong and the
// right token once /init has set one.
func TestTokenRule(t *testing.T) {
	e := startEnvd(t, nil)
	file := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(file, []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}

	httpRoutes := []struct {
		name, method, path string
		body               []byte
		okStatus           int
	}{
		{name: "envs", method: http.MethodGet, path: "/envs", okStatus: http.StatusOK},
		{name: "metrics", method: http.MethodGet, path: "/metrics", okStatus: http.StatusOK},
		{name: "init", method: http.MethodPost, path: "/init", body: []byte(`{}`), okStatus: http.StatusNoContent},
		{name: "files", method: http.MethodGet, path: "/files?path=" + url.QueryEscape(file), okStatus: http.StatusOK},
		{name: "unknown route", method: http.MethodGet, path: "/nope", okStatus: http.StatusNotFound},
	}
	rpcs := []struct {
		name string
		call func(hc *http.Client, token string) error
	}{
		{name: "process.List", call: func(hc *http.Client, token string) error {
			_, err := processClient(hc, e).List(context.Background(), withToken(&pb.ListRequest{}, token))
			return err
		}},
		{name: "filesystem.Stat", call: func(hc *http.Client, token string) error {
			_, err := filesystemClient(hc, e).Stat(context.Background(), withToken(&fspb.StatRequest{Path: file}, token))
			return err
		}},
	}
	tokens := []struct {
		name, token string
		ok          bool
	}{
		{name: "missing", token: "-"},
		{name: "empty", token: ""},
		{name: "wrong", token: "not-the-secret"},
		{name: "prefix", token: "secre"},
		{name: "right", token: "secret", ok: true},
	}

	// Before /init everything is open, as with E2B's envd.
	if code, body := do(t, http1(), http.MethodGet, e.url+"/envs", "-", nil); code != http.StatusOK {
		t.Fatalf("GET /envs before /init = %d %s, want 200", code, body)
	}
	initEnvd(t, e, "-", map[string]any{"accessToken": "secret"})

	for _, c := range clients {
		for _, tok := range tokens {
			for _, r := range httpRoutes {
				t.Run(fmt.Sprintf("%s/%s/%s", c.name, r.name, tok.name), func(t *testing.T) {
					code, body := do(t, c.new(), r.method, e.url+r.path, tok.token, r.body)
					if tok.ok {
						if code != r.okStatus {
							t.Errorf("status = %d (%s), want %d", code, body, r.okStatus)
						}
						return
					}
					checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")
				})
			}
			for _, r := range rpcs {
				t.Run(fmt.Sprintf("%s/%s/%s", c.name, r.name, tok.name), func(t *testing.T) {
					err := r.call(c.new(), tok.token)
					if tok.ok {
						if err != nil {
							t.Errorf("call with the right token: %v", err)
						}
						return
					}
					if connect.CodeOf(err) != connect.CodeUnauthenticated {
						t.Errorf("error = %v, want unauthenticated", err)
					}
				})
			}
		}
	}

	// A streaming RPC is guarded too.
	stream, err := processClient(h2c(), e).Start(context.Background(),
		withToken(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}}, "wrong"))
	if err == nil {
		for stream.Receive() {
			t.Error("streaming RPC with a wrong token delivered an event")
		}
		err = stream.Err()
		stream.Close()
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("Start with a wrong token: %v, want unauthenticated", err)
	}
}

func TestTokenRotation(t *testing.T) {
	e := startEnvd(t, nil)
	hc := http1()
	initEnvd(t, e, "-", map[string]any{"accessToken": "old"})

	// Rotating needs the current token.
	code, body := do(t, hc, http.MethodPost, e.url+"/init", "-", []byte(`{"accessToken":"new"}`))
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")
	code, body = do(t, hc, http.MethodPost, e.url+"/init", "wrong", []byte(`{"accessToken":"new"}`))
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")

	initEnvd(t, e, "old", map[string]any{"accessToken": "new"})
	code, body = do(t, hc, http.MethodGet, e.url+"/envs", "old", nil)
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")
	if code, body := do(t, hc, http.MethodGet, e.url+"/envs", "new", nil); code != http.StatusOK {
		t.Fatalf("GET /envs with the new token = %d %s", code, body)
	}
	if _, err := processClient(h2c(), e).List(context.Background(), withToken(&pb.ListRequest{}, "old")); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("List with the old token: %v, want unauthenticated", err)
	}

	// An /init without accessToken keeps the token.
	initEnvd(t, e, "new", map[string]any{"envVars": map[string]string{"A": "1"}})
	code, body = do(t, hc, http.MethodGet, e.url+"/envs", "-", nil)
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")

	// An empty accessToken removes it.
	initEnvd(t, e, "new", map[string]any{"accessToken": ""})
	if code, body := do(t, hc, http.MethodGet, e.url+"/envs", "-", nil); code != http.StatusOK {
		t.Errorf("GET /envs after clearing the token = %d %s, want 200", code, body)
	}
}

func getEnvs(t *testing.T, e *testEnvd, token string) map[string]string {
	t.Helper()
	code, body := do(t, h2c(), http.MethodGet, e.url+"/envs", token, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /envs = %d %s", code, body)
	}
	var env map[string]string
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("GET /envs body %q: %v", body, err)
	}
	return env
}

// TestInitEnvsAndProcesses checks that /init's variables show in /envs and
// in the environment of processes started afterwards, over both protocols.
func TestInitEnvsAndProcesses(t *testing.T) {
	e := startEnvd(t, nil)
	if env := getEnvs(t, e, "-"); len(env) != 0 {
		t.Errorf("GET /envs before /init = %v, want {}", env)
	}
	workdir := t.TempDir()
	body := map[string]any{
		"envVars":        map[string]string{"WRENN_A": "alpha", "WRENN_B": "with spaces = and more"},
		"accessToken":    "tok",
		"defaultWorkdir": workdir,
		"timestamp":      time.Now().Format(time.RFC3339Nano),
	}
	initEnvd(t, e, "-", body)
	want := map[string]string{"WRENN_A": "alpha", "WRENN_B": "with spaces = and more"}
	if env := getEnvs(t, e, "tok"); !maps.Equal(env, want) {
		t.Errorf("GET /envs = %v, want %v", env, want)
	}

	// Idempotence: the same body again (with the token it set) changes nothing.
	initEnvd(t, e, "tok", body)
	if env := getEnvs(t, e, "tok"); !maps.Equal(env, want) {
		t.Errorf("GET /envs after a repeated /init = %v, want %v", env, want)
	}

	// Later /init calls merge.
	initEnvd(t, e, "tok", map[string]any{"envVars": map[string]string{"WRENN_A": "again", "WRENN_C": "c"}})
	want = map[string]string{"WRENN_A": "again", "WRENN_B": "with spaces = and more", "WRENN_C": "c"}
	if env := getEnvs(t, e, "tok"); !maps.Equal(env, want) {
		t.Errorf("GET /envs after a merging /init = %v, want %v", env, want)
	}

	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			pc := processClient(c.new(), e)
			if got := run(t, pc, "tok", "printenv", "WRENN_A", "WRENN_B", "WRENN_C"); got != "again\nwith spaces = and more\nc\n" {
				t.Errorf("printenv = %q", got)
			}
			if got := run(t, pc, "tok", "pwd"); strings.TrimSpace(got) != workdir {
				t.Errorf("pwd = %q, want the /init workdir %s", got, workdir)
			}
		})
	}
}

func TestInitRejectsBadInput(t *testing.T) {
	e := startEnvd(t, func(c *Config) { c.MaxInitBytes = 4096 })
	big := `{"envVars":{"X":"` + strings.Repeat("x", 5000) + `"}}`
	tests := []struct {
		name     string
		body     string
		chunked  bool // hide the length so the limit is hit while reading
		wantCode int
		wantKind string
	}{
		{name: "unknown default user", body: `{"defaultUser":"no-such-user-wrenn","envVars":{"LEAK":"1"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "not JSON", body: `{"envVars":`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "wrong type", body: `{"envVars":["a"]}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "trailing data", body: `{} {"envVars":{"LEAK":"1"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "bad timestamp", body: `{"timestamp":"yesterday"}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "relative workdir", body: `{"defaultWorkdir":"rel/dir","envVars":{"LEAK":"1"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "env name with =", body: `{"envVars":{"A=B":"1"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "empty env name", body: `{"envVars":{"":"1"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "env value with NUL", body: `{"envVars":{"A":"x\u0000y"}}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "token with newline", body: `{"accessToken":"a\nb"}`, wantCode: 400, wantKind: "invalid_argument"},
		{name: "oversize with length", body: big, wantCode: 413, wantKind: "resource_exhausted"},
		{name: "oversize chunked", body: big, chunked: true, wantCode: 413, wantKind: "resource_exhausted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				rd = io.MultiReader(rd) // no known length: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, e.url+"/init", rd)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http1().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			checkError(t, resp.StatusCode, body, tt.wantCode, tt.wantKind)
		})
	}
	code, body := do(t, http1(), http.MethodGet, e.url+"/init", "-", nil)
	checkError(t, code, body, http.StatusMethodNotAllowed, "invalid_argument")

	// None of the rejected bodies changed anything.
	if env := getEnvs(t, e, "-"); len(env) != 0 {
		t.Errorf("rejected /init calls left env %v", env)
	}
	// An empty body is an empty, valid request.
	if code, body := do(t, http1(), http.MethodPost, e.url+"/init", "-", []byte{}); code != http.StatusNoContent {
		t.Errorf("POST /init with no body = %d %s, want 204", code, body)
	}
}

func TestInitDefaultUser(t *testing.T) {
	e := startEnvd(t, nil)
	me := currentUser(t)
	// Setting the user envd already runs as must work in dev mode.
	initEnvd(t, e, "-", map[string]any{"defaultUser": me})
	if got := strings.TrimSpace(run(t, processClient(h2c(), e), "-", "id", "-un")); got != me {
		t.Errorf("id -un = %q, want %q", got, me)
	}
}

func TestMetrics(t *testing.T) {
	e := startEnvd(t, nil)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, c.new(), http.MethodGet, e.url+"/metrics", "-", nil)
			if code != http.StatusOK {
				t.Fatalf("GET /metrics = %d %s", code, body)
			}
			// Decode by E2B's field names, not through our own struct, so a
			// renamed tag fails here.
			var m map[string]float64
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("metrics body %q: %v", body, err)
			}
			for _, k := range []string{"ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "disk_used", "disk_total"} {
				if _, ok := m[k]; !ok {
					t.Errorf("metrics lack %q: %s", k, body)
				}
			}
			if m["cpu_count"] <= 0 || m["cpu_used_pct"] < 0 || m["cpu_used_pct"] > 100 {
				t.Errorf("cpu fields: %s", body)
			}
			if !(m["mem_total"] > m["mem_used"] && m["mem_used"] > 0) {
				t.Errorf("memory fields: %s", body)
			}
			if !(m["disk_total"] >= m["disk_used"] && m["disk_used"] > 0) {
				t.Errorf("disk fields: %s", body)
			}
			if d := time.Since(time.Unix(int64(m["ts"]), 0)); d.Abs() > time.Minute {
				t.Errorf("ts is %v off", d)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	s, err := newServer(Config{Dev: true, User: currentUser(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.closeServices()
	if s.cfg.MaxMessageBytes != 16<<20 || s.cfg.MaxInitBytes != 1<<20 || s.cfg.Addr != ":49983" || s.cfg.ShutdownTimeout != DefaultShutdownTimeout {
		t.Errorf("defaults = %+v", s.cfg)
	}
	if s.canSetClock {
		t.Error("dev mode may set the clock")
	}
}

// TestOversizeConnectRequest sends a message over the cap. The cap is
// lowered to 1 MiB to keep the test quick under -race; TestConfigDefaults
// checks the 16 MiB default.
func TestOversizeConnectRequest(t *testing.T) {
	const limit = 1 << 20
	e := startEnvd(t, func(c *Config) { c.MaxMessageBytes = limit })
	huge := strings.Repeat("a", limit+1024)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			fc := filesystemClient(c.new(), e)
			_, err := fc.Stat(context.Background(), withToken(&fspb.StatRequest{Path: "/" + huge}, "-"))
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Errorf("oversize Stat: %v, want resource_exhausted", err)
			}
			// The server is still fine.
			if _, err := fc.Stat(context.Background(), withToken(&fspb.StatRequest{Path: "/"}, "-")); err != nil {
				t.Errorf("Stat after an oversize request: %v", err)
			}
		})
	}
}

func TestFilesSignature(t *testing.T) {
	e := startEnvd(t, nil)
	file := filepath.Join(t.TempDir(), "signed.txt")
	if err := os.WriteFile(file, []byte("signed content"), 0o644); err != nil {
		t.Fatal(err)
	}
	const token = "sig-secret"
	initEnvd(t, e, "-", map[string]any{"accessToken": token})

	// E2B's scheme, written out independently of the server's code.
	sign := func(path, op, user, exp string) string {
		s := path + ":" + op + ":" + user + ":" + token
		if exp != "" {
			s += ":" + exp
		}
		sum := sha256.Sum256([]byte(s))
		return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
	}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	tests := []struct {
		name  string
		query url.Values
		want  int
	}{
		{name: "valid", query: url.Values{"path": {file}, "signature": {sign(file, "read", "", "")}}, want: 200},
		{name: "valid with expiry", query: url.Values{"path": {file}, "signature": {sign(file, "read", "", future)}, "signature_expiration": {future}}, want: 200},
		{name: "expired", query: url.Values{"path": {file}, "signature": {sign(file, "read", "", past)}, "signature_expiration": {past}}, want: 401},
		{name: "other path", query: url.Values{"path": {"/etc/passwd"}, "signature": {sign(file, "read", "", "")}}, want: 401},
		{name: "write signature used to read", query: url.Values{"path": {file}, "signature": {sign(file, "write", "", "")}}, want: 401},
		{name: "garbage", query: url.Values{"path": {file}, "signature": {"v1_nope"}}, want: 401},
		{name: "bad expiry", query: url.Values{"path": {file}, "signature": {sign(file, "read", "", "x")}, "signature_expiration": {"x"}}, want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, http1(), http.MethodGet, e.url+"/files?"+tt.query.Encode(), "-", nil)
			if tt.want == 200 {
				if code != 200 || string(body) != "signed content" {
					t.Errorf("GET /files = %d %q, want 200 with the file", code, body)
				}
				return
			}
			checkError(t, code, body, tt.want, "unauthenticated")
		})
	}
	// A signature does not open other routes.
	q := url.Values{"path": {file}, "signature": {sign(file, "read", "", "")}}
	code, body := do(t, http1(), http.MethodGet, e.url+"/envs?"+q.Encode(), "-", nil)
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")
}

// TestGracefulShutdown cancels Run while a process streams output: Run
// returns nil promptly, the stream ends, and the port is closed.
func TestGracefulShutdown(t *testing.T) {
	e := startEnvd(t, nil)
	pc := processClient(h2c(), e)
	stream, err := pc.Start(context.Background(), withToken(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"600"}}}, "-"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetEvent().GetStart() == nil {
		t.Fatalf("no start event: %v", stream.Err())
	}
	pid := stream.Msg().GetEvent().GetStart().GetPid()

	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	if d := time.Since(start); d > DefaultShutdownTimeout {
		t.Errorf("shutdown took %v, longer than the %v grace period", d, DefaultShutdownTimeout)
	}
	t.Logf("shutdown with a live process stream took %v", time.Since(start))
	for stream.Receive() {
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("process %d still exists after shutdown (stat: %v)", pid, err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.url, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("envd still accepts connections after shutdown")
	}
}

// TestPortForwarding runs envd with a forward address: a loopback server
// becomes reachable there, envd's own port never is.
func TestPortForwarding(t *testing.T) {
	fwd := netip.MustParseAddr("127.0.0.2")
	e := startEnvd(t, func(c *Config) {
		c.ForwardAddrs = []netip.Addr{fwd}
		c.ForwardInterval = 20 * time.Millisecond
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "forwarded")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(fwd, uint16(port)))

	var got []byte
	waitFor(t, "forward to appear", func() bool {
		resp, err := http1().Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		got, _ = io.ReadAll(resp.Body)
		return true
	})
	if string(got) != "forwarded" {
		t.Errorf("through the forward: %q", got)
	}
	own := netip.AddrPortFrom(fwd, uint16(e.port)).String()
	if c, err := net.DialTimeout("tcp", own, time.Second); err == nil {
		c.Close()
		t.Errorf("envd's own port is forwarded at %s", own)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	me := currentUser(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no user", cfg: Config{Dev: true}},
		{name: "unknown user", cfg: Config{Dev: true, User: "no-such-user-wrenn"}},
		{name: "relative workdir", cfg: Config{Dev: true, User: me, Workdir: "tmp"}},
		{name: "wildcard forward address", cfg: Config{Dev: true, User: me, ForwardAddrs: []netip.Addr{netip.IPv4Unspecified()}}},
		{name: "address in use", cfg: Config{Dev: true, User: me}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if tt.name == "address in use" {
				tt.cfg.Addr = ln.Addr().String()
			} else {
				tt.cfg.Listener = ln
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := Run(ctx, tt.cfg, nil); err == nil {
				t.Error("Run succeeded, want an error")
			} else {
				t.Logf("Run: %v", err)
			}
		})
	}
}

// TestInitSetsClock checks when /init resets the clock, with a recording
// setter in place of clock_settime.
func TestInitSetsClock(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		canSet  bool
		ts      time.Time
		setErr  error
		wantSet bool
	}{
		{name: "an hour behind", canSet: true, ts: now.Add(time.Hour), wantSet: true},
		{name: "an hour ahead", canSet: true, ts: now.Add(-time.Hour), wantSet: true},
		{name: "within a second", canSet: true, ts: now.Add(900 * time.Millisecond)},
		{name: "dev mode never", canSet: false, ts: now.Add(time.Hour)},
		{name: "failure still 204", canSet: true, ts: now.Add(time.Hour), setErr: errors.New("EPERM"), wantSet: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newServer(Config{Dev: true, User: currentUser(t)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.closeServices()
			var set []time.Time
			s.canSetClock = tt.canSet
			s.now = func() time.Time { return now }
			s.setClock = func(ts time.Time) error { set = append(set, ts); return tt.setErr }

			body, _ := json.Marshal(map[string]any{"timestamp": tt.ts.Format(time.RFC3339Nano), "envVars": map[string]string{"K": "v"}})
			rec := httptest.NewRecorder()
			s.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/init", bytes.NewReader(body)))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("POST /init = %d %s", rec.Code, rec.Body)
			}
			if tt.wantSet != (len(set) == 1) || (tt.wantSet && !set[0].Equal(tt.ts)) {
				t.Errorf("clock set to %v, want set=%v to %v", set, tt.wantSet, tt.ts)
			}
			if s.defs.Env()["K"] != "v" {
				t.Error("env not applied alongside the timestamp")
			}
		})
	}
}

// TestCORS checks that a browser preflight passes without a token and that
// real cross-origin responses carry the CORS headers.
func TestCORS(t *testing.T) {
	e := startEnvd(t, nil)
	initEnvd(t, e, "-", map[string]any{"accessToken": "tok"})

	req, _ := http.NewRequest(http.MethodOptions, e.url+"/process.Process/List", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,x-access-token,connect-protocol-version")
	resp, err := http1().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "x-access-token") ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight = %d %v", resp.StatusCode, resp.Header)
	}

	req, _ = http.NewRequest(http.MethodGet, e.url+"/envs", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set(accessTokenHeader, "tok")
	resp, err = http1().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Grpc-Status") {
		t.Errorf("cross-origin GET /envs = %d %v", resp.StatusCode, resp.Header)
	}

	// An OPTIONS that is not a preflight still needs the token.
	code, body := do(t, http1(), http.MethodOptions, e.url+"/envs", "-", nil)
	checkError(t, code, body, http.StatusUnauthorized, "unauthenticated")
}

// TestShutdownFinishesInFlightRequest cancels Run while an upload is still
// sending its body: the upload completes and Run returns nil.
func TestShutdownFinishesInFlightRequest(t *testing.T) {
	e := startEnvd(t, nil)
	dst := filepath.Join(t.TempDir(), "upload.bin")
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, e.url+"/files?path="+url.QueryEscape(dst), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http1().Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		resp.Body.Close()
		res <- result{code: resp.StatusCode}
	}()
	if _, err := pw.Write([]byte("first half,")); err != nil {
		t.Fatal(err)
	}
	// The request is in flight once the handler has created its temporary
	// file beside the destination.
	waitFor(t, "upload to start", func() bool {
		m, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), "*"))
		return len(m) > 0
	})

	stopped := make(chan error, 1)
	go func() { stopped <- e.stop() }()
	// Let shutdown begin: new connections are refused once the listener
	// is closed.
	waitFor(t, "listener to close", func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.url, "http://"), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if _, err := pw.Write([]byte("second half")); err != nil {
		t.Fatal(err)
	}
	pw.Close()

	if r := <-res; r.err != nil || r.code != http.StatusOK {
		t.Fatalf("in-flight upload = %d, %v; want 200", r.code, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "first half,second half" {
		t.Errorf("uploaded file = %q, %v", b, err)
	}
}
