package rest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/controlplane/platformadmin"
	"github.com/wrenn/wrenn/internal/store"
)

// TestOnlyPlatformAdminAddsRegularHosts: regular hosts run every team's
// sandboxes, so only a platform admin (made by `wrenn-cp admin`) may add
// one, with a session or a key made for it; any team admin may add a byoc
// host.
func TestOnlyPlatformAdminAddsRegularHosts(t *testing.T) {
	env := newTestEnv(t)
	// Issue 11 hole 3: the first user to sign up used to become platform
	// admin, and every key they made carried platform rights.
	first := env.newTeam(t, "first")
	resp := env.do(t, "POST", "/v1/hosts", first.Key, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")
	resp = env.do(t, "POST", "/v1/hosts", first.JWT, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")

	admin, teamKey := env.newPlatformAdmin(t, "ops")
	env.doJSON(t, "POST", "/v1/hosts", admin.Key, map[string]string{"type": "regular"}, http.StatusCreated, nil)
	env.doJSON(t, "POST", "/v1/hosts", admin.JWT, map[string]string{"type": "regular"}, http.StatusCreated, nil)
	// The admin's ordinary key has only the team's rights.
	resp = env.do(t, "POST", "/v1/hosts", teamKey, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")

	other := env.newTeam(t, "other")
	resp = env.do(t, "POST", "/v1/hosts", other.Key, map[string]string{"type": "regular"})
	wantError(t, resp, http.StatusForbidden, "permission_denied")
	env.doJSON(t, "POST", "/v1/hosts", other.Key, map[string]string{"type": "byoc"}, http.StatusCreated, nil)
}

// TestPlatformKeys: only a platform admin's session creates a key with
// platform rights; the listing shows which keys have them; demoting the
// admin takes the rights from their keys at once.
func TestPlatformKeys(t *testing.T) {
	env := newTestEnv(t)
	admin, teamKey := env.newPlatformAdmin(t, "ops")
	plain := env.newTeam(t, "plain")
	ask := map[string]any{"name": "p", "platform": true}

	wantError(t, env.do(t, "POST", "/v1/api-keys", plain.JWT, ask), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "POST", "/v1/api-keys", plain.Key, ask), http.StatusForbidden, "permission_denied")
	// A key, even a platform one, cannot mint platform keys.
	wantError(t, env.do(t, "POST", "/v1/api-keys", admin.Key, ask), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "POST", "/v1/api-keys", teamKey, ask), http.StatusForbidden, "permission_denied")

	var list struct {
		APIKeys []api.APIKey `json:"api_keys"`
	}
	env.doJSON(t, "GET", "/v1/api-keys", admin.JWT, nil, http.StatusOK, &list)
	platform := map[bool]int{}
	for _, k := range list.APIKeys {
		platform[k.Platform]++
	}
	if platform[true] != 1 || platform[false] != 1 {
		t.Errorf("listing %+v: want one platform key and one ordinary key", list.APIKeys)
	}

	meSays := func(cred string) bool {
		t.Helper()
		var me api.Me
		env.doJSON(t, "GET", "/v1/me", cred, nil, http.StatusOK, &me)
		return me.PlatformAdmin
	}
	if !meSays(admin.Key) || !meSays(admin.JWT) || meSays(teamKey) || meSays(plain.JWT) {
		t.Errorf("GET /v1/me platform_admin: platform key %v, session %v, team key %v, other user %v",
			meSays(admin.Key), meSays(admin.JWT), meSays(teamKey), meSays(plain.JWT))
	}

	if _, err := platformadmin.Demote(context.Background(), env.Pool, admin.Email); err != nil {
		t.Fatal(err)
	}
	if meSays(admin.Key) {
		t.Error("a demoted admin's platform key still has platform rights")
	}
	wantError(t, env.do(t, "POST", "/v1/hosts", admin.Key, map[string]string{"type": "regular"}), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "POST", "/v1/hosts", admin.JWT, map[string]string{"type": "regular"}), http.StatusForbidden, "permission_denied")
}

