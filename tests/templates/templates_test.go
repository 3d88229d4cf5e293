// Package templates is issue 13's end-to-end suite: template builds
// through the REST API of a real stack (PostgreSQL, wrenn-cp, wrenn-agent,
// microVMs): a Dockerfile with apt-get, COPY and ENV; an OCI image pushed
// by the test to a registry on loopback; a start command whose server
// answers right after create; a cached rebuild; a failing step; and
// another team that can neither see nor use the template.
//
// One stack with its own names, address ranges, uids and PostgreSQL port
// serves the package. It needs root, QEMU and the images (make images):
// without them the test skips and says why, or fails under
// WRENN_TEST_REQUIRE_VM=1.
package templates

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/templates/ocitest"
	"github.com/wrenn/wrenn/internal/testenv"
)

// The stack's own resources: nothing here collides with make up,
// tests/e2e, tests/security, tests/compat, tests/faults or the soaks.
const (
	agentName  = "wtpl"
	vmmUIDBase = 470000
	pgPort     = 5449
)

func startStack(t *testing.T, images testenv.Images) (*devstack.Stack, string, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ws, err := stacktest.New(ctx, images, "wrenn-templates-", "wrenn-cp", "wrenn-agent", "wrenn")
	if err != nil {
		t.Fatalf("prepare stack: %v", err)
	}
	t.Logf("built binaries in %s", ws.BuildTime.Round(time.Millisecond))
	st, err := devstack.Up(ctx, devstack.Config{
		Dir: ws.Dir, BinDir: ws.Bin, CPAddr: stacktest.FreeAddr(), AgentAddr: stacktest.FreeAddr(), PGPort: pgPort,
		Out:   os.Stderr,
		CPEnv: []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + stacktest.FreeAddr()},
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=" + agentName,
			"WRENN_AGENT_HOST_CIDR=10.112.0.0/16", "WRENN_AGENT_VETH_CIDR=10.113.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + stacktest.FreeAddr(), fmt.Sprintf("WRENN_AGENT_VMM_UID_BASE=%d", vmmUIDBase)},
	})
	if err != nil {
		os.RemoveAll(ws.Root)
		t.Fatalf("start stack: %v", err)
	}
	return st, ws.Bin, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if n, err := st.DestroySandboxes(ctx); err != nil || n > 0 {
			t.Logf("destroyed %d leftover sandboxes (err %v)", n, err)
		}
		if err := st.Close(ctx); err != nil {
			t.Logf("stop stack: %v", err)
		}
		if os.Getenv("WRENN_TEMPLATES_KEEP") == "" {
			os.RemoveAll(ws.Root)
		} else {
			t.Logf("kept %s", ws.Root)
		}
	}
}

// client calls the API with one team's key.
type client struct {
	t   *testing.T
	url string
	key string
	hc  *http.Client
}

func (c *client) do(ctx context.Context, method, path string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (c *client) json(ctx context.Context, method, path string, in any, want int, out any) {
	c.t.Helper()
	var body io.Reader
	hdr := map[string]string{}
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
		hdr["Content-Type"] = "application/json"
	}
	resp, b := c.do(ctx, method, path, body, hdr)
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: %s: %s (want %d)", method, path, resp.Status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// contextTar is a gzipped build context of files.
func contextTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type build struct {
	ID          string  `json:"id"`
	Template    string  `json:"template"`
	Version     int     `json:"version"`
	Status      string  `json:"status"`
	Error       string  `json:"error"`
	ErrorCode   string  `json:"error_code"`
	Steps       int     `json:"steps"`
	CachedSteps int     `json:"cached_steps"`
	Snapshot    bool    `json:"snapshot"`
	Duration    float64 `json:"duration_seconds"`
}

type logEntry struct {
	Seq    int    `json:"seq"`
	Phase  string `json:"phase"`
	Step   int    `json:"step"`
	Cached bool   `json:"cached"`
	Text   string `json:"text"`
}

// startBuild posts a build and returns it (202).
func (c *client) startBuild(ctx context.Context, name, file string, files map[string]string) build {
	c.t.Helper()
	q := url.Values{"name": {name}}
	if file != "" {
		q.Set("file", file)
	}
	resp, b := c.do(ctx, http.MethodPost, "/v1/templates?"+q.Encode(), bytes.NewReader(contextTar(c.t, files)), map[string]string{"Content-Type": "application/gzip"})
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("build %s: %s: %s", name, resp.Status, b)
	}
	var out build
	if err := json.Unmarshal(b, &out); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// follow reads the build's log to its end and returns it with the final
// build.
func (c *client) follow(ctx context.Context, b build) (build, []logEntry) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/templates/%s/builds/%s/logs?follow=true", c.url, b.Template, b.ID), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("follow build %s: %v", b.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("follow build %s: %s", b.ID, resp.Status)
	}
	var lines []logEntry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			c.t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, e)
	}
	if err := sc.Err(); err != nil {
		c.t.Fatalf("read build log: %v", err)
	}
	var final build
	c.json(ctx, http.MethodGet, fmt.Sprintf("/v1/templates/%s/builds/%s", b.Template, b.ID), nil, http.StatusOK, &final)
	return final, lines
}

