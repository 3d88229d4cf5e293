package rest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/webui"
)

// cookieLogin logs in through POST /v1/auth/session and returns the
// session cookie, checking its flags and that the body has no token.
func cookieLogin(t *testing.T, env *testEnv, tt testTeam) *http.Cookie {
	t.Helper()
	resp := env.do(t, "POST", "/v1/auth/session", "", map[string]any{"email": tt.Email, "password": tt.Password})
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cookie login: status %d: %s", resp.StatusCode, body)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["token"]; ok {
		t.Fatalf("cookie login body carries the token: %s", body)
	}
	var sess api.CookieSession
	if err := json.Unmarshal(body, &sess); err != nil {
		t.Fatal(err)
	}
	if sess.User.Email != tt.Email || sess.Team == nil || sess.Team.Id != tt.ID {
		t.Fatalf("cookie login body %s, want user %s in team %s", body, tt.Email, tt.ID)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == SessionCookie {
			c = k
		}
	}
	if c == nil || c.Value == "" {
		t.Fatalf("no %s cookie in %v", SessionCookie, resp.Header.Values("Set-Cookie"))
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure {
		t.Fatalf("cookie flags %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", c)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control %q, want no-store", got)
	}
	return c
}

func cookieHeader(cs ...*http.Cookie) http.Header {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return http.Header{"Cookie": {strings.Join(parts, "; ")}}
}

func withCSRF(h http.Header) http.Header {
	h = h.Clone()
	h.Set(CSRFHeader, "1")
	return h
}

func TestCookieSession(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "team-a")
	c := cookieLogin(t, env, a)
	jar := cookieHeader(c)

	var me api.Me
	resp := env.doHeader(t, "GET", "/v1/me", "", nil, jar)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/me with the cookie: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&me); err != nil || me.User == nil || me.User.Email != a.Email {
		t.Fatalf("me %+v (%v)", me, err)
	}

	t.Run("unsafe method without the CSRF header is refused", func(t *testing.T) {
		resp := env.doHeader(t, "POST", "/v1/api-keys", "", map[string]any{"name": "csrf"}, jar)
		msg := wantError(t, resp, http.StatusForbidden, "permission_denied")
		if !strings.Contains(msg, CSRFHeader) {
			t.Fatalf("message %q does not name %s", msg, CSRFHeader)
		}
		var n int
		if err := env.Pool.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE name = 'csrf'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d keys named csrf (%v): the refused request made one", n, err)
		}
	})
	t.Run("with the CSRF header it works", func(t *testing.T) {
		resp := env.doHeader(t, "POST", "/v1/api-keys", "", map[string]any{"name": "csrf-ok"}, withCSRF(jar))
		if resp.StatusCode != http.StatusCreated {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	})
	t.Run("bearer and API key requests need no CSRF header", func(t *testing.T) {
		env.doJSON(t, "POST", "/v1/api-keys", a.JWT, map[string]any{"name": "bearer"}, http.StatusCreated, nil)
		env.doJSON(t, "POST", "/v1/api-keys", a.Key, map[string]any{"name": "key"}, http.StatusCreated, nil)
	})
	t.Run("a bad cookie is unauthenticated", func(t *testing.T) {
		resp := env.doHeader(t, "GET", "/v1/me", "", nil, http.Header{"Cookie": {SessionCookie + "=wrn_" + strings.Repeat("0", 32)}})
		wantError(t, resp, http.StatusUnauthorized, "unauthenticated")
	})
	t.Run("wrong password sets no cookie", func(t *testing.T) {
		resp := env.do(t, "POST", "/v1/auth/session", "", map[string]any{"email": a.Email, "password": "wrong password!"})
		if len(resp.Cookies()) != 0 {
			t.Fatalf("cookies %v on a failed login", resp.Cookies())
		}
		wantError(t, resp, http.StatusUnauthorized, "unauthenticated")
	})
}

