package security

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// tenant is one user, the team they own, a session and an API key.
type tenant struct {
	email, password string
	userID, teamID  string
	session         string
	key, keyID      string
}

func (tn tenant) keyClient() client { return client{base: shared.st.URL, cred: tn.key} }
func (tn tenant) sessionClient() client {
	return client{base: shared.st.URL, cred: tn.session, team: tn.teamID}
}

// w is the world every test shares: made once, on first use.
var w struct {
	once  sync.Once
	ready bool

	// admin is the platform admin (devstack's bootstrap user) with a
	// session; adminTeam owns the stack's regular host.
	admin tenant
	// a and b are the two tenant teams.
	a, b tenant
	// a2KeyID is a second API key of team A (a resource B must not reach).
	a2KeyID string
	// inviteA is an open invitation into team A.
	inviteA string
	// hostA is a byoc host of team A (pending: nobody registers it).
	hostA string
	// regularHost is the stack's only host (regular, owned by adminTeam).
	regularHost string
	// sandboxA runs for team A; its guest holds secretA in secretPath.
	sandboxA, sandboxAToken string
	secretA                 string
	// templateA is team A's snapshot template of sandboxA, and
	// templateAAgent its name on the host (t-…).
	templateA, templateAAgent string
	// snapshotAt is when templateA was made.
	snapshotAt time.Time
	// builtA is team A's built template and buildA its (finished) build.
	builtA, buildA string
}

const secretPath = "/home/user/secret.txt"

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// world returns the shared fixture, making it on first use.
func world(t *testing.T) {
	t.Helper()
	st := stack(t)
	w.once.Do(func() {
		start := time.Now()
		makeWorld(t)
		w.ready = true
		t.Logf("world ready in %s: team A %s (sandbox %s, template %s = %s), team B %s",
			time.Since(start).Round(time.Millisecond), w.a.teamID, w.sandboxA, w.templateA, w.templateAAgent, w.b.teamID)
	})
	if !w.ready {
		t.Fatalf("the shared fixture failed in an earlier test (see its log); stack at %s", st.URL)
	}
}

func makeWorld(t *testing.T) {
	st := shared.st
	anon := client{base: st.URL}

	// The platform admin's session: devstack's bootstrap user.
	w.admin = tenant{email: st.Admin.Email, password: st.Admin.Password, teamID: st.Admin.TeamID, key: st.Admin.APIKey}
	w.admin.session, w.admin.userID = login(t, anon, w.admin.email, w.admin.password)
	w.regularHost = st.HostID

	w.a = signup(t, "alice")
	w.b = signup(t, "bob")

	// A second key of team A, and a byoc host of team A.
	var k struct {
		ID string `json:"id"`
	}
	w.a.sessionClient().json(t, "POST", "/v1/api-keys", map[string]string{"name": "a-second"}, http.StatusCreated, &k)
	w.a2KeyID = k.ID
	// Not fatal: the fixture must also stand on a control plane from
	// before invitations, so the other holes are still tried there.
	r := w.a.sessionClient().do(t, "POST", "/v1/teams/"+w.a.teamID+"/invites",
		map[string]string{"email": "friend-" + randHex(4) + "@example.com", "role": "member"})
	if w.inviteA = jsonField(r.body, "id"); r.status != http.StatusCreated || w.inviteA == "" {
		t.Errorf("team A's invitation: got %s, want 201", r)
		w.inviteA = "00000000-0000-4000-8000-" + randHex(6)
	}
	var h struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
	}
	w.a.keyClient().json(t, "POST", "/v1/hosts", map[string]string{"type": "byoc"}, http.StatusCreated, &h)
	w.hostA = h.Host.ID

	// Team A's sandbox, holding a secret in its guest.
	ca := w.a.keyClient()
	var sb struct {
		ID          string `json:"id"`
		AccessToken string `json:"access_token"`
	}
	ca.json(t, "POST", "/v1/sandboxes", map[string]any{"template": "minimal", "timeout_sec": 3600,
		"metadata": map[string]string{"owner": "team-a"}}, http.StatusCreated, &sb)
	w.sandboxA, w.sandboxAToken = sb.ID, sb.AccessToken
	w.secretA = "team-a-secret-" + randHex(8)
	var res struct {
		ExitCode *int `json:"exit_code"`
	}
	ca.json(t, "POST", "/v1/sandboxes/"+w.sandboxA+"/exec",
		map[string]any{"cmd": "echo " + w.secretA + " > " + secretPath + " && sync"}, http.StatusOK, &res)
	if res.ExitCode == nil || *res.ExitCode != 0 {
		t.Fatalf("write team A's secret: exit %v", res.ExitCode)
	}

	// Team A's snapshot template (disk and memory hold the secret).
	w.templateA = "a-secret-" + randHex(3)
	w.snapshotAt = time.Now()
	ca.json(t, "POST", "/v1/sandboxes/"+w.sandboxA+"/snapshot", map[string]string{"name": w.templateA}, http.StatusCreated, nil)
	w.templateAAgent = agentTemplateName(t, w.a.teamID, w.templateA)

	// Team A's built template (its image holds a secret of its own).
	w.builtA = "a-built-" + randHex(3)
	var b struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	ctx := contextTar(t, map[string]string{"Dockerfile": "FROM minimal\nRUN echo " + w.secretA + " > /etc/a-build\n"})
	ca.json(t, "POST", "/v1/templates?name="+w.builtA, bytes.NewReader(ctx), http.StatusAccepted, &b)
	w.buildA = b.ID
	deadline := time.Now().Add(5 * time.Minute)
	for b.Status == "building" || b.Status == "" {
		if time.Now().After(deadline) {
			t.Fatalf("team A's build %s still building after 5 minutes", w.buildA)
		}
		ca.json(t, "GET", "/v1/templates/"+w.builtA+"/builds/"+w.buildA+"/logs?follow=true", nil, http.StatusOK, nil)
		ca.json(t, "GET", "/v1/templates/"+w.builtA+"/builds/"+w.buildA, nil, http.StatusOK, &b)
	}
	if b.Status != "ready" {
		t.Fatalf("team A's build: %s: %s", b.Status, b.Error)
	}
}

