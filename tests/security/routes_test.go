package security

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// routeCheck is how one route of api/openapi.yaml is attacked across
// teams. By default team B (its API key, its owner's session, and both
// naming team A in X-Wrenn-Team) calls the route on team A's resources
// (path parameters filled with A's ids) and must get 404 not_found, exactly
// what a missing resource answers; an unauthenticated caller must get 401.
type routeCheck struct {
	// body is a valid request body, so a handler that checked the body
	// before the resource's team could not hide a leak behind a 400.
	body any
	// query is appended to the path.
	query string
	// status and code are what B must get, when not 404 not_found (a
	// platform-only route may answer 403 permission_denied instead).
	status []int
	code   []string
	// list: a listing; B's reply must not mention anything of team A's.
	list bool
	// public: the route needs no credentials; check says what B can do.
	public bool
	// check replaces the default call by B with a route-specific attack.
	check func(t *testing.T)
}

// crossTeam has an entry for every route of api/openapi.yaml
// (TestCrossTeamRoutes fails on a route without one, and on an entry for a
// route that no longer exists). A new route needs its attack written here.
var crossTeam = map[string]routeCheck{
	"POST /v1/auth/signup": {public: true, check: func(t *testing.T) {
		// Signing up again with A's email neither takes the account nor
		// hands out a session for it.
		r := anon().do(t, "POST", "/v1/auth/signup", map[string]string{"email": w.a.email, "password": "pw-" + randHex(12)})
		wantError(t, "signup with team A's email", r, http.StatusConflict, "already_exists")
	}},
	"POST /v1/auth/login": {public: true, check: func(t *testing.T) {
		r := anon().do(t, "POST", "/v1/auth/login", map[string]string{"email": w.a.email, "password": w.b.password})
		wantError(t, "login as A with B's password", r, http.StatusUnauthorized, "unauthenticated")
	}},
	"GET /v1/me":    {list: true},
	"GET /v1/teams": {list: true},
	"POST /v1/teams": {check: func(t *testing.T) {
		// Keys cannot make teams; a team B's owner makes is not A's.
		wantError(t, "B's key: create a team", w.b.keyClient().do(t, "POST", "/v1/teams", map[string]string{"name": "b-key-team"}),
			http.StatusForbidden, "permission_denied")
		var team struct {
			ID string `json:"id"`
		}
		w.b.sessionClient().json(t, "POST", "/v1/teams", map[string]string{"name": "b-second"}, http.StatusCreated, &team)
		wantError(t, "A: GET B's new team", w.a.keyClient().do(t, "GET", "/v1/teams/"+team.ID, nil), http.StatusNotFound, "not_found")
	}},
	"GET /v1/teams/{teamID}": {},
	// Invitations: B invites itself into A's team, lists and withdraws A's.
	"GET /v1/teams/{teamID}/invites":               {},
	"POST /v1/teams/{teamID}/invites":              {body: map[string]string{"email": "{bEmail}", "role": "owner"}},
	"DELETE /v1/teams/{teamID}/invites/{inviteID}": {},
	"GET /v1/teams/{teamID}/members":               {},
	// B adds itself to A's team as owner.
	"POST /v1/teams/{teamID}/members":            {body: map[string]string{"email": "{bEmail}", "role": "owner"}},
	"PATCH /v1/teams/{teamID}/members/{userID}":  {body: map[string]string{"role": "member"}},
	"DELETE /v1/teams/{teamID}/members/{userID}": {},
	// Quotas: only the platform admin sets them; members read their own.
	"GET /v1/teams/{teamID}/limits": {},
	"PUT /v1/teams/{teamID}/limits": {body: map[string]any{"max_sandboxes": 1000},
		status: []int{http.StatusNotFound, http.StatusForbidden}, code: []string{"not_found", "permission_denied"}},
	"GET /v1/api-keys": {list: true},
	"POST /v1/api-keys": {check: func(t *testing.T) {
		// A key B makes acts for B's team only.
		var k struct {
			Key string `json:"key"`
		}
		w.b.sessionClient().json(t, "POST", "/v1/api-keys", map[string]string{"name": "b-extra"}, http.StatusCreated, &k)
		var me struct {
			Team struct {
				ID string `json:"id"`
			} `json:"team"`
		}
		client{base: shared.st.URL, cred: k.Key}.json(t, "GET", "/v1/me", nil, http.StatusOK, &me)
		if me.Team.ID != w.b.teamID {
			t.Errorf("a key B made acts for team %s, want B's %s", me.Team.ID, w.b.teamID)
		}
	}},
	"DELETE /v1/api-keys/{keyID}": {},
	"GET /v1/audit-logs":          {list: true},
	"GET /v1/hosts":               {list: true},
	"POST /v1/hosts": {check: func(t *testing.T) {
		// A byoc host B adds is B's: A does not see it.
		var h struct {
			Host struct {
				ID string `json:"id"`
			} `json:"host"`
		}
		w.b.keyClient().json(t, "POST", "/v1/hosts", map[string]string{"type": "byoc"}, http.StatusCreated, &h)
		wantError(t, "A: GET B's byoc host", w.a.keyClient().do(t, "GET", "/v1/hosts/"+h.Host.ID, nil), http.StatusNotFound, "not_found")
		w.b.keyClient().json(t, "DELETE", "/v1/hosts/"+h.Host.ID, nil, http.StatusNoContent, nil)
	}},
	"GET /v1/hosts/{hostID}":                                     {},
	"DELETE /v1/hosts/{hostID}":                                  {},
	"POST /v1/hosts/{hostID}/token":                              {},
	"GET /v1/sandboxes":                                          {list: true, query: "?metadata=owner%3Dteam-a&state=running,paused,stopped"},
	"POST /v1/sandboxes":                                         {check: createFromATemplate},
	"GET /v1/sandboxes/{sandboxID}":                              {},
	"DELETE /v1/sandboxes/{sandboxID}":                           {},
	"POST /v1/sandboxes/{sandboxID}/pause":                       {},
	"POST /v1/sandboxes/{sandboxID}/resume":                      {},
	"POST /v1/sandboxes/{sandboxID}/hibernate":                   {},
	"POST /v1/sandboxes/{sandboxID}/fork":                        {body: map[string]any{"count": 1}},
	"POST /v1/sandboxes/{sandboxID}/timeout":                     {body: map[string]any{"timeout_sec": 60}},
	"PUT /v1/sandboxes/{sandboxID}/network":                      {body: map[string]any{"allow_internet": true}},
	"GET /v1/sandboxes/{sandboxID}/metrics":                      {},
	"GET /v1/sandboxes/{sandboxID}/logs":                         {},
	"POST /v1/sandboxes/{sandboxID}/snapshot":                    {body: map[string]any{"name": "stolen"}},
	"POST /v1/sandboxes/{sandboxID}/exec":                        {body: map[string]any{"cmd": "cat " + secretPath}},
	"GET /v1/sandboxes/{sandboxID}/exec/stream":                  {},
	"GET /v1/sandboxes/{sandboxID}/processes":                    {},
	"POST /v1/sandboxes/{sandboxID}/processes/{selector}/signal": {body: map[string]any{"signal": "SIGKILL"}},
	"GET /v1/sandboxes/{sandboxID}/processes/{selector}/stream":  {},
	"GET /v1/sandboxes/{sandboxID}/pty":                          {},
	"GET /v1/sandboxes/{sandboxID}/files":                        {query: "?path=" + secretPath},
	"PUT /v1/sandboxes/{sandboxID}/files":                        {query: "?path=" + secretPath, body: strings.NewReader("overwritten by B")},
	"DELETE /v1/sandboxes/{sandboxID}/files":                     {query: "?path=" + secretPath},
	"GET /v1/sandboxes/{sandboxID}/files/list":                   {query: "?path=/home/user"},
	"GET /v1/sandboxes/{sandboxID}/files/stat":                   {query: "?path=" + secretPath},
	"POST /v1/sandboxes/{sandboxID}/files/mkdir":                 {body: map[string]any{"path": "/home/user/b-was-here"}},
	"POST /v1/sandboxes/{sandboxID}/files/move":                  {body: map[string]any{"from": secretPath, "to": "/tmp/x"}},
	"GET /v1/sandboxes/{sandboxID}/files/watch":                  {query: "?path=/home/user"},
	"GET /v1/sandboxes/{sandboxID}/ports/{port}/{path}":          {public: true, check: proxyAcrossTeams},
	"GET /v1/templates":                                          {list: true},
	"GET /v1/templates/{templateName}":                           {},
	"DELETE /v1/templates/{templateName}":                        {},
	// Builds: B builds on A's templates, and reads or cancels A's build.
	"POST /v1/templates":                                     {check: buildFromATemplate},
	"GET /v1/templates/{templateName}/builds":                {check: onABuild("GET", "/builds")},
	"GET /v1/templates/{templateName}/builds/{buildID}":      {check: onABuild("GET", "/builds/{id}")},
	"DELETE /v1/templates/{templateName}/builds/{buildID}":   {check: onABuild("DELETE", "/builds/{id}")},
	"GET /v1/templates/{templateName}/builds/{buildID}/logs": {check: onABuild("GET", "/builds/{id}/logs")},
	// Dashboard sessions: logging in as A takes A's password; logging out
	// ends only the caller's own session.
	"POST /v1/auth/session": {public: true, check: func(t *testing.T) {
		r := anon().do(t, "POST", "/v1/auth/session", map[string]string{"email": w.a.email, "password": w.b.password})
		wantError(t, "cookie login as A with B's password", r, http.StatusUnauthorized, "unauthenticated")
	}},
	"DELETE /v1/auth/session": {public: true, check: func(t *testing.T) {
		var sess struct {
			Token string `json:"token"`
		}
		anon().json(t, "POST", "/v1/auth/login", map[string]string{"email": w.b.email, "password": w.b.password}, http.StatusOK, &sess)
		client{base: shared.st.URL, cred: sess.Token}.json(t, "DELETE", "/v1/auth/session", nil, http.StatusNoContent, nil)
		wantError(t, "B's logged-out session", client{base: shared.st.URL, cred: sess.Token}.do(t, "GET", "/v1/me", nil),
			http.StatusUnauthorized, "unauthenticated")
		// A's session and B's other one still work.
		w.a.sessionClient().json(t, "GET", "/v1/me", nil, http.StatusOK, nil)
		w.b.sessionClient().json(t, "GET", "/v1/me", nil, http.StatusOK, nil)
	}},
	// E2B's API at the root: the same attacks in E2B's words.
	"GET /sandboxes":                         {list: true},
	"POST /sandboxes":                        {check: e2bCreateFromATemplate("/sandboxes")},
	"GET /v2/sandboxes":                      {list: true, query: "?state=running,paused"},
	"POST /v2/sandboxes":                     {check: e2bCreateFromATemplate("/v2/sandboxes")},
	"GET /sandboxes/{sandboxID}":             {},
	"DELETE /sandboxes/{sandboxID}":          {},
	"POST /sandboxes/{sandboxID}/timeout":    {body: map[string]any{"timeout": 60}},
	"POST /sandboxes/{sandboxID}/refreshes":  {body: map[string]any{"duration": 60}},
	"POST /sandboxes/{sandboxID}/pause":      {},
	"POST /sandboxes/{sandboxID}/resume":     {},
	"POST /sandboxes/{sandboxID}/connect":    {},
	"POST /v2/sandboxes/{sandboxID}/connect": {body: map[string]any{"timeout": 60}},
	"GET /sandboxes/{sandboxID}/metrics":     {},
	"PUT /sandboxes/{sandboxID}/network":     {body: map[string]any{"allow_internet_access": true}},
	"POST /sandboxes/{sandboxID}/fork":       {body: map[string]any{"count": 1}},
	"POST /sandboxes/{sandboxID}/snapshots":  {body: map[string]any{"name": "stolen-e2b"}},
	"GET /snapshots":                         {list: true},
	"DELETE /templates/{templateID}":         {},
}

