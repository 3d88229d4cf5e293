package rest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
)

func TestSignup(t *testing.T) {
	env := newTestEnv(t)
	var sess api.Session
	env.doJSON(t, "POST", "/v1/auth/signup", "", map[string]any{
		"email": "Ada@Example.com", "password": "12345678", "name": "Ada", "team_name": "Engines",
	}, http.StatusCreated, &sess)
	if sess.Token == "" || sess.User.Email != "Ada@Example.com" || sess.User.Name != "Ada" {
		t.Fatalf("session %+v", sess)
	}
	if sess.Team.Name != "Engines" || sess.Team.Role == nil || *sess.Team.Role != api.RoleOwner {
		t.Fatalf("team %+v, want Engines owned by the new user", sess.Team)
	}
	if want := env.Clock.Now().Add(24 * time.Hour); !sess.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at %v, want %v", sess.ExpiresAt, want)
	}
	var me api.Me
	env.doJSON(t, "GET", "/v1/me", sess.Token, nil, http.StatusOK, &me)
	if me.User == nil || me.User.Id != sess.User.Id || me.Team.Id != sess.Team.Id || me.Role != api.RoleOwner {
		t.Fatalf("me %+v", me)
	}

	t.Run("default team name", func(t *testing.T) {
		var s api.Session
		env.doJSON(t, "POST", "/v1/auth/signup", "", map[string]any{"email": "bob@example.com", "password": "12345678"}, http.StatusCreated, &s)
		if s.Team.Name != "Personal" {
			t.Fatalf("team name %q", s.Team.Name)
		}
	})
	t.Run("email taken, any case", func(t *testing.T) {
		resp := env.do(t, "POST", "/v1/auth/signup", "", map[string]any{"email": "ada@EXAMPLE.com", "password": "abcdefgh"})
		wantError(t, resp, http.StatusConflict, "already_exists")
	})

	long := strings.Repeat("x", 101)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"no email", map[string]any{"password": "12345678"}, 400, "invalid_argument"},
		{"bad email", map[string]any{"email": "not-an-email", "password": "12345678"}, 400, "invalid_argument"},
		{"display name email", map[string]any{"email": "Ada <a@example.com>", "password": "12345678"}, 400, "invalid_argument"},
		{"dotless domain", map[string]any{"email": "a@localhost", "password": "12345678"}, 400, "invalid_argument"},
		{"short password", map[string]any{"email": "c@example.com", "password": "1234567"}, 400, "invalid_argument"},
		{"long password", map[string]any{"email": "c@example.com", "password": strings.Repeat("p", 201)}, 400, "invalid_argument"},
		{"long name", map[string]any{"email": "c@example.com", "password": "12345678", "name": long}, 400, "invalid_argument"},
		{"long team name", map[string]any{"email": "c@example.com", "password": "12345678", "team_name": long}, 400, "invalid_argument"},
		{"unknown field", map[string]any{"email": "c@example.com", "password": "12345678", "admin": true}, 400, "invalid_argument"},
		{"wrong type", map[string]any{"email": 7, "password": "12345678"}, 400, "invalid_argument"},
		{"malformed JSON", []byte(`{"email":`), 400, "invalid_argument"},
		{"two values", []byte(`{"email":"c@example.com","password":"12345678"} {}`), 400, "invalid_argument"},
		{"empty body", nil, 400, "invalid_argument"},
		{"oversize body", bytes.NewReader(append(append([]byte(`{"email":"`), bytes.Repeat([]byte("a"), 2<<20)...), `"}`...)), 413, "payload_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.do(t, "POST", "/v1/auth/signup", "", tc.body), tc.status, tc.code)
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		resp := env.doHeader(t, "POST", "/v1/auth/signup", "", []byte(`{}`), http.Header{"Content-Type": {"text/plain"}})
		wantError(t, resp, 400, "invalid_argument")
	})
}

