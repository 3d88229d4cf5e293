package rest

// Fuzzing the REST edge (issue 11, "Must show"): no request, however
// malformed, may get a 5xx that means "our bug" or panic the server.
//
//	go test -run '^$' -fuzz FuzzAPI -fuzztime 2m ./internal/controlplane/rest/
//	go test -run '^$' -fuzz FuzzDecodeJSON ./internal/controlplane/rest/
//
// FuzzAPI sends each input through the real router and handlers, on a real
// PostgreSQL database (pgtest), as an API key or a session of one team that
// owns one sandbox, or as nobody. Without -fuzz it runs the seed corpus
// (testdata/fuzz/FuzzAPI and the seeds below), so `go test` keeps checking
// it. FuzzDecodeJSON drives the JSON decode and text checks alone, fast.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// fuzzSandboxID is the sandbox the fuzzed team owns ({sb} in paths).
const fuzzSandboxID = "fuzzsandbox000000001"

var fuzzMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// fuzzEnv is one server with one team, built once per fuzzing process.
type fuzzEnv struct {
	h        http.Handler
	key, jwt string
	teamID   uuid.UUID
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	pool := pgtest.New(tb)
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s := New(Deps{
		Pool: pool, Metrics: prometheus.NewRegistry(), JWTSecret: secret, Domain: "wrenn.test",
		// Rate limits and login throttling answer 429, which is fine,
		// but would hide the handlers behind them.
		RateLimit: 1e9,
	})
	ctx := context.Background()
	var userID, teamID uuid.UUID
	hash, err := auth.HashPassword("fuzz password", auth.DefaultParams)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO users (email, name, password_hash) VALUES ('fuzz@example.com', 'Fuzz', $1) RETURNING id`, hash).Scan(&userID); err != nil {
		tb.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO teams (name) VALUES ('fuzz') RETURNING id`).Scan(&teamID); err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'owner')`, teamID, userID); err != nil {
		tb.Fatal(err)
	}
	k, err := auth.GenerateAPIKey()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO api_keys (team_id, created_by, name, prefix, key_hash) VALUES ($1, $2, 'fuzz', $3, $4)`,
		teamID, userID, k.Prefix, k.Hash); err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO sandboxes (id, team_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout)
		VALUES ($1, $2, 'minimal', 'running', 1, 512, 2048, 300, 'kill')`, fuzzSandboxID, teamID); err != nil {
		tb.Fatal(err)
	}
	jwt, _, err := auth.Sessions{Secret: secret}.Issue(userID, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return &fuzzEnv{h: s.Handler(), key: k.Key, jwt: jwt, teamID: teamID}
}

// serve sends one fuzzed request in process (so any bytes can be put in
// the path, query and headers) and returns the response.
func (e *fuzzEnv) serve(method byte, path, query string, body []byte, flags byte) *httptest.ResponseRecorder {
	path = strings.ReplaceAll(path, "{sb}", fuzzSandboxID)
	path = strings.ReplaceAll(path, "{team}", e.teamID.String())
	u := &url.URL{Path: path, RawQuery: query}
	if p, err := url.PathUnescape(path); err == nil && p != path {
		// Escaped paths arrive as the server would parse them.
		u.Path, u.RawPath = p, path
	}
	r := httptest.NewRequest(fuzzMethods[int(method)%len(fuzzMethods)], "/", bytes.NewReader(body))
	r.URL = u
	r.RequestURI = u.RequestURI()
	r.Host = "api.test"
	if flags&4 != 0 {
		// The host-name sandbox proxy.
		r.Host = "8080-" + path + ".wrenn.test"
	}
	switch flags & 3 {
	case 1:
		r.Header.Set("Authorization", "Bearer "+e.key)
	case 2:
		r.Header.Set("Authorization", "Bearer "+e.jwt)
	case 3:
		r.Header.Set("Authorization", "Bearer "+string(body[:min(len(body), 64)]))
	}
	if flags&8 != 0 {
		r.Header.Set("Content-Type", "application/json")
	}
	if flags&16 != 0 {
		r.Header.Set(teamHeader, query)
	}
	if flags&32 != 0 {
		r.Header.Set(headerAccessToken, query)
	}
	w := httptest.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e.h.ServeHTTP(w, r.WithContext(ctx))
	return w
}

// checkResponse is the property: a 5xx only when it is honest about
// something outside the request (no host agent in this environment:
// 503 unavailable), never 500 internal.
func checkResponse(t *testing.T, w *httptest.ResponseRecorder, what string) {
	t.Helper()
	if w.Code < 500 {
		return
	}
	var b errorBody
	_ = json.Unmarshal(w.Body.Bytes(), &b)
	if w.Code == http.StatusServiceUnavailable && b.Error.Code == "unavailable" {
		return
	}
	t.Fatalf("%s: status %d body %s", what, w.Code, w.Body.Bytes())
}

// fuzzSeeds are in-code seeds besides testdata/fuzz/FuzzAPI: every route
// with plausible and hostile values.
func fuzzSeeds() []struct {
	method      byte
	path, query string
	body        []byte
	flags       byte
} {
	type seed = struct {
		method      byte
		path, query string
		body        []byte
		flags       byte
	}
	const get, post, put, patch, del = 0, 1, 2, 3, 4
	var out []seed
	add := func(m byte, p, q, b string, f byte) { out = append(out, seed{m, p, q, []byte(b), f}) }
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	deepArr := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	for _, b := range []string{
		`{"email":"a\u0000@example.com","password":"x"}`,
		"{\"email\":\"\xff\",\"password\":\"\xfe\"}",
		`{"name":"x","name":"\u0000"}`,
		`{"vcpus":1e309}`, `{"vcpus":9223372036854775808}`, `{"vcpus":-0}`, `{"timeout_sec":-9223372036854775809}`,
		`{"memory_mb":2147483648}`, `{"disk_mb":1.5}`, `{"metadata":{"k":"` + strings.Repeat("v", 100000) + `"}}`,
		deep, deepArr, `{"metadata":{"\ud800":"\udfff"}}`, `[]`, `null`, `"str"`, `{}{}`, ``,
	} {
		add(post, "/v1/sandboxes", "", b, 1|8)
		add(post, "/v1/auth/login", "", b, 8)
	}
	add(post, "/v1/auth/signup", "", `{"email":"s@example.com","password":"long password","name":"a\u0000"}`, 8)
	add(post, "/v1/teams", "", `{"name":"t\u0000"}`, 2|8)
	add(post, "/v1/api-keys", "", `{"name":"\u0000"}`, 1|8)
	add(get, "/v1/sandboxes", "cursor=MS5hAGI&limit=9223372036854775808&state=%FF&metadata=a%3D%00", "", 1)
	add(get, "/v1/sandboxes/a%00b", "", "", 1)
	add(get, "/v1/sandboxes/{sb}", "", "", 1)
	add(get, "/v1/sandboxes/{sb}/ports/8080/x%00", "access_token=%00", "", 0)
	add(get, "a\x00b", "", "", 4)
	add(get, "/v1/audit-logs", "cursor=%00&limit=-1", "", 1)
	add(get, "/v1/audit-logs", "actor_id=%00&action=%FF&since=x&until=%00&resource_type=&outcome=%00", "", 1)
	add(get, "/v1/teams/{team}/members", "", "", 2)
	add(patch, "/v1/teams/{team}/members/"+uuid.NewString(), "", `{"role":"\u0000"}`, 2|8)
	add(del, "/v1/api-keys/%FF", "", "", 1)
	add(post, "/v1/sandboxes/{sb}/exec", "", `{"cmd":"\u0000","env":{"\u0000":"x"}}`, 1|8)
	add(put, "/v1/sandboxes/{sb}/network", "", `{"allow_out":["999.1.1.1/99"]}`, 1|8)
	add(post, "/v1/sandboxes/{sb}/timeout", "", `{"timeout_sec":1e309}`, 1|8)
	add(get, "/v1/sandboxes/{sb}/files", "path=%00", "", 1)
	add(put, "/v1/sandboxes/{sb}/files", "path=/tmp/x", "data", 1)
	add(get, "/v1/templates/%C0%AF", "", "", 1)
	add(post, "/v1/hosts", "", `{"type":"byoc","address":"\u0000"}`, 1|8)
	add(get, "/v1/me", "", "", 3)
	add(get, "/v1/me", "00000000-0000-0000-0000-000000000000", "", 2|16)
	add(get, "/healthz", "", "", 0)
	return out
}

func FuzzAPI(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.method, s.path, s.query, s.body, s.flags)
	}
	env := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, method byte, path, query string, body []byte, flags byte) {
		if len(body) > 2<<20 {
			return
		}
		w := env.serve(method, path, query, body, flags)
		checkResponse(t, w, fuzzMethods[int(method)%len(fuzzMethods)]+" "+path+"?"+query)
	})
}

// fuzzTargets are request types FuzzDecodeJSON decodes into.
var fuzzTargets = []func() any{
	func() any { return new(signupRequest) },
	func() any { return new(loginRequest) },
	func() any { return new(api.CreateSandboxRequest) },
	func() any { return new(map[string]any) },
	func() any { return new([]any) },
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.body)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, mk := range fuzzTargets {
			v := mk()
			err := decodeJSONBytes(raw, v, true)
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("decode %q into %T: %v is not invalid_argument", raw, v, err)
				}
				continue
			}
			// Whatever decoded is clean text, keys included.
			if s, bad := findBadString(reflect.ValueOf(v), 0); bad {
				t.Fatalf("decode %q into %T accepted %q", raw, v, s)
			}
		}
	})
}

// findBadString returns a string inside v holding NUL or invalid UTF-8.
func findBadString(v reflect.Value, depth int) (string, bool) {
	if depth > 2*maxJSONDepth+8 {
		return "", false
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), textProblem(v.String()) != ""
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return findBadString(v.Elem(), depth+1)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if s, bad := findBadString(v.Field(i), depth+1); bad {
				return s, true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if s, bad := findBadString(v.Index(i), depth+1); bad {
				return s, true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if s, bad := findBadString(it.Key(), depth+1); bad {
				return s, true
			}
			if s, bad := findBadString(it.Value(), depth+1); bad {
				return s, true
			}
		}
	}
	return "", false
}
