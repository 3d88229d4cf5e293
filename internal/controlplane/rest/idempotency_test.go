package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// idemReply is one answer to an idempotent request.
type idemReply struct {
	status int
	body   []byte
}

// idemPost sends a JSON POST with an Idempotency-Key (none when key is
// "") as the team's API key, by Bearer or, on E2B's routes, X-API-Key.
// Safe from any goroutine: it returns errors instead of failing the test.
func (e *sbEnv) idemPost(path, cred, key string, body any) (idemReply, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return idemReply{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Srv.URL+path, bytes.NewReader(data))
	if err != nil {
		return idemReply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if isE2BPath(path) {
		req.Header.Set("X-API-Key", cred)
	} else {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := e.Srv.Client().Do(req)
	if err != nil {
		return idemReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return idemReply{status: resp.StatusCode, body: b}, err
}

// mustIdem is idemPost on the test goroutine, checking the status.
func (e *sbEnv) mustIdem(t *testing.T, path, cred, key string, body any, want int) idemReply {
	t.Helper()
	r, err := e.idemPost(path, cred, key, body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	if r.status != want {
		t.Fatalf("POST %s (key %q): %d, want %d: %s", path, key, r.status, want, r.body)
	}
	return r
}

func errorCodeOf(t *testing.T, body []byte) (code, msg string) {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return b.Error.Code, b.Error.Message
}

func (e *sbEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestIdempotentCreate: one key, one sandbox; the retry answers the same
// status and body (id and access token included); another request with
// the key is 422; another team's same key is its own.
func TestIdempotentCreate(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	body := map[string]any{"metadata": map[string]string{"app": "idem"}}

	first := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "create-1", body, http.StatusCreated)
	again := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "create-1", body, http.StatusCreated)
	if !bytes.Equal(first.body, again.body) {
		t.Errorf("replay differs:\nfirst %s\nagain %s", first.body, again.body)
	}
	var sb api.Sandbox
	if err := json.Unmarshal(first.body, &sb); err != nil || sb.AccessToken == nil || *sb.AccessToken == "" {
		t.Fatalf("first answer %s: %v", first.body, err)
	}
	if n := agent.Calls("CreateSandbox"); n != 1 {
		t.Errorf("agent created %d times, want 1", n)
	}
	if n := env.count(t, `SELECT count(*) FROM sandboxes WHERE team_id = $1`, env.team.ID); n != 1 {
		t.Errorf("%d sandbox rows, want 1", n)
	}

	// The same key with another body, or on another create route.
	r := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "create-1", map[string]any{"metadata": map[string]string{"app": "other"}}, http.StatusUnprocessableEntity)
	if code, _ := errorCodeOf(t, r.body); code != "idempotency_key_reused" {
		t.Errorf("reused key: code %q", code)
	}
	env.mustIdem(t, "/v2/sandboxes", env.team.Key, "create-1", map[string]any{"templateID": "base"}, http.StatusUnprocessableEntity)

	// Without a key, or with another, a create is a new sandbox.
	other := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "create-2", body, http.StatusCreated)
	var sb2 api.Sandbox
	_ = json.Unmarshal(other.body, &sb2)
	if sb2.Id == sb.Id {
		t.Errorf("another key replayed sandbox %s", sb.Id)
	}

	// Team B's same key is independent.
	teamB := env.newTeam(t, "team-b")
	env.addHost(t, func(h *hostSpec) { h.team = teamB.ID })
	b := env.mustIdem(t, "/v1/sandboxes", teamB.Key, "create-1", body, http.StatusCreated)
	var sbB api.Sandbox
	_ = json.Unmarshal(b.body, &sbB)
	if sbB.Id == "" || sbB.Id == sb.Id {
		t.Errorf("team B got sandbox %q (team A's is %s)", sbB.Id, sb.Id)
	}
	if n := env.count(t, `SELECT count(*) FROM sandboxes WHERE team_id = $1`, teamB.ID); n != 1 {
		t.Errorf("team B has %d sandboxes, want 1", n)
	}

	// E2B's create: the same sandbox and envd token again.
	e2bBody := map[string]any{"templateID": "base", "timeout": 60}
	e1 := env.mustIdem(t, "/v2/sandboxes", env.team.Key, "e2b-1", e2bBody, http.StatusCreated)
	env.mustIdem(t, "/sandboxes", env.team.Key, "e2b-1", e2bBody, http.StatusUnprocessableEntity)
	e3 := env.mustIdem(t, "/v2/sandboxes", env.team.Key, "e2b-1", e2bBody, http.StatusCreated)
	var x1, x3 api.E2BSandbox
	_ = json.Unmarshal(e1.body, &x1)
	_ = json.Unmarshal(e3.body, &x3)
	if x1.SandboxID == "" || x1.SandboxID != x3.SandboxID || deref(x1.EnvdAccessToken) == "" || deref(x1.EnvdAccessToken) != deref(x3.EnvdAccessToken) {
		t.Errorf("E2B replay: %s vs %s", e1.body, e3.body)
	}
}

// TestIdempotencyKeyValidation: a key must be 1-255 printable ASCII.
func TestIdempotencyKeyValidation(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	for _, key := range []string{strings.Repeat("k", 256), "caf\u00e9", "tab\there"} {
		r := env.mustIdem(t, "/v1/sandboxes", env.team.Key, key, map[string]any{}, http.StatusBadRequest)
		if code, _ := errorCodeOf(t, r.body); code != "invalid_argument" {
			t.Errorf("key %q: code %q", key, code)
		}
	}
	// An empty value is sent as a present, empty header.
	resp := env.doHeader(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{}, http.Header{"Idempotency-Key": {""}})
	wantError(t, resp, http.StatusBadRequest, "invalid_argument")
	resp = env.doHeader(t, "POST", "/v1/sandboxes", env.team.Key, map[string]any{}, http.Header{"Idempotency-Key": {"a", "b"}})
	wantError(t, resp, http.StatusBadRequest, "invalid_argument")
	if n := agent.Calls("CreateSandbox"); n != 0 {
		t.Errorf("bad keys reached the agent %d times", n)
	}
	env.mustIdem(t, "/v1/sandboxes", env.team.Key, strings.Repeat("k", 255), map[string]any{}, http.StatusCreated)
	env.mustIdem(t, "/v1/sandboxes", env.team.Key, " ~!printable ASCII, spaces too~ ", map[string]any{}, http.StatusCreated)
}

// TestIdempotentCreateConcurrent: 20 first requests with one key make one
// sandbox with one agent call, and all answer it.
func TestIdempotentCreateConcurrent(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	agent.failCreate = func(*hostagentv1.CreateSandboxRequest) error {
		time.Sleep(200 * time.Millisecond) // the others arrive meanwhile
		return nil
	}
	const n = 20
	replies := make([]idemReply, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			replies[i], errs[i] = env.idemPost("/v1/sandboxes", env.team.Key, "concurrent", map[string]any{"vcpus": 2})
		})
	}
	wg.Wait()
	ids := map[string]int{}
	tokens := map[string]int{}
	for i := range n {
		if errs[i] != nil || replies[i].status != http.StatusCreated {
			t.Fatalf("request %d: %v %d %s", i, errs[i], replies[i].status, replies[i].body)
		}
		var sb api.Sandbox
		if err := json.Unmarshal(replies[i].body, &sb); err != nil {
			t.Fatal(err)
		}
		ids[sb.Id]++
		tokens[deref(sb.AccessToken)]++
	}
	if len(ids) != 1 || len(tokens) != 1 {
		t.Errorf("answers name %d sandboxes and %d tokens, want 1 each: %v", len(ids), len(tokens), ids)
	}
	if c := agent.Calls("CreateSandbox"); c != 1 {
		t.Errorf("agent created %d times, want 1", c)
	}
	if c := env.count(t, `SELECT count(*) FROM sandboxes WHERE team_id = $1`, env.team.ID); c != 1 {
		t.Errorf("%d sandbox rows, want 1", c)
	}
	if c := env.count(t, `SELECT count(*) FROM idempotency_keys WHERE team_id = $1`, env.team.ID); c != 1 {
		t.Errorf("%d key rows, want 1", c)
	}
}