// buildOK builds and requires success.
func (c *client) buildOK(ctx context.Context, name, file string, files map[string]string) (build, []logEntry, time.Duration) {
	c.t.Helper()
	start := time.Now()
	b, lines := c.follow(ctx, c.startBuild(ctx, name, file, files))
	took := time.Since(start)
	if b.Status != "ready" {
		c.t.Fatalf("build %s: %s (%s): %s\nlog:\n%s", name, b.Status, b.ErrorCode, b.Error, logText(lines))
	}
	c.t.Logf("built %s version %d in %s (%d of %d steps cached)", name, b.Version, took.Round(100*time.Millisecond), b.CachedSteps, b.Steps)
	return b, lines, took
}

func logText(lines []logEntry) string {
	var sb strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&sb, "[%s %d] %s\n", l.Phase, l.Step, l.Text)
	}
	return sb.String()
}

func (c *client) create(ctx context.Context, template string) string {
	c.t.Helper()
	var sb struct {
		ID string `json:"id"`
	}
	c.json(ctx, http.MethodPost, "/v1/sandboxes", map[string]any{"template": template, "timeout_sec": 600}, http.StatusCreated, &sb)
	id := sb.ID
	if id == "" {
		c.t.Fatalf("create from %s: no id", template)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.do(ctx, http.MethodDelete, "/v1/sandboxes/"+id, nil, nil)
	})
	return id
}

// exec runs a shell command in a sandbox and returns its stdout.
func (c *client) exec(ctx context.Context, id, script string) (string, int) {
	c.t.Helper()
	var res struct {
		Stdout   string `json:"stdout"`
		Stderr   string `json:"stderr"`
		ExitCode int    `json:"exit_code"`
	}
	c.json(ctx, http.MethodPost, "/v1/sandboxes/"+id+"/exec", map[string]any{"cmd": "/bin/bash", "args": []string{"-lc", script}}, http.StatusOK, &res)
	if res.ExitCode != 0 {
		c.t.Logf("exec %q: exit %d, stderr %q", script, res.ExitCode, res.Stderr)
	}
	return res.Stdout, res.ExitCode
}