func TestLogin(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")

	var sess api.Session
	env.doJSON(t, "POST", "/v1/auth/login", "", map[string]any{"email": strings.ToUpper(a.Email), "password": a.Password}, http.StatusOK, &sess)
	if sess.User.Id != a.UserID || sess.Team.Id != a.ID {
		t.Fatalf("login session %+v, want user %s team %s", sess, a.UserID, a.ID)
	}
	env.doJSON(t, "GET", "/v1/me", sess.Token, nil, http.StatusOK, nil)

	msg := func(resp *http.Response) string {
		t.Helper()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"unauthenticated"`) {
			t.Fatalf("status %d %s, want 401 unauthenticated", resp.StatusCode, b)
		}
		return string(b)
	}
	wrong := msg(env.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": a.Email, "password": "wrong password"}))
	unknown := msg(env.do(t, "POST", "/v1/auth/login", "", map[string]any{"email": "nobody@example.com", "password": "wrong password"}))
	if wrong != unknown {
		t.Fatalf("wrong password says %s but unknown email says %s: login tells who has an account", wrong, unknown)
	}
	for _, tc := range []struct {
		name string
		body any
	}{
		{"no password", map[string]any{"email": a.Email}},
		{"no email", map[string]any{"password": "x"}},
		{"unknown field", map[string]any{"email": a.Email, "password": "x", "otp": 1}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.do(t, "POST", "/v1/auth/login", "", tc.body), 400, "invalid_argument")
		})
	}
}

func TestSessionExpires(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")
	env.Clock.Advance(23 * time.Hour)
	env.doJSON(t, "GET", "/v1/me", a.JWT, nil, http.StatusOK, nil)
	env.Clock.Advance(time.Hour + time.Second)
	wantError(t, env.do(t, "GET", "/v1/me", a.JWT, nil), http.StatusUnauthorized, "unauthenticated")
	// API keys do not expire.
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
}

func TestAuthenticate(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")
	b := env.newTeam(t, "b")

	// A JWT signed with another secret.
	other := newTestEnv(t)
	foreign := other.newTeam(t, "foreign")

	for _, tc := range []struct {
		name string
		hdr  http.Header
	}{
		{"none", nil},
		{"basic scheme", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}},
		{"garbage bearer", http.Header{"Authorization": {"Bearer nonsense"}}},
		{"malformed key", http.Header{"Authorization": {"Bearer wrn_123"}}},
		{"unknown key", http.Header{"Authorization": {"Bearer wrn_0123456789abcdef0123456789abcdef"}}},
		{"jwt in X-API-Key", http.Header{"X-Api-Key": {a.JWT}}},
		{"other server's jwt", http.Header{"Authorization": {"Bearer " + foreign.JWT}}},
		{"other server's key", http.Header{"X-Api-Key": {foreign.Key}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := env.doHeader(t, "GET", "/v1/me", "", nil, tc.hdr)
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			wantError(t, resp, http.StatusUnauthorized, "unauthenticated")
		})
	}

	t.Run("X-API-Key", func(t *testing.T) {
		var me api.Me
		resp := env.doHeader(t, "GET", "/v1/me", "", nil, http.Header{"X-Api-Key": {a.Key}})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		decode(t, resp, &me)
		if me.Team.Id != a.ID || me.ApiKeyId == nil || me.User != nil || me.Role != api.RoleAdmin {
			t.Fatalf("me %+v", me)
		}
	})

	t.Run("X-Wrenn-Team", func(t *testing.T) {
		// a creates a second team; the header switches to it.
		var second api.Team
		env.doJSON(t, "POST", "/v1/teams", a.JWT, map[string]any{"name": "second"}, http.StatusCreated, &second)
		var me api.Me
		decode(t, env.doHeader(t, "GET", "/v1/me", a.JWT, nil, http.Header{"X-Wrenn-Team": {second.Id.String()}}), &me)
		if me.Team.Id != second.Id || len(me.Teams) != 2 {
			t.Fatalf("me %+v, want team %s of 2", me, second.Id)
		}
		// Without it: the first team joined.
		env.doJSON(t, "GET", "/v1/me", a.JWT, nil, http.StatusOK, &me)
		if me.Team.Id != a.ID {
			t.Fatalf("default team %s, want %s", me.Team.Id, a.ID)
		}
		// b's team, a team that does not exist, and a's team with a's key
		// from another team all answer 404.
		wantError(t, env.doHeader(t, "GET", "/v1/me", a.JWT, nil, http.Header{"X-Wrenn-Team": {b.ID.String()}}), 404, "not_found")
		wantError(t, env.doHeader(t, "GET", "/v1/me", a.JWT, nil, http.Header{"X-Wrenn-Team": {uuid.NewString()}}), 404, "not_found")
		wantError(t, env.doHeader(t, "GET", "/v1/me", b.Key, nil, http.Header{"X-Wrenn-Team": {a.ID.String()}}), 404, "not_found")
		env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
		wantError(t, env.doHeader(t, "GET", "/v1/me", a.JWT, nil, http.Header{"X-Wrenn-Team": {"team-a"}}), 400, "invalid_argument")
	})
}

// A user removed from every team can only list and create teams.
func TestUserWithoutTeam(t *testing.T) {
	env := newTestEnv(t)
	owner := env.newTeam(t, "owner")
	u := env.newTeam(t, "u")
	env.doJSON(t, "POST", "/v1/teams/"+owner.ID.String()+"/members", owner.JWT, map[string]any{"email": u.Email, "role": "owner"}, http.StatusCreated, nil)
	// u cannot leave their own team as its only owner: they make owner
	// an owner of it first, then leave both teams.
	env.doJSON(t, "POST", "/v1/teams/"+u.ID.String()+"/members", u.JWT, map[string]any{"email": owner.Email, "role": "owner"}, http.StatusCreated, nil)
	for _, team := range []uuid.UUID{u.ID, owner.ID} {
		resp := env.doHeader(t, "DELETE", "/v1/teams/"+team.String()+"/members/"+u.UserID.String(), u.JWT, nil, http.Header{"X-Wrenn-Team": {team.String()}})
		if resp.StatusCode != http.StatusNoContent {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("leave team %s: %d %s", team, resp.StatusCode, b)
		}
	}
	wantError(t, env.do(t, "GET", "/v1/me", u.JWT, nil), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "GET", "/v1/api-keys", u.JWT, nil), http.StatusForbidden, "permission_denied")
	var teams struct{ Teams []api.Team }
	env.doJSON(t, "GET", "/v1/teams", u.JWT, nil, http.StatusOK, &teams)
	if len(teams.Teams) != 0 {
		t.Fatalf("teams %+v, want none", teams.Teams)
	}
	var login api.Session
	env.doJSON(t, "POST", "/v1/auth/login", "", map[string]any{"email": u.Email, "password": u.Password}, http.StatusOK, &login)
	if login.Team != nil {
		t.Fatalf("login of a user in no team has team %+v", *login.Team)
	}
	env.doJSON(t, "POST", "/v1/teams", u.JWT, map[string]any{"name": "fresh start"}, http.StatusCreated, nil)
	env.doJSON(t, "GET", "/v1/me", u.JWT, nil, http.StatusOK, nil)
}

func TestAPIKeyLastUsed(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")
	lastUsed := func() *time.Time {
		t.Helper()
		var keys struct {
			APIKeys []api.APIKey `json:"api_keys"`
		}
		env.doJSON(t, "GET", "/v1/api-keys", a.JWT, nil, http.StatusOK, &keys)
		if len(keys.APIKeys) != 1 {
			t.Fatalf("keys %+v", keys.APIKeys)
		}
		return keys.APIKeys[0].LastUsedAt
	}
	if lu := lastUsed(); lu != nil {
		t.Fatalf("unused key has last_used_at %v", lu)
	}
	first := env.Clock.Now()
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	if lu := lastUsed(); lu == nil || !lu.Equal(first) {
		t.Fatalf("last_used_at %v, want %v", lu, first)
	}
	// Within a minute: not written again.
	env.Clock.Advance(59 * time.Second)
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	if lu := lastUsed(); !lu.Equal(first) {
		t.Fatalf("last_used_at %v rewritten within a minute (want %v)", lu, first)
	}
	env.Clock.Advance(time.Second)
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	if lu := lastUsed(); !lu.Equal(env.Clock.Now()) {
		t.Fatalf("last_used_at %v, want %v", lu, env.Clock.Now())
	}
}

func TestRateLimit(t *testing.T) {
	env := newTestEnv(t, func(d *Deps) { d.RateLimit = 1 }) // burst 2
	// Signup and login are limited per client address: one signup each,
	// with time to refill between.
	a := env.newTeam(t, "a")
	env.Clock.Advance(time.Minute) // refill the address bucket
	b := env.newTeam(t, "b")

	// newTeam's key creation took one of a's user tokens; the key has
	// its own bucket, one across every route.
	env.doJSON(t, "GET", "/v1/api-keys", a.Key, nil, http.StatusOK, nil)
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	resp := env.do(t, "GET", "/v1/me", a.Key, nil)
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	wantError(t, resp, http.StatusTooManyRequests, "rate_limited")

	// Other principals have their own buckets.
	env.doJSON(t, "GET", "/v1/me", b.Key, nil, http.StatusOK, nil)
	env.doJSON(t, "GET", "/v1/me", a.JWT, nil, http.StatusOK, nil)

	env.Clock.Advance(time.Second)
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	wantError(t, env.do(t, "GET", "/v1/me", a.Key, nil), http.StatusTooManyRequests, "rate_limited")

	// Logins are limited per client address.
	env.Clock.Advance(time.Minute)
	login := map[string]any{"email": a.Email, "password": "wrong password"}
	wantError(t, env.do(t, "POST", "/v1/auth/login", "", login), 401, "unauthenticated")
	wantError(t, env.do(t, "POST", "/v1/auth/login", "", login), 401, "unauthenticated")
	wantError(t, env.do(t, "POST", "/v1/auth/login", "", login), 429, "rate_limited")
}

func decode(t *testing.T, resp *http.Response, out any) {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}