// TestIdempotentCreateInFlight: a retry while the first create is still
// starting waits for it and answers the same sandbox.
func TestIdempotentCreateInFlight(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	agent.failCreate = func(*hostagentv1.CreateSandboxRequest) error {
		entered <- struct{}{}
		<-release
		return nil
	}
	body := map[string]any{"timeout_sec": 77}
	type result struct {
		r   idemReply
		err error
	}
	first, retry := make(chan result, 1), make(chan result, 1)
	go func() {
		r, err := env.idemPost("/v1/sandboxes", env.team.Key, "in-flight", body)
		first <- result{r, err}
	}()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first create never reached the agent")
	}
	go func() {
		r, err := env.idemPost("/v1/sandboxes", env.team.Key, "in-flight", body)
		retry <- result{r, err}
	}()
	select {
	case r := <-retry:
		t.Fatalf("the retry answered while the first was in flight: %d %s %v", r.r.status, r.r.body, r.err)
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	a, b := <-first, <-retry
	if a.err != nil || b.err != nil || a.r.status != http.StatusCreated || b.r.status != http.StatusCreated {
		t.Fatalf("first %d %s %v; retry %d %s %v", a.r.status, a.r.body, a.err, b.r.status, b.r.body, b.err)
	}
	if !bytes.Equal(a.r.body, b.r.body) {
		t.Errorf("retry answered\n%s\nfirst\n%s", b.r.body, a.r.body)
	}
	if c := agent.Calls("CreateSandbox"); c != 1 {
		t.Errorf("agent created %d times, want 1", c)
	}
}