// TestRegularHostNeedsPlatformAdmin is issue 11 hole 2: a team admin of
// the team that holds a regular host's record could re-issue its
// registration token (and register their own machine as the host, to
// receive every team's sandboxes) or delete it. Both need platform rights
// now, and the host's address is hidden from the rest of the team.
func TestRegularHostNeedsPlatformAdmin(t *testing.T) {
	e := newHostsEnv(t)
	admin, teamKey := e.newPlatformAdmin(t, "ops")
	h := e.createHost(t, admin.Key, "regular").Host
	if _, err := e.Pool.Exec(context.Background(), "UPDATE hosts SET address = '10.9.8.7:50051' WHERE id = $1", h.Id); err != nil {
		t.Fatal(err)
	}
	path := "/v1/hosts/" + h.Id.String()

	// A person who is admin of the ops team but no platform admin.
	colleague := e.newTeam(t, "colleague's own")
	e.doJSON(t, http.MethodPost, "/v1/teams/"+admin.ID.String()+"/members", admin.JWT,
		map[string]string{"email": colleague.Email, "role": "admin"}, http.StatusCreated, nil)
	inOps := http.Header{"X-Wrenn-Team": {admin.ID.String()}}

	for _, c := range []struct {
		name string
		cred string
		hdr  http.Header
	}{
		{"team admin's session", colleague.JWT, inOps},
		{"the team's ordinary key", teamKey, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := e.doHeader(t, http.MethodPost, path+"/token", c.cred, nil, c.hdr)
			wantError(t, resp, http.StatusForbidden, "permission_denied")
			resp = e.doHeader(t, http.MethodDelete, path+"?force=true", c.cred, nil, c.hdr)
			wantError(t, resp, http.StatusForbidden, "permission_denied")

			resp = e.doHeader(t, http.MethodGet, path, c.cred, nil, c.hdr)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET host: %d %s", resp.StatusCode, body)
			}
			if strings.Contains(string(body), "10.9.8.7") {
				t.Errorf("a regular host's address is shown to a non-platform principal: %s", body)
			}
		})
	}
	var got api.Host
	e.doJSON(t, http.MethodGet, path, admin.Key, nil, http.StatusOK, &got)
	if got.Address == nil || *got.Address != "10.9.8.7:50051" {
		t.Errorf("platform admin sees address %v", got.Address)
	}

	// The platform admin may; byoc hosts stay the team admins' business.
	e.doJSON(t, http.MethodPost, path+"/token", admin.Key, nil, http.StatusCreated, nil)
	byoc := e.createHost(t, teamKey, "byoc").Host
	resp := e.doHeader(t, http.MethodPost, "/v1/hosts/"+byoc.Id.String()+"/token", colleague.JWT, nil, inOps)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("team admin re-issuing a byoc token: %d", resp.StatusCode)
	}
	e.doJSON(t, http.MethodDelete, path, admin.JWT, nil, http.StatusNoContent, nil)
}

// TestSignupModes is issue 11 hole 3: signup could not be turned off.
func TestSignupModes(t *testing.T) {
	body := map[string]any{"email": "new@example.com", "password": "correct horse battery staple"}
	for _, c := range []struct {
		mode   SignupMode
		status int
		code   string
	}{
		{"", http.StatusForbidden, "permission_denied"}, // the default is closed
		{SignupClosed, http.StatusForbidden, "permission_denied"},
		{SignupInvite, http.StatusForbidden, "permission_denied"}, // no invite_token
		{SignupOpen, http.StatusCreated, ""},
	} {
		t.Run(string(c.mode), func(t *testing.T) {
			env := newTestEnv(t, func(d *Deps) { d.Signup = c.mode })
			resp := env.do(t, "POST", "/v1/auth/signup", "", body)
			if c.code == "" {
				if resp.StatusCode != c.status {
					t.Fatalf("signup: %d, want %d", resp.StatusCode, c.status)
				}
				return
			}
			wantError(t, resp, c.status, c.code)
		})
	}
}