// contextTar is a build context (a tar) of files.
func contextTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// signup makes a user with their own team, a session and an API key.
func signup(t *testing.T, who string) tenant {
	t.Helper()
	tn := tenant{email: who + "-" + randHex(4) + "@example.com", password: "pw-" + randHex(12)}
	var sess struct {
		Token string `json:"token"`
		User  struct {
			ID string `json:"id"`
		} `json:"user"`
		Team struct {
			ID string `json:"id"`
		} `json:"team"`
	}
	client{base: shared.st.URL}.json(t, "POST", "/v1/auth/signup",
		map[string]string{"email": tn.email, "password": tn.password, "name": who, "team_name": who + "-team"},
		http.StatusCreated, &sess)
	tn.session, tn.userID, tn.teamID = sess.Token, sess.User.ID, sess.Team.ID
	var key struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	tn.sessionClient().json(t, "POST", "/v1/api-keys", map[string]string{"name": who}, http.StatusCreated, &key)
	tn.key, tn.keyID = key.Key, key.ID
	return tn
}

// login returns a session token and the user's id.
func login(t *testing.T, c client, email, password string) (string, string) {
	t.Helper()
	var sess struct {
		Token string `json:"token"`
		User  struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	c.json(t, "POST", "/v1/auth/login", map[string]string{"email": email, "password": password}, http.StatusOK, &sess)
	return sess.Token, sess.User.ID
}

// agentTemplateName reads the name the host knows a team's template by
// (t-…). An attacker learns it from a listing that leaks it (hole 1) or
// guesses it; the suite reads it from the database to try it directly.
func agentTemplateName(t *testing.T, teamID, name string) string {
	t.Helper()
	var agent string
	withDB(t, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, "SELECT agent_name FROM templates WHERE team_id = $1 AND name = $2", teamID, name).Scan(&agent); err != nil {
			t.Fatalf("agent name of template %s: %v", name, err)
		}
	})
	return agent
}

// waitHeartbeat waits until the stack's host heartbeats after since, so
// what the agent reports (its images) has reached the control plane.
func waitHeartbeat(t *testing.T, since time.Time) {
	t.Helper()
	c := client{base: shared.st.URL, cred: w.admin.session, team: w.admin.teamID}
	deadline := time.Now().Add(75 * time.Second)
	for {
		var h struct {
			LastHeartbeatAt time.Time `json:"last_heartbeat_at"`
		}
		c.json(t, "GET", "/v1/hosts/"+w.regularHost, nil, http.StatusOK, &h)
		if h.LastHeartbeatAt.After(since) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat from host %s since %s (last %s)", w.regularHost, since, h.LastHeartbeatAt)
		}
		time.Sleep(time.Second)
	}
}

// withDB runs fn on a connection to the stack's database.
func withDB(t *testing.T, fn func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, shared.dsn)
	if err != nil {
		t.Fatalf("connect to the stack's database: %v", err)
	}
	defer conn.Close(ctx)
	fn(ctx, conn)
}