// TestIdempotentCreateFailureReplayed: a create whose agent call failed
// answers the same error to its retry, without calling the agent again.
func TestIdempotentCreateFailureReplayed(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	var mu sync.Mutex
	fail := errdefs.New(errdefs.ErrInvalidArgument, "template image is corrupt")
	agent.failCreate = func(*hostagentv1.CreateSandboxRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return fail
	}
	a := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "fails", map[string]any{}, http.StatusBadRequest)
	b := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "fails", map[string]any{}, http.StatusBadRequest)
	if !bytes.Equal(a.body, b.body) {
		t.Errorf("replayed error %s, first %s", b.body, a.body)
	}
	// A transient failure on every host: the first answered 503 with a
	// summary (the row keeps the hosts' own errors); so does the replay.
	mu.Lock()
	fail = errdefs.New(errdefs.ErrUnavailable, "qemu died")
	mu.Unlock()
	c := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "fails-503", map[string]any{}, http.StatusServiceUnavailable)
	d := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "fails-503", map[string]any{}, http.StatusServiceUnavailable)
	if !bytes.Equal(c.body, d.body) {
		t.Errorf("replayed error %s, first %s", d.body, c.body)
	}
	if _, msg := errorCodeOf(t, d.body); !strings.Contains(msg, "no host could start") {
		t.Errorf("replayed message %q", msg)
	}
	if n := agent.Calls("CreateSandbox"); n != 2 {
		t.Errorf("agent called %d times, want 2 (one per key)", n)
	}
	if n := env.count(t, `SELECT count(*) FROM sandboxes WHERE team_id = $1 AND state = 'error'`, env.team.ID); n != 2 {
		t.Errorf("%d failed rows, want 2", n)
	}
}