// e2bCreateFromATemplate: B names A's snapshot template (its name and the
// host's t-… name) as an E2B templateID.
func e2bCreateFromATemplate(path string) func(t *testing.T) {
	return func(t *testing.T) {
		for _, name := range []string{w.templateA, w.templateAAgent} {
			r := w.b.keyClient().do(t, "POST", path, map[string]any{"templateID": name, "timeout": 120})
			if r.status == http.StatusCreated {
				t.Errorf("B created a sandbox from A's template %s through %s: %s", name, path, r)
				continue
			}
			wantError(t, "B: E2B create from A's template "+name, r, http.StatusNotFound, "not_found")
		}
	}
}

func anon() client { return client{base: shared.st.URL} }

// buildFromATemplate: B builds FROM A's templates (its snapshot, its
// built one, their host names) and under A's built template's name.
func buildFromATemplate(t *testing.T) {
	for _, from := range []string{w.templateA, w.templateAAgent, w.builtA, w.builtA + ":1"} {
		ctx := contextTar(t, map[string]string{"Dockerfile": "FROM " + from + "\n"})
		r := w.b.keyClient().do(t, "POST", "/v1/templates?name=b-steal-"+randHex(2), bytes.NewReader(ctx))
		wantError(t, "B: build FROM A's "+from, r, http.StatusNotFound, "not_found")
	}
	// B's own template of the same name is B's: A's stays as it was.
	ctx := contextTar(t, map[string]string{"Dockerfile": "FROM minimal\nHEALTHCHECK CMD true\n"})
	r := w.b.keyClient().do(t, "POST", "/v1/templates?name="+w.builtA, bytes.NewReader(ctx))
	wantError(t, "B: a bad recipe under A's template's name", r, http.StatusBadRequest, "invalid_argument")
	var b struct {
		Status string `json:"status"`
	}
	w.a.keyClient().json(t, "GET", "/v1/templates/"+w.builtA+"/builds/"+w.buildA, nil, http.StatusOK, &b)
	if b.Status != "ready" {
		t.Errorf("A's build is %s after B's attempts", b.Status)
	}
}

