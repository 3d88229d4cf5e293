package rest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/wrenn/wrenn/internal/envd/filesig"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// recordingTransport notes every request wrenn-cp sends to an agent.
type recordingTransport struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	reqs []*http.Request
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r.Clone(context.Background()))
	rt.mu.Unlock()
	return rt.rt.RoundTrip(r)
}

// last is the latest request the agent got (nil: none).
func (rt *recordingTransport) last() *http.Request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.reqs) == 0 {
		return nil
	}
	return rt.reqs[len(rt.reqs)-1]
}

func (rt *recordingTransport) count() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.reqs)
}

// record wraps agent's client so the test sees what reaches the agent.
func record(a *fakeAgent) *recordingTransport {
	rt := &recordingTransport{rt: a.Client.Transport}
	a.Client = &http.Client{Transport: rt}
	return rt
}

// sandboxRequest is a request for the sandbox's envd or port the way
// E2B's SDK sends it: host is "" for the header form (wrenn-cp's own
// URL with E2b-Sandbox-Id and E2b-Sandbox-Port), else the Host to use.
func sandboxRequest(t *testing.T, env *sbEnv, method, host, id string, port int, path string, hdr http.Header, body io.Reader) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, env.Srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	} else {
		req.Header.Set("E2b-Sandbox-Id", id)
		req.Header.Set("E2b-Sandbox-Port", fmt.Sprint(port))
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := env.Srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// edgeError is the error body of E2B's edge (its proxy in front of sandboxes).
type edgeError struct {
	SandboxID string `json:"sandboxId"`
	Message   string `json:"message"`
	Code      int    `json:"code"`
}

func readEdgeError(t *testing.T, resp *http.Response, status int) edgeError {
	t.Helper()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, data)
	}
	var e edgeError
	if err := json.Unmarshal(data, &e); err != nil || e.Code != status || e.Message == "" {
		t.Fatalf("body %s: want E2B's {sandboxId, message, code} (%v)", data, err)
	}
	return e
}

// headerTransport adds headers to every request (as the SDK's fetch
// wrapper does for its Connect transport).
type headerTransport struct {
	hdr http.Header
	rt  http.RoundTripper
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range h.hdr {
		r.Header[k] = vs
	}
	return h.rt.RoundTrip(r)
}

// processClient is a Connect client for envd's process service through
// wrenn-cp in the header form (E2B_SANDBOX_URL).
func processClient(env *sbEnv, id, token string) processconnect.ProcessClient {
	hdr := http.Header{"E2b-Sandbox-Id": {id}, "E2b-Sandbox-Port": {"49983"}}
	if token != "" {
		hdr.Set("X-Access-Token", token)
	}
	hc := &http.Client{Transport: headerTransport{hdr: hdr, rt: env.Srv.Client().Transport}}
	return processconnect.NewProcessClient(hc, env.Srv.URL)
}