// TestIdempotentFork: a fork's retry answers the same forks; a failed
// fork its error.
func TestIdempotentFork(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	src := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + src.Id + "/fork"

	a := env.mustIdem(t, path, env.team.Key, "fork-1", map[string]any{"count": 2}, http.StatusCreated)
	b := env.mustIdem(t, path, env.team.Key, "fork-1", map[string]any{"count": 2}, http.StatusCreated)
	var fa, fb struct{ Sandboxes []api.Sandbox }
	_ = json.Unmarshal(a.body, &fa)
	_ = json.Unmarshal(b.body, &fb)
	if len(fa.Sandboxes) != 2 || len(fb.Sandboxes) != 2 {
		t.Fatalf("forks: %s / %s", a.body, b.body)
	}
	for i := range fa.Sandboxes {
		x, y := fa.Sandboxes[i], fb.Sandboxes[i]
		if x.Id != y.Id || deref(x.AccessToken) == "" || deref(x.AccessToken) != deref(y.AccessToken) {
			t.Errorf("fork %d: %s/%s, tokens equal: %v", i, x.Id, y.Id, deref(x.AccessToken) == deref(y.AccessToken))
		}
	}
	if n := agent.Calls("ForkSandbox"); n != 1 {
		t.Errorf("agent forked %d times, want 1", n)
	}
	if n := env.count(t, `SELECT count(*) FROM sandboxes WHERE forked_from = $1`, src.Id); n != 2 {
		t.Errorf("%d fork rows, want 2", n)
	}
	r := env.mustIdem(t, path, env.team.Key, "fork-1", map[string]any{"count": 3}, http.StatusUnprocessableEntity)
	if code, _ := errorCodeOf(t, r.body); code != "idempotency_key_reused" {
		t.Errorf("reused fork key: %q", code)
	}
	// The same key on another source is another request too.
	other := env.create(t, map[string]any{})
	env.mustIdem(t, "/v1/sandboxes/"+other.Id+"/fork", env.team.Key, "fork-1", map[string]any{"count": 2}, http.StatusUnprocessableEntity)

	// The agent no longer has the source: the fork fails, and so does its
	// retry, alike and without a second agent call.
	agent.mu.Lock()
	delete(agent.sandboxes, other.Id)
	agent.mu.Unlock()
	p2 := "/v1/sandboxes/" + other.Id + "/fork"
	c := env.mustIdem(t, p2, env.team.Key, "fork-2", map[string]any{}, http.StatusNotFound)
	d := env.mustIdem(t, p2, env.team.Key, "fork-2", map[string]any{}, http.StatusNotFound)
	if !bytes.Equal(c.body, d.body) {
		t.Errorf("replayed fork error %s, first %s", d.body, c.body)
	}
	if n := agent.Calls("ForkSandbox"); n != 2 {
		t.Errorf("agent forked %d times, want 2", n)
	}
}

// TestIdempotentSnapshot: a snapshot's retry answers the same template;
// a failed snapshot its error.
func TestIdempotentSnapshot(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	src := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + src.Id + "/snapshot"

	a := env.mustIdem(t, path, env.team.Key, "snap-1", map[string]any{"name": "snap-a"}, http.StatusCreated)
	b := env.mustIdem(t, path, env.team.Key, "snap-1", map[string]any{"name": "snap-a"}, http.StatusCreated)
	if !bytes.Equal(a.body, b.body) {
		t.Errorf("replay differs:\n%s\n%s", a.body, b.body)
	}
	if n := agent.Calls("SnapshotTemplate"); n != 1 {
		t.Errorf("agent snapshotted %d times, want 1", n)
	}
	r := env.mustIdem(t, path, env.team.Key, "snap-1", map[string]any{"name": "snap-b"}, http.StatusUnprocessableEntity)
	if code, _ := errorCodeOf(t, r.body); code != "idempotency_key_reused" {
		t.Errorf("reused snapshot key: %q", code)
	}
	// Without a key the same name is a conflict, as before.
	env.mustIdem(t, path, env.team.Key, "", map[string]any{"name": "snap-a"}, http.StatusConflict)

	agent.mu.Lock()
	delete(agent.sandboxes, src.Id)
	agent.mu.Unlock()
	c := env.mustIdem(t, path, env.team.Key, "snap-2", map[string]any{"name": "snap-c"}, http.StatusNotFound)
	d := env.mustIdem(t, path, env.team.Key, "snap-2", map[string]any{"name": "snap-c"}, http.StatusNotFound)
	if !bytes.Equal(c.body, d.body) {
		t.Errorf("replayed snapshot error %s, first %s", d.body, c.body)
	}
	if n := agent.Calls("SnapshotTemplate"); n != 2 {
		t.Errorf("agent snapshotted %d times, want 2", n)
	}
	if n := env.count(t, `SELECT count(*) FROM templates WHERE name = 'snap-c'`); n != 0 {
		t.Errorf("failed snapshot left %d template rows", n)
	}
}

