package rest

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// member signs up a user and adds them to team with role; it returns
// their credentials and a header selecting team.
func (e *testEnv) member(t *testing.T, team testTeam, role Role) (testTeam, http.Header) {
	t.Helper()
	u := e.newTeam(t, "own-"+string(role))
	e.doJSON(t, "POST", "/v1/teams/"+team.ID.String()+"/members", team.JWT,
		map[string]any{"email": u.Email, "role": string(role)}, http.StatusCreated, nil)
	return u, http.Header{"X-Wrenn-Team": {team.ID.String()}}
}

func TestMeAndTeams(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "alpha")
	b := env.newTeam(t, "beta")

	var me api.Me
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, &me)
	if me.ApiKeyId == nil || me.User != nil || me.Team.Id != a.ID || me.Team.Name != "alpha" || len(me.Teams) != 1 {
		t.Fatalf("me as key: %+v", me)
	}

	var created api.Team
	env.doJSON(t, "POST", "/v1/teams", a.JWT, map[string]any{"name": "  gamma  "}, http.StatusCreated, &created)
	if created.Name != "gamma" || created.Role == nil || *created.Role != api.RoleOwner {
		t.Fatalf("created %+v", created)
	}
	var teams struct{ Teams []api.Team }
	env.doJSON(t, "GET", "/v1/teams", a.JWT, nil, http.StatusOK, &teams)
	if len(teams.Teams) != 2 || teams.Teams[0].Id != a.ID || teams.Teams[1].Id != created.Id {
		t.Fatalf("a's teams %+v", teams.Teams)
	}
	env.doJSON(t, "GET", "/v1/teams", a.Key, nil, http.StatusOK, &teams)
	if len(teams.Teams) != 1 || teams.Teams[0].Id != a.ID {
		t.Fatalf("key's teams %+v", teams.Teams)
	}

	var got api.Team
	// A team the user is in but which is not the session's team.
	env.doJSON(t, "GET", "/v1/teams/"+created.Id.String(), a.JWT, nil, http.StatusOK, &got)
	if got.Id != created.Id || *got.Role != api.RoleOwner {
		t.Fatalf("get team %+v", got)
	}
	env.doJSON(t, "GET", "/v1/teams/"+a.ID.String(), a.Key, nil, http.StatusOK, &got)

	for _, tc := range []struct {
		name, method, path, cred string
		body                     any
		status                   int
		code                     string
	}{
		{"other team", "GET", "/v1/teams/" + b.ID.String(), a.JWT, nil, 404, "not_found"},
		{"missing team", "GET", "/v1/teams/" + uuid.NewString(), a.JWT, nil, 404, "not_found"},
		{"key's other team", "GET", "/v1/teams/" + created.Id.String(), a.Key, nil, 404, "not_found"},
		{"bad team id", "GET", "/v1/teams/alpha", a.JWT, nil, 400, "invalid_argument"},
		{"no credentials", "GET", "/v1/teams", "", nil, 401, "unauthenticated"},
		{"create as key", "POST", "/v1/teams", a.Key, map[string]any{"name": "x"}, 403, "permission_denied"},
		{"empty name", "POST", "/v1/teams", a.JWT, map[string]any{"name": "  "}, 400, "invalid_argument"},
		{"long name", "POST", "/v1/teams", a.JWT, map[string]any{"name": strings.Repeat("n", 101)}, 400, "invalid_argument"},
		{"no body", "POST", "/v1/teams", a.JWT, nil, 400, "invalid_argument"},
		{"unknown field", "POST", "/v1/teams", a.JWT, map[string]any{"name": "x", "plan": "pro"}, 400, "invalid_argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.do(t, tc.method, tc.path, tc.cred, tc.body), tc.status, tc.code)
		})
	}
}