// TestCookieSessionTeams: a cookie session reaches only its user's teams,
// whether the team comes from X-Wrenn-Team or the wrenn_team cookie.
func TestCookieSessionTeams(t *testing.T) {
	env := newTestEnv(t)
	a, _ := env.newPlatformAdmin(t, "team-a")
	b := env.newTeam(t, "team-b")
	var created struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
	}
	env.doJSON(t, "POST", "/v1/hosts", a.Key, map[string]string{"type": "regular"}, http.StatusCreated, &created)
	if _, err := env.Pool.Exec(context.Background(), `INSERT INTO sandboxes (id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout)
		VALUES ('cookie-a', $1, $2, 'minimal', 'running', 1, 512, 2048, 300, 'kill')`, a.ID, created.Host.ID); err != nil {
		t.Fatal(err)
	}
	bc := cookieLogin(t, env, b)

	for name, hdr := range map[string]http.Header{
		"no team":              cookieHeader(bc),
		"team cookie of A":     cookieHeader(bc, &http.Cookie{Name: TeamCookie, Value: a.ID.String()}),
		"team header of A":     func() http.Header { h := cookieHeader(bc); h.Set(teamHeader, a.ID.String()); return h }(),
		"team cookie of B too": cookieHeader(bc, &http.Cookie{Name: TeamCookie, Value: b.ID.String()}),
	} {
		t.Run(name, func(t *testing.T) {
			resp := env.doHeader(t, "GET", "/v1/sandboxes/cookie-a", "", nil, hdr)
			wantError(t, resp, http.StatusNotFound, "not_found")
			resp = env.doHeader(t, "GET", "/v1/sandboxes", "", nil, hdr)
			if strings.Contains(name, "of A") {
				wantError(t, resp, http.StatusNotFound, "not_found")
				return
			}
			var list struct {
				Sandboxes []api.Sandbox `json:"sandboxes"`
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("list: %d", resp.StatusCode)
			}
			if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
				t.Fatal(err)
			}
			if len(list.Sandboxes) != 0 {
				t.Fatalf("team B's cookie session lists %d sandboxes, want none of team A's", len(list.Sandboxes))
			}
		})
	}

	// A's own cookie, switched to A's team by the cookie, sees it.
	ac := cookieLogin(t, env, a)
	resp := env.doHeader(t, "GET", "/v1/sandboxes/cookie-a", "", nil, cookieHeader(ac, &http.Cookie{Name: TeamCookie, Value: a.ID.String()}))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("team A's own sandbox through its cookie session: %d", resp.StatusCode)
	}
	// The team cookie is ignored for bearer requests: B's JWT with A's
	// team cookie still acts for B.
	resp = env.doHeader(t, "GET", "/v1/sandboxes/cookie-a", b.JWT, nil, cookieHeader(&http.Cookie{Name: TeamCookie, Value: a.ID.String()}))
	wantError(t, resp, http.StatusNotFound, "not_found")
}