// onABuild: B calls a route of A's built template and its build, and
// gets what a missing one answers.
func onABuild(method, suffix string) func(t *testing.T) {
	return func(t *testing.T) {
		path := "/v1/templates/" + w.builtA + strings.ReplaceAll(suffix, "{id}", w.buildA)
		for _, as := range bPrincipals() {
			r := retry429(t, as.c, method, path, nil)
			wantError(t, method+" "+path+" as "+as.name, r, http.StatusNotFound, "not_found")
		}
	}
}

// createFromATemplate: B names A's template (its name, and the host's t-…
// name) when creating.
func createFromATemplate(t *testing.T) {
	for _, name := range []string{w.templateA, w.templateAAgent} {
		r := w.b.keyClient().do(t, "POST", "/v1/sandboxes", map[string]any{"template": name, "timeout_sec": 120})
		if r.status == http.StatusCreated {
			t.Errorf("B created a sandbox from A's template %s: %s", name, r)
			readLeak(t, w.b.keyClient(), r.body)
			continue
		}
		wantError(t, "B: create from A's template "+name, r, http.StatusNotFound, "not_found")
	}
}

// proxyAcrossTeams: A's guest port through the proxy, with no
// credentials, B's key, and B's key posing as an access token.
func proxyAcrossTeams(t *testing.T) {
	path := "/v1/sandboxes/" + w.sandboxA + "/ports/8080/index.html"
	wantError(t, "anonymous: proxy to A's sandbox", anon().do(t, "GET", path, nil), http.StatusUnauthorized, "unauthenticated")
	r := w.b.keyClient().do(t, "GET", path, nil)
	if r.status != http.StatusNotFound && r.status != http.StatusUnauthorized {
		t.Errorf("B's key: proxy to A's sandbox: got %s, want 404 or 401", r)
	}
	r = anon().doHeader(t, "GET", path, nil, http.Header{"X-Access-Token": {w.b.key}})
	wantError(t, "B's key as X-Access-Token: proxy to A's sandbox", r, http.StatusUnauthorized, "unauthenticated")

	// The same through the host-name form, 8080-<id>.<domain>.
	host := "8080-" + w.sandboxA + ".wrenn.test"
	for _, as := range []struct {
		name string
		hdr  http.Header
		want []int
	}{
		{"anonymous", http.Header{}, []int{http.StatusUnauthorized}},
		{"B's key", http.Header{"Authorization": {"Bearer " + w.b.key}}, []int{http.StatusUnauthorized, http.StatusNotFound}},
		{"B's key as X-Access-Token", http.Header{"X-Access-Token": {w.b.key}}, []int{http.StatusUnauthorized}},
	} {
		req, err := http.NewRequest("GET", shared.st.URL+"/index.html", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header = as.hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !oneOf(resp.StatusCode, as.want) {
			t.Errorf("%s: proxy to A's sandbox at %s: %s, want %v", as.name, host, resp.Status, as.want)
		}
	}
}

// openapiRoutes reads "METHOD /path" for every operation of api/openapi.yaml.
func openapiRoutes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "api", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse api/openapi.yaml: %v", err)
	}
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "patch": true, "head": true, "options": true, "trace": true}
	var out []string
	for path, ops := range doc.Paths {
		for m := range ops {
			if methods[m] {
				out = append(out, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(out)
	if len(out) < 40 {
		t.Fatalf("only %d operations in api/openapi.yaml: the parser is broken", len(out))
	}
	return out
}

// TestCrossTeamTableCoversOpenAPI needs no stack: every route of
// api/openapi.yaml has its cross-team attack, and every attack a route.
func TestCrossTeamTableCoversOpenAPI(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range openapiRoutes(t) {
		seen[r] = true
		if _, ok := crossTeam[r]; !ok {
			t.Errorf("%s is in api/openapi.yaml but has no cross-team check: add one to crossTeam in tests/security/routes_test.go", r)
		}
	}
	for r := range crossTeam {
		if !seen[r] {
			t.Errorf("crossTeam has %s, which api/openapi.yaml does not define: remove or rename it", r)
		}
	}
}

var pathParamRE = regexp.MustCompile(`\{([^}]+)\}`)

// TestCrossTeamRoutes runs every route's attack against the live stack:
// team B on team A's sandbox, template, byoc host, API key, member and
// team; B on the admin team's regular host; and an unauthenticated caller.
func TestCrossTeamRoutes(t *testing.T) {
	world(t)
	routes := openapiRoutes(t)
	var lists []string
	for _, route := range routes {
		rc, ok := crossTeam[route]
		if !ok {
			t.Errorf("%s: no cross-team check (see TestCrossTeamTableCoversOpenAPI)", route)
			continue
		}
		if rc.list {
			lists = append(lists, route)
			continue
		}
		t.Run(route, func(t *testing.T) { runRouteCheck(t, route, rc) })
	}
	// Listings last: by then B has tried every route on A's resources, and
	// none of that may have put A's ids into B's view (e.g. its audit log).
	for _, route := range lists {
		t.Run(route, func(t *testing.T) { runListCheck(t, route, crossTeam[route]) })
	}
}

func runRouteCheck(t *testing.T, route string, rc routeCheck) {
	method, tmpl, _ := strings.Cut(route, " ")
	if !rc.public {
		r := retry429(t, anon(), method, fill(t, tmpl, w.hostA)+rc.query, freshBody(rc.body))
		wantError(t, "unauthenticated", r, http.StatusUnauthorized, "unauthenticated")
	}
	if rc.check != nil {
		rc.check(t)
		return
	}
	status, code := rc.status, rc.code
	if status == nil {
		status, code = []int{http.StatusNotFound}, []string{"not_found"}
	}
	hosts := []string{w.hostA}
	if strings.Contains(tmpl, "{hostID}") {
		// The shared regular host belongs to the admin's team, not B's.
		hosts = append(hosts, w.regularHost)
	}
	for _, host := range hosts {
		path := fill(t, tmpl, host) + rc.query
		for _, as := range bPrincipals() {
			r := retry429(t, as.c, method, path, freshBody(rc.body))
			if !oneOf(r.status, status) || !oneOfS(r.errorCode(), code) {
				t.Errorf("%s %s as %s: got %s, want %v %v", method, path, as.name, r, status, code)
			}
		}
	}
}

func runListCheck(t *testing.T, route string, rc routeCheck) {
	method, path, _ := strings.Cut(route, " ")
	wantError(t, "unauthenticated", retry429(t, anon(), method, path+rc.query, nil), http.StatusUnauthorized, "unauthenticated")
	if path == "/v1/templates" {
		// The agent reports images in heartbeats: wait for one after A's
		// snapshot, so a template leaked as a base image would show.
		waitHeartbeat(t, w.snapshotAt)
	}
	secrets := map[string]string{
		"team id": w.a.teamID, "user id": w.a.userID, "email": w.a.email, "key id": w.a.keyID,
		"second key id": w.a2KeyID, "host id": w.hostA, "invite id": w.inviteA, "sandbox id": w.sandboxA, "secret": w.secretA,
	}
	if path != "/v1/audit-logs" {
		// B typed these names itself when it tried to create from them,
		// so its own audit log may quote them.
		secrets["template"], secrets["template's agent name"] = w.templateA, w.templateAAgent
		secrets["built template"], secrets["build id"] = w.builtA, w.buildA
	}
	for _, as := range bPrincipals()[:2] {
		r := retry429(t, as.c, method, path+rc.query, nil)
		if r.status != http.StatusOK {
			t.Errorf("%s %s as %s: %s", method, path, as.name, r)
			continue
		}
		for what, s := range secrets {
			if strings.Contains(string(r.body), s) {
				t.Errorf("%s %s as %s shows team A's %s %q", method, path, as.name, what, s)
			}
		}
	}
	for _, as := range bPrincipals()[2:] {
		r := retry429(t, as.c, method, path+rc.query, nil)
		wantError(t, method+" "+path+" as "+as.name, r, http.StatusNotFound, "not_found")
	}
}

type principalCase struct {
	name string
	c    client
}

// bPrincipals are the ways team B calls: its key, its owner's session, and
// both claiming team A in X-Wrenn-Team.
func bPrincipals() []principalCase {
	return []principalCase{
		{"B's API key", w.b.keyClient()},
		{"B's session", w.b.sessionClient()},
		{"B's API key with X-Wrenn-Team: A", client{base: shared.st.URL, cred: w.b.key, team: w.a.teamID}},
		{"B's session with X-Wrenn-Team: A", client{base: shared.st.URL, cred: w.b.session, team: w.a.teamID}},
	}
}

// fill puts team A's ids into a route's path parameters.
func fill(t *testing.T, tmpl, hostID string) string {
	t.Helper()
	ids := map[string]string{
		"teamID": w.a.teamID, "userID": w.a.userID, "keyID": w.a2KeyID, "hostID": hostID, "inviteID": w.inviteA,
		"sandboxID": w.sandboxA, "templateName": w.templateA, "templateID": w.templateA, "selector": "1", "port": "8080", "path": "index.html",
		"buildID": w.buildA,
	}
	return pathParamRE.ReplaceAllStringFunc(tmpl, func(p string) string {
		v, ok := ids[p[1:len(p)-1]]
		if !ok {
			t.Errorf("%s: no team A value for path parameter %s: add it to fill", tmpl, p)
		}
		return v
	})
}

// freshBody makes a body sendable again (a reader is consumed by a call)
// and puts B's email where the table says {bEmail}.
func freshBody(b any) any {
	switch v := b.(type) {
	case *strings.Reader:
		_, _ = v.Seek(0, 0)
		return strings.NewReader(readAllString(v))
	case map[string]string:
		out := map[string]string{}
		for k, s := range v {
			out[k] = strings.ReplaceAll(s, "{bEmail}", w.b.email)
		}
		return out
	}
	return b
}

func readAllString(r *strings.Reader) string {
	var sb strings.Builder
	_, _ = r.WriteTo(&sb)
	return sb.String()
}

// retry429 does a request, waiting out the per-principal rate limiter
// (these checks are many quick calls with the same key).
func retry429(t *testing.T, c client, method, path string, body any) reply {
	t.Helper()
	for i := 0; ; i++ {
		r := c.do(t, method, path, body)
		if r.status != http.StatusTooManyRequests || r.errorCode() != "rate_limited" || i == 5 {
			return r
		}
		secs, _ := strconv.Atoi(r.header.Get("Retry-After"))
		time.Sleep(time.Duration(max(1, secs)) * time.Second)
		body = freshBody(body)
	}
}

func oneOf(v int, set []int) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

func oneOfS(v string, set []string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}