func TestMembers(t *testing.T) {
	env := newTestEnv(t)
	team := env.newTeam(t, "team")
	other := env.newTeam(t, "other")
	admin, adminHdr := env.member(t, team, RoleAdmin)
	mem, memHdr := env.member(t, team, RoleMember)
	outsider := env.newTeam(t, "outsider")
	base := "/v1/teams/" + team.ID.String() + "/members"

	var list struct{ Members []api.Member }
	env.doJSON(t, "GET", base, team.JWT, nil, http.StatusOK, &list)
	roles := map[uuid.UUID]api.Role{}
	for _, m := range list.Members {
		roles[m.UserId] = m.Role
	}
	if len(list.Members) != 3 || roles[team.UserID] != "owner" || roles[admin.UserID] != "admin" || roles[mem.UserID] != "member" {
		t.Fatalf("members %+v", list.Members)
	}
	// Members and the team's keys may list.
	env.doJSON(t, "GET", base, mem.JWT, nil, http.StatusOK, nil)
	env.doJSON(t, "GET", base, team.Key, nil, http.StatusOK, nil)

	add := func(email, role string) map[string]any { return map[string]any{"email": email, "role": role} }
	role := func(r string) map[string]any { return map[string]any{"role": r} }
	as := func(u testTeam, h http.Header) func(t *testing.T, method, path string, body any) *http.Response {
		return func(t *testing.T, method, path string, body any) *http.Response {
			return env.doHeader(t, method, path, u.JWT, body, h)
		}
	}
	owner := as(team, nil)
	asAdmin := as(admin, adminHdr)
	asMember := as(mem, memHdr)
	asKey := func(t *testing.T, method, path string, body any) *http.Response {
		return env.do(t, method, path, team.Key, body)
	}
	asOther := as(other, nil)
	memberPath := func(u uuid.UUID) string { return base + "/" + u.String() }

	for _, tc := range []struct {
		name   string
		call   func(*testing.T, string, string, any) *http.Response
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"add: other team", asOther, "POST", base, add(outsider.Email, "member"), 404, "not_found"},
		{"add: as key", asKey, "POST", base, add(outsider.Email, "member"), 403, "permission_denied"},
		{"add: as member", asMember, "POST", base, add(outsider.Email, "member"), 403, "permission_denied"},
		{"add: admin adds owner", asAdmin, "POST", base, add(outsider.Email, "owner"), 403, "permission_denied"},
		{"add: bad role", owner, "POST", base, add(outsider.Email, "root"), 400, "invalid_argument"},
		{"add: no role", owner, "POST", base, map[string]any{"email": outsider.Email}, 400, "invalid_argument"},
		{"add: no email", owner, "POST", base, add("", "member"), 400, "invalid_argument"},
		{"add: unknown user", owner, "POST", base, add("ghost@example.com", "member"), 404, "not_found"},
		{"add: already member", owner, "POST", base, add(strings.ToUpper(mem.Email), "member"), 409, "already_exists"},
		{"add: malformed", owner, "POST", base, []byte("{"), 400, "invalid_argument"},
		{"update: other team", asOther, "PATCH", memberPath(mem.UserID), role("admin"), 404, "not_found"},
		{"update: as key", asKey, "PATCH", memberPath(mem.UserID), role("admin"), 403, "permission_denied"},
		{"update: as member", asMember, "PATCH", memberPath(mem.UserID), role("admin"), 403, "permission_denied"},
		{"update: admin grants owner", asAdmin, "PATCH", memberPath(mem.UserID), role("owner"), 403, "permission_denied"},
		{"update: admin demotes owner", asAdmin, "PATCH", memberPath(team.UserID), role("member"), 403, "permission_denied"},
		{"update: last owner", owner, "PATCH", memberPath(team.UserID), role("admin"), 409, "failed_precondition"},
		{"update: not a member", owner, "PATCH", memberPath(outsider.UserID), role("admin"), 404, "not_found"},
		{"update: bad user id", owner, "PATCH", base + "/bob", role("admin"), 400, "invalid_argument"},
		{"update: bad role", owner, "PATCH", memberPath(mem.UserID), role("boss"), 400, "invalid_argument"},
		{"update: no body", owner, "PATCH", memberPath(mem.UserID), nil, 400, "invalid_argument"},
		{"remove: other team", asOther, "DELETE", memberPath(mem.UserID), nil, 404, "not_found"},
		{"remove: as key", asKey, "DELETE", memberPath(mem.UserID), nil, 403, "permission_denied"},
		{"remove: member removes other", asMember, "DELETE", memberPath(admin.UserID), nil, 403, "permission_denied"},
		{"remove: admin removes owner", asAdmin, "DELETE", memberPath(team.UserID), nil, 403, "permission_denied"},
		{"remove: last owner leaves", owner, "DELETE", memberPath(team.UserID), nil, 409, "failed_precondition"},
		{"remove: not a member", owner, "DELETE", memberPath(outsider.UserID), nil, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, tc.call(t, tc.method, tc.path, tc.body), tc.status, tc.code)
		})
	}

	t.Run("happy paths", func(t *testing.T) {
		var m api.Member
		decode(t, asAdmin(t, "POST", base, add(outsider.Email, "member")), &m)
		if m.UserId != outsider.UserID || m.Role != "member" || m.Email != outsider.Email {
			t.Fatalf("added %+v", m)
		}
		// The new member sees the team with their role.
		var got api.Team
		env.doJSON(t, "GET", "/v1/teams/"+team.ID.String(), outsider.JWT, nil, http.StatusOK, &got)
		if *got.Role != "member" {
			t.Fatalf("role %v", *got.Role)
		}
		decode(t, asAdmin(t, "PATCH", memberPath(outsider.UserID), role("admin")), &m)
		if m.Role != "admin" {
			t.Fatalf("updated %+v", m)
		}
		// An owner makes another owner; then the first may step down.
		decode(t, owner(t, "PATCH", memberPath(mem.UserID), role("owner")), &m)
		decode(t, owner(t, "PATCH", memberPath(team.UserID), role("admin")), &m)
		if m.Role != "admin" {
			t.Fatalf("stepped down: %+v", m)
		}
		// Now an admin, the former owner cannot touch the owner.
		wantError(t, owner(t, "DELETE", memberPath(mem.UserID), nil), 403, "permission_denied")
		// Admins remove admins; anyone may leave.
		if resp := owner(t, "DELETE", memberPath(outsider.UserID), nil); resp.StatusCode != 204 {
			t.Fatalf("admin removes admin: %d", resp.StatusCode)
		}
		if resp := asAdmin(t, "DELETE", memberPath(admin.UserID), nil); resp.StatusCode != 204 {
			t.Fatalf("admin leaves: %d", resp.StatusCode)
		}
		wantError(t, env.do(t, "GET", "/v1/teams/"+team.ID.String(), admin.JWT, nil), 404, "not_found")
		env.doJSON(t, "GET", base, mem.JWT, nil, http.StatusOK, &list)
		if len(list.Members) != 2 {
			t.Fatalf("members after removals: %+v", list.Members)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a")
	b := env.newTeam(t, "b")
	mem, memHdr := env.member(t, a, RoleMember)

	var created api.CreatedAPIKey
	env.doJSON(t, "POST", "/v1/api-keys", a.JWT, map[string]any{"name": "ci"}, http.StatusCreated, &created)
	if !strings.HasPrefix(created.Key, "wrn_") || len(created.Key) != 36 || created.Prefix != created.Key[:12] ||
		created.Name != "ci" || created.CreatedBy == nil || *created.CreatedBy != a.UserID {
		t.Fatalf("created %+v", created)
	}
	var me api.Me
	env.doJSON(t, "GET", "/v1/me", created.Key, nil, http.StatusOK, &me)
	if me.ApiKeyId == nil || *me.ApiKeyId != created.Id || me.Team.Id != a.ID {
		t.Fatalf("me with new key %+v", me)
	}
	// Keys may create keys (created_by empty) and the body is optional.
	var byKey api.CreatedAPIKey
	env.doJSON(t, "POST", "/v1/api-keys", a.Key, nil, http.StatusCreated, &byKey)
	if byKey.CreatedBy != nil || byKey.Name != "" {
		t.Fatalf("created by key %+v", byKey)
	}

	// A key in E2B's shape, for E2B's SDKs, works in both headers.
	var e2bKey api.CreatedAPIKey
	env.doJSON(t, "POST", "/v1/api-keys", a.JWT, map[string]any{"name": "sdk", "format": "e2b"}, http.StatusCreated, &e2bKey)
	if !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(e2bKey.Key) || e2bKey.Prefix != e2bKey.Key[:12] {
		t.Fatalf("e2b-format key %+v", e2bKey)
	}
	env.doJSON(t, "GET", "/v1/me", e2bKey.Key, nil, http.StatusOK, &me)
	decode(t, env.doHeader(t, "GET", "/v1/me", "", nil, http.Header{"X-Api-Key": {e2bKey.Key}}), &me)
	if me.ApiKeyId == nil || *me.ApiKeyId != e2bKey.Id || me.Team.Id != a.ID {
		t.Fatalf("me with the e2b-format key %+v", me)
	}
	if resp := env.do(t, "DELETE", "/v1/api-keys/"+e2bKey.Id.String(), a.JWT, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke e2b-format key: %d", resp.StatusCode)
	}

	resp := env.do(t, "GET", "/v1/api-keys", a.JWT, nil)
	raw := readAll(t, resp)
	if strings.Contains(raw, created.Key) || strings.Contains(raw, `"key"`) {
		t.Fatalf("listing shows a secret: %s", raw)
	}
	var keys struct {
		APIKeys []api.APIKey `json:"api_keys"`
	}
	env.doJSON(t, "GET", "/v1/api-keys", mem.JWT, nil, http.StatusOK, &keys) // members may list
	// mem's session is for their own team unless the header says so.
	decode(t, env.doHeader(t, "GET", "/v1/api-keys", mem.JWT, nil, memHdr), &keys)
	if len(keys.APIKeys) != 4 || keys.APIKeys[0].Id != e2bKey.Id {
		t.Fatalf("a's keys, newest first: %+v", keys.APIKeys)
	}

	for _, tc := range []struct {
		name, method, path, cred string
		hdr                      http.Header
		body                     any
		status                   int
		code                     string
	}{
		{"create as member", "POST", "/v1/api-keys", mem.JWT, memHdr, map[string]any{}, 403, "permission_denied"},
		{"revoke as member", "DELETE", "/v1/api-keys/" + created.Id.String(), mem.JWT, memHdr, nil, 403, "permission_denied"},
		{"long name", "POST", "/v1/api-keys", a.JWT, nil, map[string]any{"name": strings.Repeat("k", 101)}, 400, "invalid_argument"},
		{"unknown field", "POST", "/v1/api-keys", a.JWT, nil, map[string]any{"scopes": []string{"all"}}, 400, "invalid_argument"},
		{"unknown format", "POST", "/v1/api-keys", a.JWT, nil, map[string]any{"format": "aws"}, 400, "invalid_argument"},
		{"revoke other team's", "DELETE", "/v1/api-keys/" + created.Id.String(), b.Key, nil, nil, 404, "not_found"},
		{"revoke missing", "DELETE", "/v1/api-keys/" + uuid.NewString(), a.JWT, nil, nil, 404, "not_found"},
		{"revoke bad id", "DELETE", "/v1/api-keys/wrn_abc", a.JWT, nil, nil, 400, "invalid_argument"},
		{"no credentials", "GET", "/v1/api-keys", "", nil, nil, 401, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.doHeader(t, tc.method, tc.path, tc.cred, tc.body, tc.hdr), tc.status, tc.code)
		})
	}

	if resp := env.do(t, "DELETE", "/v1/api-keys/"+created.Id.String(), a.JWT, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", resp.StatusCode, readAll(t, resp))
	}
	wantError(t, env.do(t, "GET", "/v1/me", created.Key, nil), http.StatusUnauthorized, "unauthenticated")
	// Revoking again succeeds and keeps the first time.
	env.Clock.Advance(3600e9)
	if resp := env.do(t, "DELETE", "/v1/api-keys/"+created.Id.String(), a.Key, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke again: %d", resp.StatusCode)
	}
	env.doJSON(t, "GET", "/v1/api-keys", a.JWT, nil, http.StatusOK, &keys)
	for _, k := range keys.APIKeys {
		if k.Id == created.Id && (k.RevokedAt == nil || !k.RevokedAt.Equal(env.Clock.Now().Add(-3600e9))) {
			t.Fatalf("revoked_at %v, want the first revocation", k.RevokedAt)
		}
	}
	// Other keys keep working.
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
}