func TestLogout(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "team-a")
	c := cookieLogin(t, env, a)
	jar := cookieHeader(c)

	wantError(t, env.doHeader(t, "DELETE", "/v1/auth/session", "", nil, jar), http.StatusForbidden, "permission_denied")
	if resp := env.doHeader(t, "GET", "/v1/me", "", nil, jar); resp.StatusCode != http.StatusOK {
		t.Fatalf("a refused logout logged out: %d", resp.StatusCode)
	}

	resp := env.doHeader(t, "DELETE", "/v1/auth/session", "", nil, withCSRF(jar))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	cleared := false
	for _, k := range resp.Cookies() {
		if k.Name == SessionCookie && k.Value == "" && k.MaxAge < 0 {
			cleared = true
		}
	}
	if !cleared {
		t.Fatalf("logout did not clear the cookie: %v", resp.Header.Values("Set-Cookie"))
	}
	// The token itself is revoked, not only the cookie cleared.
	msg := wantError(t, env.doHeader(t, "GET", "/v1/me", "", nil, jar), http.StatusUnauthorized, "unauthenticated")
	if !strings.Contains(msg, "logged out") {
		t.Fatalf("message %q", msg)
	}
	// Other sessions of the user are not affected.
	env.doJSON(t, "GET", "/v1/me", a.JWT, nil, http.StatusOK, nil)

	// A bearer session token logs out the same way.
	env.doJSON(t, "DELETE", "/v1/auth/session", a.JWT, nil, http.StatusNoContent, nil)
	wantError(t, env.do(t, "GET", "/v1/me", a.JWT, nil), http.StatusUnauthorized, "unauthenticated")
	// The revocation is in the store: another replica (or this one after a
	// restart) refuses the token too.
	replica := httptest.NewServer(New(Deps{Pool: env.Pool, Clock: env.Clock, Logger: testLogger(t), Metrics: prometheus.NewRegistry(),
		JWTSecret: env.Server.deps.JWTSecret, Domain: "wrenn.test", RateLimit: 10000}).Handler())
	defer replica.Close()
	req, _ := http.NewRequest("GET", replica.URL+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+a.JWT)
	if resp, err := replica.Client().Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("another replica with the logged-out token: %v %v, want 401", err, resp)
	}
	// Logging out twice, or with nothing, is fine.
	env.doJSON(t, "DELETE", "/v1/auth/session", "", nil, http.StatusNoContent, nil)
	// API keys are not sessions: they keep working.
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
}