// TestInviteSignup: with WRENN_SIGNUP=invite a team admin's invitation
// lets exactly its email sign up, once, into that team with its role.
func TestInviteSignup(t *testing.T) {
	env := newTestEnv(t, func(d *Deps) { d.Signup = SignupInvite })
	owner := env.newTeamDirect(t, "inviting")
	invites := "/v1/teams/" + owner.ID.String() + "/invites"

	// Inviting is managing members: a person with the admin role.
	wantError(t, env.do(t, "POST", invites, owner.Key, map[string]any{"email": "x@example.com"}), http.StatusForbidden, "permission_denied")
	member := env.newTeamDirect(t, "member's own")
	env.doJSON(t, http.MethodPost, "/v1/teams/"+owner.ID.String()+"/members", owner.JWT,
		map[string]string{"email": member.Email, "role": "member"}, http.StatusCreated, nil)
	hdr := http.Header{"X-Wrenn-Team": {owner.ID.String()}}
	resp := env.doHeader(t, "POST", invites, member.JWT, map[string]any{"email": "x@example.com"}, hdr)
	wantError(t, resp, http.StatusForbidden, "permission_denied")
	outsider := env.newTeamDirect(t, "outsider")
	wantError(t, env.do(t, "POST", invites, outsider.JWT, map[string]any{"email": "x@example.com"}), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "POST", invites, owner.JWT, map[string]any{"email": "not an email"}), http.StatusBadRequest, "invalid_argument")

	var inv api.CreatedInvite
	env.doJSON(t, "POST", invites, owner.JWT, map[string]any{"email": "Invited@Example.com", "role": "admin"}, http.StatusCreated, &inv)
	if !strings.HasPrefix(inv.Token, invitePrefix) || inv.Role != api.RoleAdmin || inv.TeamId != owner.ID {
		t.Fatalf("invite %+v", inv)
	}
	var list struct {
		Invites []map[string]any `json:"invites"`
	}
	env.doJSON(t, "GET", invites, owner.JWT, nil, http.StatusOK, &list)
	if len(list.Invites) != 1 || list.Invites[0]["token"] != nil {
		t.Errorf("listing %+v: want one invitation without its token", list.Invites)
	}

	signup := func(email, token string) *http.Response {
		return env.do(t, "POST", "/v1/auth/signup", "", map[string]any{
			"email": email, "password": "correct horse battery staple", "invite_token": token,
		})
	}
	wantError(t, signup("someone.else@example.com", inv.Token), http.StatusForbidden, "permission_denied")
	wantError(t, signup("invited@example.com", invitePrefix+strings.Repeat("0", 64)), http.StatusForbidden, "permission_denied")
	resp = signup("invited@example.com", inv.Token)
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("signup with the invitation: %d %s", resp.StatusCode, b)
	}
	var sess api.Session
	if err := json.NewDecoder(resp.Body).Decode(&sess); err != nil {
		t.Fatal(err)
	}
	if sess.Team == nil || sess.Team.Id != owner.ID || sess.Team.Role == nil || *sess.Team.Role != api.RoleAdmin {
		t.Errorf("session after invited signup: %+v", sess.Team)
	}
	// One-time.
	wantError(t, signup("invited2@example.com", inv.Token), http.StatusForbidden, "permission_denied")
	env.doJSON(t, "GET", invites, owner.JWT, nil, http.StatusOK, &list)
	if len(list.Invites) != 0 {
		t.Errorf("used invitation still listed: %+v", list.Invites)
	}

	// Withdrawn invitations stop working.
	var inv2 api.CreatedInvite
	env.doJSON(t, "POST", invites, owner.JWT, map[string]any{"email": "late@example.com"}, http.StatusCreated, &inv2)
	env.doJSON(t, "DELETE", invites+"/"+inv2.Id.String(), owner.JWT, nil, http.StatusNoContent, nil)
	wantError(t, signup("late@example.com", inv2.Token), http.StatusForbidden, "permission_denied")
	wantError(t, env.do(t, "DELETE", invites+"/"+inv2.Id.String(), owner.JWT, nil), http.StatusNotFound, "not_found")
}

// newTeamDirect is newTeam for a server whose signup is not open: the
// user and team are written to the database, then the user logs in.
func (e *testEnv) newTeamDirect(t *testing.T, name string) testTeam {
	t.Helper()
	ctx := context.Background()
	tt := testTeam{Email: "direct-" + randHex(6) + "@example.com", Password: "correct horse battery staple"}
	hash, err := auth.HashPassword(tt.Password, auth.DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	q := store.New(e.Pool)
	u, err := q.CreateUser(ctx, store.CreateUserParams{Email: tt.Email, Name: "Direct", PasswordHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	team, err := q.CreateTeam(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.AddTeamMember(ctx, store.AddTeamMemberParams{TeamID: team.ID, UserID: u.ID, Role: "owner"}); err != nil {
		t.Fatal(err)
	}
	var sess api.Session
	e.doJSON(t, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": tt.Email, "password": tt.Password}, http.StatusOK, &sess)
	tt.ID, tt.UserID, tt.JWT = team.ID, u.ID, sess.Token
	var key struct {
		Key string `json:"key"`
	}
	e.doJSON(t, http.MethodPost, "/v1/api-keys", tt.JWT, map[string]any{"name": "test"}, http.StatusCreated, &key)
	tt.Key = key.Key
	return tt
}
