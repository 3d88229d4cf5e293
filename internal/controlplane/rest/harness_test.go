package rest

// Test harness shared by every REST test: a real PostgreSQL database, the
// real router behind httptest, a fake clock, and helpers to sign up teams
// and call the API. Keep this API stable; other route owners build on it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/clocktest"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/controlplane/platformadmin"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// fakeClock moves only when the test says so.
type fakeClock = clocktest.Clock

func newFakeClock() *fakeClock {
	return clocktest.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
}

// Advance moves the clock forward by d.

// testEnv is one API server on its own database.
type testEnv struct {
	Srv    *httptest.Server
	Pool   *pgxpool.Pool
	Clock  *fakeClock
	Server *Server
}

// newTestEnv starts the API on a fresh database. opts may change the Deps
// before the server is built (e.g. set Agents or RateLimit).
func newTestEnv(t *testing.T, opts ...func(*Deps)) *testEnv {
	t.Helper()
	pool := pgtest.New(t)
	clk := newFakeClock()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("jwt secret: %v", err)
	}
	d := Deps{
		Pool:      pool,
		Clock:     clk,
		Logger:    testLogger(t),
		Metrics:   prometheus.NewRegistry(),
		JWTSecret: secret,
		Domain:    "wrenn.test",
		// High enough that ordinary tests never see 429.
		RateLimit: 10000,
		// newTeam signs up through the API.
		Signup: SignupOpen,
	}
	for _, o := range opts {
		o(&d)
	}
	srv := New(d)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testEnv{Srv: hs, Pool: pool, Clock: clk, Server: srv}
}

// testLogger sends the server's logs to the test log until the test ends
// (writing to t after it ends would panic).
func testLogger(t *testing.T) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testLogWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Logf("server: %s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testTeam is a signed-up user, the team they own, and credentials for it.
type testTeam struct {
	ID       uuid.UUID
	UserID   uuid.UUID
	Email    string
	Password string
	// JWT is the owner's session token; Key an API key of the team.
	JWT string
	Key string
}

// newTeam signs up a new user (owner of a new team named name) and creates
// an API key for the team, both through the API.
func (e *testEnv) newTeam(t *testing.T, name string) testTeam {
	t.Helper()
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("random email: %v", err)
	}
	tt := testTeam{
		Email:    fmt.Sprintf("user-%s@example.com", hex.EncodeToString(suffix)),
		Password: "correct horse battery staple",
	}
	var sess struct {
		Token string `json:"token"`
		User  struct {
			ID uuid.UUID `json:"id"`
		} `json:"user"`
		Team struct {
			ID uuid.UUID `json:"id"`
		} `json:"team"`
	}
	e.doJSON(t, http.MethodPost, "/v1/auth/signup", "", map[string]any{
		"email": tt.Email, "password": tt.Password, "name": "Test User", "team_name": name,
	}, http.StatusCreated, &sess)
	tt.ID, tt.UserID, tt.JWT = sess.Team.ID, sess.User.ID, sess.Token

	var key struct {
		Key string `json:"key"`
	}
	e.doJSON(t, http.MethodPost, "/v1/api-keys", tt.JWT, map[string]any{"name": "test"}, http.StatusCreated, &key)
	tt.Key = key.Key
	return tt
}

// do sends a request. cred (an API key or a JWT) goes in
// Authorization: Bearer when non-empty. body is nil, []byte or an
// io.Reader sent as is, or any other value sent as JSON. The response body
// is closed when the test ends.
func (e *testEnv) do(t *testing.T, method, path, cred string, body any) *http.Response {
	t.Helper()
	return e.doHeader(t, method, path, cred, body, nil)
}

// doHeader is do with extra request headers.
func (e *testEnv) doHeader(t *testing.T, method, path, cred string, body any, hdr http.Header) *http.Response {
	t.Helper()
	var r io.Reader
	isJSON := false
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		r, isJSON = bytes.NewReader(data), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, e.Srv.URL+path, r)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, path, err)
	}
	if isJSON {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := e.Srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// doJSON sends a request like do, fails the test (showing the body) unless
// the status is wantStatus, and decodes the JSON body into out when out is
// non-nil.
func (e *testEnv) doJSON(t *testing.T, method, path, cred string, body any, wantStatus int, out any) {
	t.Helper()
	resp := e.do(t, method, path, cred, body)
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, resp.StatusCode, wantStatus, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

// wantError checks that resp is an error with the given status and REST
// error code ({"error":{"code":...}}).
// wantError checks an error answer's status and code and returns its message.
func wantError(t *testing.T, resp *http.Response, status int, code string) string {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read error body: %v", err)
	}
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, data)
	}
	var b errorBody
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("error body %q is not JSON: %v", data, err)
	}
	if isE2BPath(resp.Request.URL.Path) {
		// E2B's shape: {"code": <status>, "message", "error_code"}.
		var e api.E2BError
		if err := json.Unmarshal(data, &e); err != nil || e.Code != status || e.Message == "" {
			t.Fatalf("%s %s: E2B error body %s (want code %d and a message)", resp.Request.Method, resp.Request.URL.Path, data, status)
		}
		b.Error.Code, b.Error.Message = deref(e.ErrorCode), e.Message
	}
	if b.Error.Code != code {
		t.Fatalf("%s %s: error code %q, want %q; body: %s", resp.Request.Method, resp.Request.URL.Path, b.Error.Code, code, data)
	}
	if b.Error.Message == "" {
		t.Fatalf("error %q has no message", code)
	}
	return b.Error.Message
}

// newPlatformAdmin is newTeam whose user is then made platform admin the
// way an operator does (`wrenn-cp admin`); Key has platform rights
// ("platform": true) and teamKey is an ordinary key of the same team.
func (e *testEnv) newPlatformAdmin(t *testing.T, name string) (tt testTeam, teamKey string) {
	t.Helper()
	tt = e.newTeam(t, name)
	if _, err := platformadmin.Ensure(context.Background(), e.Pool, platformadmin.Request{Email: tt.Email}); err != nil {
		t.Fatalf("make platform admin: %v", err)
	}
	var key struct {
		Key string `json:"key"`
	}
	e.doJSON(t, http.MethodPost, "/v1/api-keys", tt.JWT, map[string]any{"name": "platform", "platform": true}, http.StatusCreated, &key)
	teamKey, tt.Key = tt.Key, key.Key
	return tt, teamKey
}