// streamGap runs a process that writes "one", waits, writes "two", and
// reports how long after "one" arrived the stream ended: a proxy that
// buffered would deliver both at the end.
func streamGap(t *testing.T, pc processconnect.ProcessClient) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := pc.Start(ctx, connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{
		Cmd: "/bin/sh", Args: []string{"-c", "echo one; sleep 1.5; echo two"}}}))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer stream.Close()
	var first time.Time
	var out strings.Builder
	for stream.Receive() {
		if b := stream.Msg().GetEvent().GetData().GetStdout(); len(b) > 0 {
			if first.IsZero() {
				first = time.Now()
			}
			out.Write(b)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if out.String() != "one\ntwo\n" || first.IsZero() {
		t.Fatalf("stdout %q", out.String())
	}
	return time.Since(first)
}

func TestEnvdProxy(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	rec := record(agent)
	sb := env.create(t, map[string]any{})
	token := *sb.AccessToken
	host := "49983-" + sb.Id + ".wrenn.test"
	tok := http.Header{"X-Access-Token": {token}}
	other := env.newTeam(t, "other")
	envdPath := "/sandboxes/" + sb.Id + "/envd"

	for _, form := range []struct{ name, host string }{{"host form", host}, {"header form", ""}} {
		t.Run(form.name+" reaches envd", func(t *testing.T) {
			resp := sandboxRequest(t, env, "GET", form.host, sb.Id, 49983, "/health", tok, nil)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("health: %d", resp.StatusCode)
			}
			got := rec.last()
			if got == nil || got.URL.Path != envdPath+"/health" {
				t.Fatalf("agent got %v, want %s/health", got.URL, envdPath)
			}
			for _, h := range []string{"X-Access-Token", "E2b-Sandbox-Id", "E2b-Sandbox-Port"} {
				if v := got.Header.Get(h); v != "" {
					t.Errorf("agent saw %s: %q", h, v)
				}
			}
		})
	}

	t.Run("files path and query, Basic auth kept", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "a b.txt")
		q := "/files?path=" + url.QueryEscape(dst) + "&username=user"
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"))
		hdr := http.Header{"X-Access-Token": {token}, "Authorization": {basic}, "Content-Type": {"application/octet-stream"}}
		resp := sandboxRequest(t, env, "POST", "", sb.Id, 49983, q, hdr, strings.NewReader("hello through wrenn-cp"))
		if resp.StatusCode/100 != 2 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("upload: %d %s", resp.StatusCode, b)
		}
		got := rec.last()
		if got.URL.Path != envdPath+"/files" || got.URL.Query().Get("path") != dst || got.URL.Query().Get("username") != "user" {
			t.Errorf("agent got %s", got.URL)
		}
		if got.Header.Get("Authorization") != basic {
			t.Errorf("envd's Basic authorization was not passed on: %q", got.Header.Get("Authorization"))
		}
		resp = sandboxRequest(t, env, "GET", host, sb.Id, 49983, q, hdr, nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "hello through wrenn-cp" {
			t.Errorf("download: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("header form wins over the API's routes", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/v1/sandboxes", "/v1/sandboxes/" + sb.Id + "/ports/8080/x"} {
			before := rec.count()
			sandboxRequest(t, env, "GET", "", sb.Id, 49983, p, tok, nil)
			if rec.count() != before+1 || rec.last().URL.Path != envdPath+p {
				t.Errorf("%s: agent got %v", p, rec.last().URL)
			}
		}
	})

	t.Run("team credentials", func(t *testing.T) {
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"))
		resp := sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health", http.Header{"X-Api-Key": {env.team.Key}, "Authorization": {basic}}, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("X-API-Key: %d", resp.StatusCode)
		}
		if got := rec.last(); got.Header.Get("X-Api-Key") != "" || got.Header.Get("Authorization") != basic {
			t.Errorf("agent saw key %q auth %q", got.Header.Get("X-Api-Key"), got.Header.Get("Authorization"))
		}
		resp = sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"Authorization": {"Bearer " + env.team.Key}}, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("Bearer: %d", resp.StatusCode)
		}
		if got := rec.last(); got.Header.Get("Authorization") != "" {
			t.Errorf("agent saw the team's key: %q", got.Header.Get("Authorization"))
		}
	})

	t.Run("refusals", func(t *testing.T) {
		before := rec.count()
		e := readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health", nil, nil), http.StatusUnauthorized)
		if e.SandboxID != sb.Id {
			t.Errorf("sandboxId %q", e.SandboxID)
		}
		readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"X-Access-Token": {"nope"}}, nil), http.StatusUnauthorized)
		// A token for another sandbox is a wrong token.
		readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"X-Access-Token": {token + "x"}}, nil), http.StatusUnauthorized)
		e = readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/files?path=/etc/passwd&signature=v1_abc", nil, nil), http.StatusUnauthorized)
		// The server checks signatures against the sealed token by default.
		if !strings.Contains(e.Message, "invalid or expired signature") {
			t.Errorf("signed URL refusal says %q", e.Message)
		}
		readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"X-Api-Key": {"wrn_nope"}}, nil), http.StatusUnauthorized)
		// Another team's sandbox looks exactly like a missing one.
		missing := readEdgeError(t, sandboxRequest(t, env, "GET", "", "nosuchsandbox", 49983, "/health", tok, nil), http.StatusBadGateway)
		cross := readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health", http.Header{"X-Api-Key": {other.Key}}, nil), http.StatusBadGateway)
		if strings.ReplaceAll(missing.Message, "nosuchsandbox", sb.Id) != cross.Message {
			t.Errorf("other team's sandbox %q, missing one %q", cross.Message, missing.Message)
		}
		// The team's key naming another team in X-Wrenn-Team reaches nothing.
		readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health",
			http.Header{"X-Api-Key": {env.team.Key}, "X-Wrenn-Team": {other.ID.String()}}, nil), http.StatusBadGateway)
		if rec.count() != before {
			t.Errorf("a refused request reached the agent")
		}
	})

	t.Run("connect errors", func(t *testing.T) {
		ctx := context.Background()
		_, err := processClient(env, sb.Id, "wrong").List(ctx, connect.NewRequest(&process.ListRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("wrong token: %v", err)
		}
		_, err = processClient(env, "nosuchsandbox", token).List(ctx, connect.NewRequest(&process.ListRequest{}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("missing sandbox: %v (the SDKs map Unavailable to 'sandbox not found / timed out')", err)
		}
		// A server stream refused before it starts.
		stream, err := processClient(env, sb.Id, "").Start(ctx, connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "true"}}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
			stream.Close()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("stream without token: %v", err)
		}
	})

	t.Run("process output streams", func(t *testing.T) {
		if gap := streamGap(t, processClient(env, sb.Id, token)); gap < time.Second {
			t.Errorf("the stream ended %v after its first output: buffered", gap)
		}
	})

	t.Run("paused and killed", func(t *testing.T) {
		env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/pause", env.team.Key, nil, http.StatusOK, nil)
		e := readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health", tok, nil), http.StatusBadGateway)
		if !strings.Contains(e.Message, "paused") {
			t.Errorf("paused: %q", e.Message)
		}
		env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/resume", env.team.Key, nil, http.StatusOK, nil)
		env.doJSON(t, "DELETE", "/v1/sandboxes/"+sb.Id, env.team.Key, nil, http.StatusNoContent, nil)
		readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/health", tok, nil), http.StatusBadGateway)
	})
}