// TestIdempotencyKeysExpire: after 24 h the sweeper deletes a key, and the
// key makes a new sandbox again.
func TestIdempotencyKeysExpire(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	svc := env.Server.Sandboxes()
	ctx := context.Background()
	first := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "expires", map[string]any{"timeout_sec": 86400}, http.StatusCreated)
	for i := range 3 {
		env.mustIdem(t, "/v1/sandboxes", env.team.Key, fmt.Sprintf("later-%d", i), map[string]any{"timeout_sec": 86400}, http.StatusCreated)
	}
	env.Clock.Advance(23 * time.Hour)
	if sw, err := svc.Sweep(ctx); err != nil || sw.ExpiredKeys != 0 {
		t.Fatalf("sweep at 23 h: %+v %v", sw, err)
	}
	// One more key, made now: it outlives the others.
	env.mustIdem(t, "/v1/sandboxes", env.team.Key, "young", map[string]any{"timeout_sec": 86400}, http.StatusCreated)
	env.Clock.Advance(time.Hour + time.Second)
	sw, err := svc.Sweep(ctx)
	if err != nil || sw.ExpiredKeys != 4 {
		t.Fatalf("sweep at 24 h: %+v %v (want 4 expired keys)", sw, err)
	}
	if n := env.count(t, `SELECT count(*) FROM idempotency_keys WHERE team_id = $1`, env.team.ID); n != 1 {
		t.Errorf("%d keys left, want 1 (young)", n)
	}
	if sw, err := svc.Sweep(ctx); err != nil || sw.ExpiredKeys != 0 {
		t.Errorf("second sweep: %+v %v", sw, err)
	}
	again := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "expires", map[string]any{"timeout_sec": 86400}, http.StatusCreated)
	var a, b api.Sandbox
	_ = json.Unmarshal(first.body, &a)
	_ = json.Unmarshal(again.body, &b)
	if a.Id == b.Id {
		t.Errorf("an expired key replayed sandbox %s", a.Id)
	}
	if n := agent.Calls("CreateSandbox"); n != 6 {
		t.Errorf("agent created %d times, want 6", n)
	}
}

// TestIdempotencyAfterCrash: what a retry answers when the first request's
// control plane died. A create left starting is failed by the sweeper and
// its retry answers that failure (never a second sandbox); so does a fork
// whose forks the sweeper rolled back.
func TestIdempotencyAfterCrash(t *testing.T) {
	env := newSandboxEnv(t)
	agent := env.addHost(t)
	ctx := context.Background()
	first := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "crashed", map[string]any{}, http.StatusCreated)
	var sb api.Sandbox
	_ = json.Unmarshal(first.body, &sb)
	// As if the control plane had died between the insert and the agent's
	// answer: the row is still starting.
	if _, err := env.Pool.Exec(ctx, `UPDATE sandboxes SET state = 'starting' WHERE id = $1`, sb.Id); err != nil {
		t.Fatal(err)
	}
	env.Clock.Advance(10 * time.Minute)
	if sw, err := env.Server.Sandboxes().Sweep(ctx); err != nil || len(sw.Abandoned) != 1 {
		t.Fatalf("sweep: %+v %v", sw, err)
	}
	r := env.mustIdem(t, "/v1/sandboxes", env.team.Key, "crashed", map[string]any{}, http.StatusServiceUnavailable)
	if _, msg := errorCodeOf(t, r.body); !strings.Contains(msg, sb.Id) || !strings.Contains(msg, "abandoned") {
		t.Errorf("replay of an abandoned create: %s", r.body)
	}
	if n := agent.Calls("CreateSandbox"); n != 1 {
		t.Errorf("agent created %d times, want 1", n)
	}

	src := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + src.Id + "/fork"
	env.mustIdem(t, path, env.team.Key, "fork-crashed", map[string]any{"count": 2}, http.StatusCreated)
	// As if the control plane had died before recording the forks running:
	// their rows are still starting, and their lease runs out.
	if _, err := env.Pool.Exec(ctx, `UPDATE sandboxes SET state = 'starting' WHERE forked_from = $1`, src.Id); err != nil {
		t.Fatal(err)
	}
	env.Clock.Advance(10 * time.Minute)
	if sw, err := env.Server.Sandboxes().Sweep(ctx); err != nil || len(sw.Abandoned) != 2 {
		t.Fatalf("sweep: %+v %v", sw, err)
	}
	r = env.mustIdem(t, path, env.team.Key, "fork-crashed", map[string]any{"count": 2}, http.StatusServiceUnavailable)
	if _, msg := errorCodeOf(t, r.body); !strings.Contains(msg, "did not finish") {
		t.Errorf("replay of an abandoned fork: %s", r.body)
	}
	if n := agent.Calls("ForkSandbox"); n != 1 {
		t.Errorf("agent forked %d times, want 1", n)
	}
}