// TestSessionCookieSecureOverTLS: over HTTPS the cookie is Secure.
func TestSessionCookieSecureOverTLS(t *testing.T) {
	s := New(Deps{})
	r := httptest.NewRequest("POST", "https://wrenn.test/v1/auth/session", nil)
	r.TLS = &tls.ConnectionState{}
	w := httptest.NewRecorder()
	s.setSessionCookie(w, r, api.Session{Token: "tok", ExpiresAt: time.Now().Add(time.Hour)})
	cs := w.Result().Cookies()
	if len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookies over TLS %+v, want one Secure HttpOnly SameSite=Strict", cs)
	}

	// Behind a TLS-terminating proxy: believed only from a trusted one.
	s = New(Deps{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, tc := range []struct {
		peer   string
		secure bool
	}{{"10.1.2.3:5555", true}, {"192.0.2.1:5555", false}} {
		r := httptest.NewRequest("POST", "http://wrenn.test/v1/auth/session", nil)
		r.RemoteAddr = tc.peer
		r.Header.Set("X-Forwarded-Proto", "https")
		w := httptest.NewRecorder()
		s.setSessionCookie(w, r, api.Session{Token: "tok", ExpiresAt: time.Now().Add(time.Hour)})
		if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Secure != tc.secure {
			t.Fatalf("X-Forwarded-Proto: https from %s: cookies %+v, want Secure=%v", tc.peer, cs, tc.secure)
		}
	}
}

// TestUIRouting: the dashboard gets GET/HEAD paths no API route has,
// outside /v1; the API keeps every path it has.
func TestUIRouting(t *testing.T) {
	ui, err := webui.New()
	if err != nil {
		t.Fatal(err)
	}
	env := newTestEnv(t, func(d *Deps) { d.UI = ui })
	isUI := func(resp *http.Response) bool {
		return strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") && resp.Header.Get("Content-Security-Policy") != ""
	}
	browser := http.Header{"Accept": {"text/html,application/xhtml+xml,*/*;q=0.8"}}
	for _, p := range []string{"/", "/login", "/sandbox/abc", "/hosts", "/templates", "/team/keys"} {
		resp := env.doHeader(t, "GET", p, "", nil, browser)
		if resp.StatusCode != http.StatusOK || !isUI(resp) {
			t.Fatalf("GET %s: %d %q, want the dashboard", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	// API paths answer as the API, authenticated or not.
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/nope", 404},
		{"GET", "/v1", 404},
		{"GET", "/v1/me", 401},
		{"GET", "/sandboxes", 401}, // E2B's list
		{"GET", "/sandboxes/x", 401},
		{"GET", "/healthz", 200},
		{"POST", "/login", 404},
		{"DELETE", "/", 404},
		// /metrics has a listener of its own: never a page here.
		{"GET", "/metrics", 404},
	} {
		resp := env.doHeader(t, tc.method, tc.path, "", nil, browser)
		if resp.StatusCode != tc.status || isUI(resp) {
			t.Fatalf("%s %s: %d %q, want %d from the API", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
		}
	}
	// A program (no text/html in Accept) asking for an unknown path gets
	// the API's JSON 404, not a page; the root is the app regardless.
	wantError(t, env.do(t, "GET", "/login", "", nil), http.StatusNotFound, "not_found")
	if resp := env.do(t, "GET", "/", "", nil); resp.StatusCode != http.StatusOK || !isUI(resp) {
		t.Fatalf("GET / without Accept: %d", resp.StatusCode)
	}
	resp := env.do(t, "GET", "/openapi.yaml", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("/openapi.yaml: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp = env.do(t, "GET", "/docs", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != "" {
		t.Fatalf("/docs: %d, CSP %q: want the API docs page", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
}

// TestGuestContentIsolated: guest bytes served on the API's origin (the
// path form of the port proxy, file downloads) cannot reach the
// dashboard's session: requests to guests never carry its cookies, guest
// responses cannot set them, and they render as a sandboxed opaque origin.
func TestGuestContentIsolated(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{"public_ports": []int{9000}})
	c := cookieLogin(t, env.testEnv, env.team)
	hdr := cookieHeader(c, &http.Cookie{Name: TeamCookie, Value: env.team.ID.String()}, &http.Cookie{Name: "app", Value: "mine"})

	resp := env.doHeader(t, "GET", "/v1/sandboxes/"+sb.Id+"/ports/9000/cookies", "", nil, hdr)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("public port: %d %s", resp.StatusCode, body)
	}
	if string(body) != `cookie="app=mine"` {
		t.Fatalf("the guest saw %s: want only its own cookie, never %s or %s", body, SessionCookie, TeamCookie)
	}
	var names []string
	for _, k := range resp.Cookies() {
		names = append(names, k.Name)
	}
	if strings.Join(names, ",") != "app" {
		t.Fatalf("the guest set cookies %v through the API's origin: want only app", names)
	}
	if csp := resp.Header.Values("Content-Security-Policy"); len(csp) == 0 || !strings.HasPrefix(csp[len(csp)-1], "sandbox ") || strings.Contains(strings.Join(csp, " "), "allow-same-origin") {
		t.Fatalf("guest page CSP %q: want a sandbox without allow-same-origin", csp)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("no nosniff on guest content")
	}

	// The host-name form is another origin: left alone, but never sees
	// the API's cookies either.
	req, _ := http.NewRequest("GET", env.Srv.URL+"/cookies", nil)
	req.Host = "9000-" + sb.Id + ".wrenn.test"
	for k, v := range hdr {
		req.Header[k] = v
	}
	hresp, err := env.Srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hbody, _ := io.ReadAll(hresp.Body)
	hresp.Body.Close()
	if string(hbody) != `cookie="app=mine"` || hresp.Header.Get("Content-Security-Policy") != "" {
		t.Fatalf("host-name form: %s, CSP %q", hbody, hresp.Header.Get("Content-Security-Policy"))
	}

	// File downloads too.
	env.doJSON(t, "PUT", "/v1/sandboxes/"+sb.Id+"/files?path=/tmp/x.html", env.team.Key, []byte("<script>alert(1)</script>"), http.StatusOK, nil)
	resp = env.doHeader(t, "GET", "/v1/sandboxes/"+sb.Id+"/files?path=/tmp/x.html", "", nil, hdr)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "sandbox ") || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("download: %d, CSP %q, type %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), resp.Header.Get("Content-Type"))
	}
}