// newSandboxEnvWith is newSandboxEnv with Deps changed by opts.
func newSandboxEnvWith(t *testing.T, opts ...func(*Deps)) *sbEnv {
	t.Helper()
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	te := newTestEnv(t, append([]func(*Deps){func(d *Deps) { d.Agents = fa }}, opts...)...)
	return &sbEnv{testEnv: te, agents: fa, guest: startGuest(t), team: te.newTeam(t, "proxy")}
}

// newResumeEnv is a sandbox env whose Deps.AutoResume calls *hook.
func newResumeEnv(t *testing.T) (*sbEnv, *atomic.Pointer[func(context.Context, uuid.UUID, string) error]) {
	t.Helper()
	hook := new(atomic.Pointer[func(context.Context, uuid.UUID, string) error])
	env := newSandboxEnvWith(t, func(d *Deps) {
		d.AutoResume = func(ctx context.Context, team uuid.UUID, id string) error { return (*hook.Load())(ctx, team, id) }
	})
	return env, hook
}

func TestEnvdSignedFileURLs(t *testing.T) {
	var tokens sync.Map // sandbox id -> token
	env := newSandboxEnvWith(t, func(d *Deps) {
		d.EnvdAccessToken = func(_ context.Context, id string) (string, error) {
			if v, ok := tokens.Load(id); ok {
				return v.(string), nil
			}
			return "", errors.New("no token")
		}
	})
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	token := *sb.AccessToken
	tokens.Store(sb.Id, token)
	host := "49983-" + sb.Id + ".wrenn.test"
	dst := filepath.Join(t.TempDir(), "signed.txt")
	now := env.Clock.Now().Unix()
	signed := func(op, tok string, exp int64) string {
		e := ""
		q := url.Values{"path": {dst}, "username": {"user"}}
		if exp != 0 {
			e = fmt.Sprint(exp)
			q.Set("signature_expiration", e)
		}
		q.Set("signature", filesig.Sign(dst, op, "user", tok, e))
		return "/files?" + q.Encode()
	}
	octet := http.Header{"Content-Type": {"application/octet-stream"}}

	resp := sandboxRequest(t, env, "POST", host, sb.Id, 49983, signed("write", token, now+60), octet, strings.NewReader("signed upload"))
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("signed upload: %d %s", resp.StatusCode, b)
	}
	resp = sandboxRequest(t, env, "GET", host, sb.Id, 49983, signed("read", token, 0), nil, nil)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "signed upload" {
		t.Errorf("signed download: %d %q", resp.StatusCode, b)
	}
	for name, path := range map[string]string{
		"expired":            signed("read", token, now-1),
		"read signature":     signed("read", token, 0), // used to write below
		"another token":      signed("read", "not-the-token", 0),
		"tampered path":      strings.Replace(signed("read", token, 0), "signed.txt", "other.txt", 1),
		"tampered username":  strings.Replace(signed("read", token, 0), "username=user", "username=root", 1),
		"extended lifetime":  strings.Replace(signed("read", token, now+60), fmt.Sprint(now+60), fmt.Sprint(now+6000), 1),
		"signature on /envs": strings.Replace(signed("read", token, 0), "/files", "/envs", 1),
	} {
		method := "GET"
		if name == "read signature" {
			method = "POST"
		}
		e := readEdgeError(t, sandboxRequest(t, env, method, host, sb.Id, 49983, path, octet, strings.NewReader("x")), http.StatusUnauthorized)
		if name != "signature on /envs" && !strings.Contains(e.Message, "signature") {
			t.Errorf("%s: %q", name, e.Message)
		}
	}
	// A token source that disagrees with the stored hash signs nothing.
	tokens.Store(sb.Id, "forged")
	readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, signed("read", "forged", 0), nil, nil), http.StatusUnauthorized)
}

