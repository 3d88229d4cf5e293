package rest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

// resourceParams are the URL parameters that name a team-owned resource.
// A route with any of them is checked for isolation; a new kind of
// resource must be added here (the test fails on an unknown parameter).
var resourceParams = map[string]bool{
	"teamID": true, "userID": true, "keyID": true, "hostID": true,
	"sandboxID": true, "templateName": true, "inviteID": true, "templateID": true, "buildID": true,
}

// nonResourceParams are URL parameters that do not name a resource.
var nonResourceParams = map[string]bool{"selector": true, "port": true, "*": true}

// isolationBodies are valid request bodies, so that a handler that
// validated the body before looking the resource up would still be asked
// about the resource (and a 400 could not hide a leak).
var isolationBodies = map[string]any{
	"POST /v1/teams/{teamID}/members":                            map[string]any{"email": "nobody@example.com", "role": "member"},
	"PATCH /v1/teams/{teamID}/members/{userID}":                  map[string]any{"role": "member"},
	"POST /v1/sandboxes/{sandboxID}/fork":                        map[string]any{"count": 1},
	"POST /v1/sandboxes/{sandboxID}/timeout":                     map[string]any{"timeout_sec": 60},
	"PUT /v1/sandboxes/{sandboxID}/network":                      map[string]any{"allow_internet": true},
	"POST /v1/sandboxes/{sandboxID}/snapshot":                    map[string]any{"name": "isolation"},
	"POST /v1/sandboxes/{sandboxID}/exec":                        map[string]any{"cmd": "true"},
	"POST /v1/sandboxes/{sandboxID}/files/mkdir":                 map[string]any{"path": "/tmp/x"},
	"POST /v1/sandboxes/{sandboxID}/files/move":                  map[string]any{"from": "/tmp/x", "to": "/tmp/y"},
	"POST /v1/sandboxes/{sandboxID}/processes/{selector}/signal": map[string]any{"signal": "SIGTERM"},
	"POST /sandboxes/{sandboxID}/timeout":                        map[string]any{"timeout": 60},
	"POST /sandboxes/{sandboxID}/fork":                           map[string]any{"count": 1},
	"POST /sandboxes/{sandboxID}/snapshots":                      map[string]any{"name": "isolation"},
}

// TestTenantIsolation calls every route that names a resource with team
// B's API key on team A's resources, and expects 404 not_found — what a
// missing resource answers. Routes are enumerated from the router, so a
// route added later is covered without editing this test.
func TestTenantIsolation(t *testing.T) {
	env := newTestEnv(t)
	a, _ := env.newPlatformAdmin(t, "team-a") // it adds a regular host
	b := env.newTeam(t, "team-b")
	ctx := context.Background()

	// Team A's resources: a host, a sandbox on it, a template, an API key.
	var created struct {
		Host struct {
			ID string `json:"id"`
		} `json:"host"`
	}
	env.doJSON(t, "POST", "/v1/hosts", a.Key, map[string]string{"type": "regular"}, http.StatusCreated, &created)
	hostID := created.Host.ID
	sandboxID := "isolation-" + randHex(4)
	if _, err := env.Pool.Exec(ctx, `INSERT INTO sandboxes (id, team_id, host_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout)
		VALUES ($1, $2, $3, 'minimal', 'running', 1, 512, 2048, 300, 'kill')`, sandboxID, a.ID, hostID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Pool.Exec(ctx, `INSERT INTO templates (team_id, name, agent_name, host_id, snapshot)
		VALUES ($1, 'a-template', $2, $3, true)`, a.ID, "t-"+randHex(6), hostID); err != nil {
		t.Fatal(err)
	}
	var buildID string
	if err := env.Pool.QueryRow(ctx, `INSERT INTO template_builds (team_id, template_name, version, agent_name, host_id, status,
		recipe_file, created_at, updated_at) VALUES ($1, 'a-template', 1, $2, $3, 'building', 'Dockerfile', now(), now()) RETURNING id::text`,
		a.ID, "tb-"+randHex(6), hostID).Scan(&buildID); err != nil {
		t.Fatal(err)
	}
	var key struct {
		ID string `json:"id"`
	}
	env.doJSON(t, "POST", "/v1/api-keys", a.Key, map[string]string{"name": "second"}, http.StatusCreated, &key)

	var invite struct {
		ID string `json:"id"`
	}
	env.doJSON(t, "POST", "/v1/teams/"+a.ID.String()+"/invites", a.JWT, map[string]string{"email": "invited@example.com"}, http.StatusCreated, &invite)

	ids := map[string]string{
		"inviteID": invite.ID,
		"teamID":   a.ID.String(), "userID": a.UserID.String(), "keyID": key.ID, "hostID": hostID,
		"sandboxID": sandboxID, "templateName": "a-template", "templateID": "a-template", "buildID": buildID, "selector": "1", "port": "8080", "*": "index.html",
	}
	paramRE := regexp.MustCompile(`\{([^}]+)\}`)
	checked := 0
	err := chi.Walk(env.Server.routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(strings.ReplaceAll(route, "/*/", "/"), "/*")
		if strings.HasSuffix(route, "/ports/{port}") {
			route += "/*"
		}
		owned := false
		for _, m := range paramRE.FindAllStringSubmatch(route, -1) {
			switch {
			case resourceParams[m[1]]:
				owned = true
			case nonResourceParams[m[1]]:
			default:
				t.Errorf("%s %s: unknown URL parameter {%s}: add it to resourceParams or nonResourceParams", method, route, m[1])
			}
		}
		if !owned || method == "HEAD" || method == "OPTIONS" || method == "CONNECT" || method == "TRACE" {
			return nil
		}
		path := paramRE.ReplaceAllStringFunc(route, func(p string) string { return ids[p[1:len(p)-1]] })
		path = strings.Replace(path, "/*", "/index.html", 1)
		var body any = map[string]any{}
		if bb, ok := isolationBodies[method+" "+route]; ok {
			body = bb
		}
		if method == "GET" || method == "DELETE" {
			body = nil
		}
		if strings.Contains(route, "/files") && !strings.Contains(route, "mkdir") && !strings.Contains(route, "move") {
			path += "?path=/etc/hostname"
		}
		t.Run(method+" "+route, func(t *testing.T) {
			resp := env.do(t, method, path, b.Key, body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				msg, _ := io.ReadAll(resp.Body)
				t.Fatalf("team B got %d on team A's resource, want 404: %s", resp.StatusCode, msg)
			}
			wantError(t, resp, http.StatusNotFound, "not_found")
		})
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 30 {
		t.Fatalf("only %d resource routes found; the router walk is broken", checked)
	}

	// Listings never show another team's resources.
	for _, p := range []string{"/v1/sandboxes", "/v1/hosts", "/v1/templates", "/v1/api-keys", "/v1/audit-logs", "/v1/teams",
		"/sandboxes", "/v2/sandboxes", "/v2/sandboxes?state=paused", "/snapshots"} {
		resp := env.do(t, "GET", p, b.Key, nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s as team B: %d %s", p, resp.StatusCode, body)
			continue
		}
		for _, secret := range []string{sandboxID, hostID, key.ID, "a-template", a.ID.String()} {
			if strings.Contains(string(body), secret) {
				t.Errorf("GET %s as team B shows team A's %s", p, secret)
			}
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