func TestAuditLog(t *testing.T) {
	env := newTestEnv(t)
	a := env.newTeam(t, "a") // signup + key create
	other := env.newTeam(t, "other")

	var second api.CreatedAPIKey
	env.doJSON(t, "POST", "/v1/api-keys", a.Key, map[string]any{"name": "by key"}, http.StatusCreated, &second)
	env.doJSON(t, "POST", "/v1/teams/"+a.ID.String()+"/members", a.JWT, map[string]any{"email": other.Email, "role": "member"}, http.StatusCreated, nil)
	wantError(t, env.do(t, "POST", "/v1/teams/"+a.ID.String()+"/members", a.JWT, map[string]any{"email": other.Email, "role": "member"}), 409, "already_exists")
	env.doJSON(t, "PATCH", "/v1/teams/"+a.ID.String()+"/members/"+other.UserID.String(), a.JWT, map[string]any{"role": "admin"}, http.StatusOK, nil)
	wantError(t, env.do(t, "POST", "/v1/teams", a.Key, map[string]any{"name": "nope"}), 403, "permission_denied")
	if resp := env.do(t, "DELETE", "/v1/api-keys/"+second.Id.String(), a.JWT, nil); resp.StatusCode != 204 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if resp := env.do(t, "DELETE", "/v1/teams/"+a.ID.String()+"/members/"+other.UserID.String(), a.JWT, nil); resp.StatusCode != 204 {
		t.Fatalf("remove: %d", resp.StatusCode)
	}
	// Misses are not audited (the id named may be another team's).
	wantError(t, env.do(t, "DELETE", "/v1/api-keys/"+uuid.NewString(), a.JWT, nil), 404, "not_found")
	// Reads are not audited.
	env.doJSON(t, "GET", "/v1/teams", a.JWT, nil, http.StatusOK, nil)

	keyID := meKeyID(t, env, a.Key)
	u, k := "user", "api_key"
	want := []struct{ actorType, actorID, resType, resID, action, outcome string }{
		{u, a.UserID.String(), "member", other.UserID.String(), "remove", "success"},
		{u, a.UserID.String(), "api_key", second.Id.String(), "revoke", "success"},
		{k, keyID, "team", "", "create", "failure"},
		{u, a.UserID.String(), "member", other.UserID.String(), "update_role", "success"},
		{u, a.UserID.String(), "member", other.UserID.String(), "add", "failure"},
		{u, a.UserID.String(), "member", other.UserID.String(), "add", "success"},
		{k, keyID, "api_key", second.Id.String(), "create", "success"},
		{u, a.UserID.String(), "api_key", keyID, "create", "success"},
		{u, a.UserID.String(), "user", a.UserID.String(), "signup", "success"},
	}
	var page struct {
		Entries    []api.AuditEntry `json:"entries"`
		NextCursor string           `json:"next_cursor"`
	}
	env.doJSON(t, "GET", "/v1/audit-logs", a.JWT, nil, http.StatusOK, &page)
	if len(page.Entries) != len(want) || page.NextCursor != "" {
		for _, e := range page.Entries {
			t.Logf("entry %+v", e)
		}
		t.Fatalf("%d entries (next %q), want %d and no next page", len(page.Entries), page.NextCursor, len(want))
	}
	for i, w := range want {
		e := page.Entries[i]
		if string(e.ActorType) != w.actorType || e.ActorId != w.actorID || e.ResourceType != w.resType ||
			e.ResourceId != w.resID || e.Action != w.action || string(e.Outcome) != w.outcome {
			t.Errorf("entry %d: %s %s %s/%s %s %s, want %+v", i, e.ActorType, e.ActorId, e.ResourceType, e.ResourceId, e.Action, e.Outcome, w)
		}
	}
	if d := *page.Entries[4].Detail; d["error_code"] != "already_exists" || d["role"] != "member" {
		t.Errorf("failed add detail %v", d)
	}
	if d := *page.Entries[2].Detail; d["error_code"] != "permission_denied" {
		t.Errorf("failed team create detail %v", d)
	}

	// Pages of 2 walk the same entries.
	var all []api.AuditEntry
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		page.Entries, page.NextCursor = nil, ""
		env.doJSON(t, "GET", "/v1/audit-logs?"+q.Encode(), a.Key, nil, http.StatusOK, &page)
		if len(page.Entries) > 2 {
			t.Fatalf("page of %d with limit 2", len(page.Entries))
		}
		all = append(all, page.Entries...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(all) != len(want) {
		t.Fatalf("paged %d entries, want %d", len(all), len(want))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Id >= all[i-1].Id {
			t.Fatalf("not newest first: %d then %d", all[i-1].Id, all[i].Id)
		}
	}

	// The other team sees only its own entries (its signup and key).
	env.doJSON(t, "GET", "/v1/audit-logs", other.Key, nil, http.StatusOK, &page)
	if len(page.Entries) != 2 {
		t.Fatalf("other team's log has %d entries, want 2", len(page.Entries))
	}

	mem, memHdr := env.member(t, a, RoleMember)
	for _, tc := range []struct {
		name, query string
		cred        string
		hdr         http.Header
		status      int
		code        string
	}{
		{"limit 0", "?limit=0", a.JWT, nil, 400, "invalid_argument"},
		{"limit 1001", "?limit=1001", a.JWT, nil, 400, "invalid_argument"},
		{"limit text", "?limit=ten", a.JWT, nil, 400, "invalid_argument"},
		{"bad cursor", "?cursor=zzz", a.JWT, nil, 400, "invalid_argument"},
		{"foreign cursor", "?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("x1.12")), a.JWT, nil, 400, "invalid_argument"},
		{"as member", "", mem.JWT, memHdr, 403, "permission_denied"},
		{"no credentials", "", "", nil, 401, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.doHeader(t, "GET", "/v1/audit-logs"+tc.query, tc.cred, nil, tc.hdr), tc.status, tc.code)
		})
	}
	env.doJSON(t, "GET", "/v1/audit-logs?limit=1000", a.JWT, nil, http.StatusOK, nil)
}