func TestProxyAutoResume(t *testing.T) {
	env, hook := newResumeEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	token := *sb.AccessToken
	pause := func(t *testing.T, autoResume, memoryDropped bool) {
		t.Helper()
		env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/pause", env.team.Key, nil, http.StatusOK, nil)
		if _, err := env.Pool.Exec(context.Background(), `UPDATE sandboxes SET auto_resume = $2, memory_dropped = $3 WHERE id = $1`, sb.Id, autoResume, memoryDropped); err != nil {
			t.Fatal(err)
		}
	}
	var calls atomic.Int32
	resume := func(ctx context.Context, team uuid.UUID, id string) error {
		calls.Add(1)
		if team != env.team.ID || id != sb.Id {
			return fmt.Errorf("resume of %s/%s, want %s/%s", team, id, env.team.ID, sb.Id)
		}
		// Long enough that every request below arrives while it runs.
		time.Sleep(300 * time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "POST", env.Srv.URL+"/v1/sandboxes/"+id+"/resume", nil)
		req.Header.Set("Authorization", "Bearer "+env.team.Key)
		resp, err := env.Srv.Client().Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("resume: %s", resp.Status)
		}
		return nil
	}
	hook.Store(&resume)

	t.Run("one resume for concurrent requests", func(t *testing.T) {
		pause(t, true, false)
		const n = 12
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range n {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", env.Srv.URL+"/health", nil)
				req.Header.Set("X-Access-Token", token)
				switch i % 3 {
				case 0: // envd, host form
					req.Host = "49983-" + sb.Id + ".wrenn.test"
				case 1: // envd, header form
					req.Header.Set("E2b-Sandbox-Id", sb.Id)
					req.Header.Set("E2b-Sandbox-Port", "49983")
				case 2: // a user port
					req.Host = "8080-" + sb.Id + ".wrenn.test"
				}
				resp, err := env.Srv.Client().Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			})
		}
		wg.Wait()
		for i, st := range statuses {
			if want := map[bool]int{true: 200, false: 204}[i%3 == 2]; st != want {
				t.Errorf("request %d: %d, want %d", i, st, want)
			}
		}
		if c := calls.Load(); c != 1 {
			t.Errorf("AutoResume called %d times, want 1", c)
		}
		if st := env.state(t, sb.Id); st != stRunning {
			t.Errorf("state %s", st)
		}
	})

	t.Run("not without auto_resume or with memory dropped", func(t *testing.T) {
		for _, c := range []struct{ auto, dropped bool }{{false, false}, {true, true}} {
			pause(t, c.auto, c.dropped)
			before := calls.Load()
			resp := sandboxRequest(t, env, "GET", "49983-"+sb.Id+".wrenn.test", sb.Id, 49983, "/health", http.Header{"X-Access-Token": {token}}, nil)
			readEdgeError(t, resp, http.StatusBadGateway)
			resp = env.doHeader(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/8080/x", "", nil, http.Header{"X-Access-Token": {token}})
			wantError(t, resp, http.StatusConflict, "failed_precondition")
			if calls.Load() != before {
				t.Errorf("auto_resume=%v memory_dropped=%v: resumed", c.auto, c.dropped)
			}
			env.doJSON(t, "POST", "/v1/sandboxes/"+sb.Id+"/resume", env.team.Key, nil, http.StatusOK, nil)
		}
	})

	t.Run("a failed resume", func(t *testing.T) {
		failing := func(context.Context, uuid.UUID, string) error {
			return errdefs.New(errdefs.ErrResourceExhausted, "no host with room")
		}
		hook.Store(&failing)
		pause(t, true, false)
		e := readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"X-Access-Token": {token}}, nil), http.StatusBadGateway)
		if !strings.Contains(e.Message, "no host with room") {
			t.Errorf("message %q", e.Message)
		}
		// An internal failure's text stays in the log.
		internal := func(context.Context, uuid.UUID, string) error { return errors.New("pq: secret detail") }
		hook.Store(&internal)
		e = readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", http.Header{"X-Access-Token": {token}}, nil), http.StatusBadGateway)
		if strings.Contains(e.Message, "secret") || !strings.Contains(e.Message, "internal error") {
			t.Errorf("message %q", e.Message)
		}
		resp := env.doHeader(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/8080/x", "", nil, http.Header{"X-Access-Token": {token}})
		if msg := wantError(t, resp, http.StatusServiceUnavailable, "unavailable"); strings.Contains(msg, "secret") {
			t.Errorf("port: %q", msg)
		}
		// Unauthenticated traffic never resumes a sandbox.
		hook.Store(&resume)
		before := calls.Load()
		readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/health", nil, nil), http.StatusUnauthorized)
		if calls.Load() != before {
			t.Errorf("a request without credentials resumed the sandbox")
		}
	})
}