func TestTemplates(t *testing.T) {
	images := testenv.RequireVM(t)
	st, bin, stop := startStack(t, images)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	hc := &http.Client{}
	a := &client{t: t, url: st.URL, key: st.Admin.APIKey, hc: hc}
	b := &client{t: t, url: st.URL, key: otherTeamKey(ctx, t, st), hc: hc}

	t.Run("dockerfile", func(t *testing.T) {
		a, b := a.on(t), b.on(t)
		files := map[string]string{
			"Dockerfile": `FROM minimal
ENV APP_MODE=production
COPY notes.txt /opt/app/notes.txt
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tree && rm -rf /var/lib/apt/lists/*
RUN echo "mode=$APP_MODE" > /opt/app/mode.txt
`,
			"notes.txt": "copied from the build context\n",
		}
		first, _, cold := a.buildOK(ctx, "tools", "", files)
		if first.Version != 1 || first.Snapshot {
			t.Errorf("first build %+v: want version 1, no snapshot", first)
		}
		id := a.create(ctx, "tools")
		out, code := a.exec(ctx, id, `tree --version >/dev/null && echo tree-ok; echo "$APP_MODE"; cat /opt/app/notes.txt /opt/app/mode.txt`)
		if code != 0 || out != "tree-ok\nproduction\ncopied from the build context\nmode=production\n" {
			t.Errorf("in a sandbox of the template: %q (exit %d)", out, code)
		}

		// The same recipe again: every step from the cache.
		second, lines, warm := a.buildOK(ctx, "tools", "", files)
		if second.Version != 2 || second.CachedSteps != second.Steps {
			t.Errorf("rebuild %+v: want version 2 with every step cached", second)
		}
		for _, l := range lines {
			if strings.Contains(l.Text, "Setting up tree") {
				t.Errorf("the rebuild ran apt-get again: %q", l.Text)
			}
		}
		t.Logf("cold build %s, cached rebuild %s (%.0f%%)", cold.Round(100*time.Millisecond), warm.Round(100*time.Millisecond), 100*warm.Seconds()/cold.Seconds())
		if warm >= cold {
			t.Errorf("the cached rebuild (%s) was not faster than the first build (%s)", warm, cold)
		}
		// The sandbox of version 1 still runs; version 1 is still usable.
		if out, code := a.exec(ctx, id, "echo alive"); code != 0 || out != "alive\n" {
			t.Errorf("a sandbox of version 1 after version 2: %q (%d)", out, code)
		}
		a.create(ctx, "tools:1")

		// Another team sees and uses none of it.
		for _, p := range []string{"/v1/templates/tools", "/v1/templates/tools/builds", "/v1/templates/tools/builds/" + first.ID,
			"/v1/templates/tools/builds/" + first.ID + "/logs"} {
			if resp, body := b.do(ctx, http.MethodGet, p, nil, nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("team B GET %s: %s %s, want 404", p, resp.Status, body)
			}
		}
		if resp, body := b.do(ctx, http.MethodDelete, "/v1/templates/tools/builds/"+first.ID, nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("team B cancels team A's build: %s %s, want 404", resp.Status, body)
		}
		for _, tpl := range []string{"tools", "tools:1"} {
			body, _ := json.Marshal(map[string]any{"template": tpl})
			if resp, out := b.do(ctx, http.MethodPost, "/v1/sandboxes", bytes.NewReader(body), map[string]string{"Content-Type": "application/json"}); resp.StatusCode != http.StatusNotFound {
				t.Errorf("team B creates from team A's %s: %s %s, want 404", tpl, resp.Status, out)
			}
		}
		var list struct {
			Templates []struct {
				Name string `json:"name"`
			} `json:"templates"`
		}
		b.json(ctx, http.MethodGet, "/v1/templates", nil, http.StatusOK, &list)
		for _, tpl := range list.Templates {
			if tpl.Name == "tools" || strings.HasPrefix(tpl.Name, "tb-") {
				t.Errorf("team B's template list shows %q", tpl.Name)
			}
		}
		// FROM another team's template is not found either.
		q := url.Values{"name": {"stolen"}}
		if resp, body := b.do(ctx, http.MethodPost, "/v1/templates?"+q.Encode(), bytes.NewReader(contextTar(t, map[string]string{"Dockerfile": "FROM tools\n"})),
			map[string]string{"Content-Type": "application/gzip"}); resp.StatusCode != http.StatusNotFound {
			t.Errorf("team B builds FROM team A's template: %s %s, want 404", resp.Status, body)
		}
	})

	t.Run("start-command", func(t *testing.T) {
		a := a.on(t)
		a.buildOK(ctx, "web", "wrenn.yaml", map[string]string{
			"wrenn.yaml": `from: minimal
steps:
  - workdir: /srv/www
  - copy: {src: [index.html], dest: /srv/www/index.html}
start: python3 -m http.server 8080
ready:
  http: http://127.0.0.1:8080/index.html
  timeout: 120s
`,
			"index.html": "<h1>warm template</h1>\n",
		})
		id := a.create(ctx, "web")
		// Right after create, with no retry: the server was started before
		// the snapshot the sandbox restored.
		resp, body := a.do(ctx, http.MethodGet, "/v1/sandboxes/"+id+"/ports/8080/index.html", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "warm template") {
			t.Errorf("GET port 8080 right after create: %s %q", resp.Status, body)
		}
	})

	t.Run("oci-image", func(t *testing.T) {
		a := a.on(t)
		tree, err := ocitest.MinimalTree()
		if err != nil {
			t.Skipf("no cached Debian tree to make a test image from: %v", err)
		}
		reg := ocitest.StartRegistry(t)
		ref := reg + "/wrenn-test/debian:1"
		ocitest.PushDir(t, ref, tree)
		a.buildOK(ctx, "from-image", "", map[string]string{
			"Dockerfile": "FROM " + ref + "\nRUN echo built-from-an-oci-image > /etc/origin\n",
		})
		id := a.create(ctx, "from-image")
		if out, code := a.exec(ctx, id, "cat /etc/origin; whoami"); code != 0 || out != "built-from-an-oci-image\nuser\n" {
			t.Errorf("in a sandbox of the image template: %q (%d)", out, code)
		}
	})

	t.Run("cli", func(t *testing.T) {
		a := a.on(t)
		dir := t.TempDir()
		for name, body := range map[string]string{
			"Dockerfile": "FROM minimal\nCOPY hello.sh /usr/local/bin/hello\nRUN chmod 755 /usr/local/bin/hello\n",
			"hello.sh":   "#!/bin/sh\necho hello from the cli template\n",
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "wrenn"), "template", "build", "--name", "cli-built", dir)
		cmd.Env = append(os.Environ(), "WRENN_API_URL="+st.URL, "WRENN_API_KEY="+st.Admin.APIKey, "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "template cli-built version 1 ready") || !strings.Contains(string(out), "Dockerfile:3") {
			t.Fatalf("wrenn template build: %v\n%s", err, out)
		}
		id := a.create(ctx, "cli-built")
		if got, code := a.exec(ctx, id, "hello"); code != 0 || got != "hello from the cli template\n" {
			t.Errorf("the CLI-built template's command: %q (%d)", got, code)
		}
	})

	t.Run("failing-step", func(t *testing.T) {
		a := a.on(t)
		bad, lines := a.follow(ctx, a.startBuild(ctx, "broken", "", map[string]string{
			"Dockerfile": "FROM minimal\nRUN echo fine\nRUN echo marker-of-the-failure >&2 && exit 7\n",
		}))
		if bad.Status != "failed" || !strings.Contains(bad.Error, "Dockerfile:3") || !strings.Contains(bad.Error, "marker-of-the-failure") {
			t.Errorf("failed build %+v: want failed, naming Dockerfile:3 with its output", bad)
		}
		if !strings.Contains(logText(lines), "marker-of-the-failure") {
			t.Errorf("the failing step's output is not in the log:\n%s", logText(lines))
		}
		if resp, _ := a.do(ctx, http.MethodGet, "/v1/templates/broken", nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("a template whose only build failed: %s, want 404", resp.Status)
		}
		// A bad recipe is refused at once, naming its line.
		q := url.Values{"name": {"bad-recipe"}}
		resp, body := a.do(ctx, http.MethodPost, "/v1/templates?"+q.Encode(), bytes.NewReader(contextTar(t, map[string]string{
			"Dockerfile": "FROM minimal\nHEALTHCHECK CMD true\n"})), map[string]string{"Content-Type": "application/gzip"})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "Dockerfile:2") {
			t.Errorf("a recipe with HEALTHCHECK: %s %s, want 400 naming Dockerfile:2", resp.Status, body)
		}
	})
}

// on is the client reporting to t (a subtest).
func (c *client) on(t *testing.T) *client { d := *c; d.t = t; return &d }

// otherTeamKey signs up a second user (with a team of their own) and
// returns an API key of that team.
func otherTeamKey(ctx context.Context, t *testing.T, st *devstack.Stack) string {
	t.Helper()
	hc := &http.Client{}
	post := func(path, bearer string, in any, want int, out any) {
		b, _ := json.Marshal(in)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, st.URL+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %s %s", path, resp.Status, body)
		}
		if out != nil {
			if err := json.Unmarshal(body, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	creds := map[string]string{"email": "team-b@example.com", "password": "team b's long password", "team_name": "team-b"}
	post("/v1/auth/signup", "", creds, http.StatusCreated, nil)
	var sess struct {
		Token string `json:"token"`
	}
	post("/v1/auth/login", "", map[string]string{"email": creds["email"], "password": creds["password"]}, http.StatusOK, &sess)
	var key struct {
		Key string `json:"key"`
	}
	post("/v1/api-keys", sess.Token, map[string]string{"name": "team b"}, http.StatusCreated, &key)
	return key.Key
}