// audit never fails or panics, even when the write cannot succeed.
func TestAuditWriteFailureIsLogged(t *testing.T) {
	env := newTestEnv(t)
	ghost := uuid.New()
	user := uuid.New()
	ctx := withPrincipal(context.Background(), Principal{TeamID: ghost, Role: RoleOwner, UserID: &user})
	env.Server.audit(ctx, "thing", "1", "poke", errors.New("boom"), map[string]any{"bad": func() {}})
	var n int
	if err := env.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_logs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d audit rows for a team that does not exist", n)
	}
	// A cancelled request still records its audit entry.
	a := env.newTeam(t, "a")
	cctx, cancel := context.WithCancel(withPrincipal(context.Background(), Principal{TeamID: a.ID, Role: RoleOwner, UserID: &a.UserID}))
	cancel()
	env.Server.audit(cctx, "thing", "2", "poke", errdefs.New(errdefs.ErrInvalidArgument, "nope"), nil)
	if err := env.Pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_logs WHERE resource_type = 'thing' AND outcome = 'failure'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d entries written for a cancelled request, want 1", n)
	}
}

func meKeyID(t *testing.T, env *testEnv, key string) string {
	t.Helper()
	var me api.Me
	env.doJSON(t, "GET", "/v1/me", key, nil, http.StatusOK, &me)
	return me.ApiKeyId.String()
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