func TestUserPortE2BRules(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	rec := record(agent)
	sb := env.create(t, map[string]any{})
	token := *sb.AccessToken
	const traffic = "traffic-token-1"
	set := func(t *testing.T, public bool, trafficHash []byte, publicPorts []int32) {
		t.Helper()
		if _, err := env.Pool.Exec(context.Background(), `UPDATE sandboxes SET public_traffic = $2, traffic_token_hash = $3, public_ports = $4 WHERE id = $1`,
			sb.Id, public, trafficHash, publicPorts); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256([]byte(traffic))
	get := func(t *testing.T, host string, hdr http.Header) (int, string) {
		t.Helper()
		resp := sandboxRequest(t, env, "GET", host, sb.Id, 8080, "/x", hdr, nil)
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	portHost := "8080-" + sb.Id + ".wrenn.test"
	envdHost := "49983-" + sb.Id + ".wrenn.test"

	t.Run("public traffic", func(t *testing.T) {
		set(t, true, sum[:], []int32{})
		if st, b := get(t, portHost, nil); st != 200 || !strings.Contains(b, "GET /x") {
			t.Errorf("user port of a public sandbox: %d %s", st, b)
		}
		if st, _ := get(t, "", nil); st != 200 {
			t.Errorf("header form, user port: %d", st)
		}
		// Never envd.
		readEdgeError(t, sandboxRequest(t, env, "GET", envdHost, sb.Id, 49983, "/health", nil, nil), http.StatusUnauthorized)
		wantError(t, env.do(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/49983/health", "", nil), http.StatusForbidden, "permission_denied")
	})

	t.Run("traffic token", func(t *testing.T) {
		set(t, false, sum[:], []int32{})
		st, b := get(t, portHost, nil)
		if st != http.StatusForbidden || !strings.Contains(b, "e2b-traffic-access-token") {
			t.Errorf("no token: %d %s", st, b)
		}
		if st, _ := get(t, portHost, http.Header{"E2b-Traffic-Access-Token": {"wrong"}}); st != http.StatusForbidden {
			t.Errorf("wrong token: %d", st)
		}
		before := rec.count()
		st, b = get(t, portHost, http.Header{"e2b-traffic-access-token": {traffic}})
		if st != 200 || !strings.Contains(b, "GET /x") {
			t.Errorf("traffic token: %d %s", st, b)
		}
		if rec.count() != before+1 || rec.last().Header.Get("E2b-Traffic-Access-Token") != "" {
			t.Errorf("the guest saw the traffic token")
		}
		// The traffic token opens user ports, not envd.
		readEdgeError(t, sandboxRequest(t, env, "GET", envdHost, sb.Id, 49983, "/health", http.Header{"E2b-Traffic-Access-Token": {traffic}}, nil), http.StatusUnauthorized)
		// The access token and the team's key still pass.
		if st, _ := get(t, portHost, http.Header{"X-Access-Token": {token}}); st != 200 {
			t.Errorf("access token: %d", st)
		}
		if st, _ := get(t, portHost, http.Header{"X-Api-Key": {env.team.Key}}); st != 200 {
			t.Errorf("team key: %d", st)
		}
		// A WebSocket on the host name, with the traffic token.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(env.Srv.URL, "http")+"/ws", &websocket.DialOptions{
			Host: portHost, HTTPHeader: http.Header{"E2b-Traffic-Access-Token": {traffic}}})
		if err != nil {
			t.Fatalf("websocket with the traffic token: %v", err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || string(b) != "echo:hi" {
			t.Errorf("websocket read %q %v", b, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		// A public port needs nothing.
		set(t, false, sum[:], []int32{8080})
		if st, _ := get(t, portHost, nil); st != 200 {
			t.Errorf("public port: %d", st)
		}
	})

	t.Run("the guest app's own Authorization passes, the API's does not", func(t *testing.T) {
		set(t, true, nil, []int32{})
		if st, b := get(t, portHost, http.Header{"Authorization": {"Bearer guest-app-secret"}}); st != 200 || !strings.Contains(b, `auth="Bearer guest-app-secret"`) {
			t.Errorf("guest's bearer: %d %s", st, b)
		}
		if st, b := get(t, portHost, http.Header{"Authorization": {"Bearer " + env.team.Key}}); st != 200 || strings.Contains(b, env.team.Key) {
			t.Errorf("an API key reached the guest: %d %s", st, b)
		}
		set(t, false, nil, []int32{})
		if st, b := get(t, portHost, http.Header{"Authorization": {"Bearer " + env.team.Key}}); st != 200 || !strings.Contains(b, `auth=""`) {
			t.Errorf("team credentials reached the guest: %d %s", st, b)
		}
	})

	t.Run("without E2B's flags: Wrenn's rules", func(t *testing.T) {
		set(t, false, nil, []int32{49983})
		wantError(t, env.do(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/8080/x", "", nil), http.StatusUnauthorized, "unauthenticated")
		if st, _ := get(t, portHost, http.Header{"E2b-Traffic-Access-Token": {traffic}}); st != http.StatusForbidden {
			t.Errorf("traffic token on a sandbox without one: %d", st)
		}
		// envd's port in public_ports opens nothing.
		wantError(t, env.do(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/49983/health", "", nil), http.StatusForbidden, "permission_denied")
		readEdgeError(t, sandboxRequest(t, env, "GET", envdHost, sb.Id, 49983, "/health", nil, nil), http.StatusUnauthorized)
	})
}

// TestEnvdProxyAgentRefusals: when the agent knows better than the store
// (it paused or removed the sandbox on its own), its refusals of plain
// HTTP reach the SDK as E2B's 502; envd's own errors pass untouched.
func TestEnvdProxyAgentRefusals(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	sb := env.create(t, map[string]any{})
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch strings.TrimPrefix(r.URL.Path, "/sandboxes/"+sb.Id+"/envd") {
		case "/gone": // the real agent's shape (internal/agent/rpc writeProxyError)
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"not_found","message":"sandbox not found"}}`)
		case "/paused":
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error":{"code":"failed_precondition","message":"sandbox is paused, not running"}}`)
		case "/files": // envd's own
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"code":404,"kind":"not_found","message":"no such file"}`)
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	t.Cleanup(stub.Close)
	env.agents.mu.Lock()
	agent.URL, agent.Client = stub.URL, stub.Client()
	env.agents.mu.Unlock()
	host := "49983-" + sb.Id + ".wrenn.test"
	tok := http.Header{"X-Access-Token": {*sb.AccessToken}}

	if e := readEdgeError(t, sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/gone", tok, nil), http.StatusBadGateway); !strings.Contains(e.Message, "was not found") {
		t.Errorf("agent's 404: %q", e.Message)
	}
	if e := readEdgeError(t, sandboxRequest(t, env, "GET", "", sb.Id, 49983, "/paused", tok, nil), http.StatusBadGateway); !strings.Contains(e.Message, "not running") {
		t.Errorf("agent's 409: %q", e.Message)
	}
	resp := sandboxRequest(t, env, "GET", host, sb.Id, 49983, "/files?path=/nope", tok, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNotFound || string(b) != `{"code":404,"kind":"not_found","message":"no such file"}` {
		t.Errorf("envd's own 404 changed: %d %s", resp.StatusCode, b)
	}
}
