// Package browser drives the dashboard in a real browser against a whole
// single-node Wrenn: a private PostgreSQL, wrenn-cp built with the
// dashboard embedded (-tags webui), wrenn-agent and real microVMs.
//
// The journey itself is dashboard.mjs, run with Node and the
// playwright-core package (from web/node_modules) driving Debian's
// chromium, headless: no browser is downloaded. Screenshots go to
// builds/browser-shots/ (printed), or WRENN_BROWSER_SHOTS.
//
// It needs root, QEMU and the images (like tests/e2e), plus node, npm and
// /usr/bin/chromium; without them it skips and says why (or fails under
// WRENN_TEST_REQUIRE_VM=1, which `make test` sets as root).
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/testenv"
)

const chromium = "/usr/bin/chromium"

func TestDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs and a browser: not in -short")
	}
	images := testenv.RequireVM(t)
	node := testenv.LookPath(t, "node")
	npm := testenv.LookPath(t, "npm")
	if _, err := os.Stat(chromium); err != nil {
		testenv.Missing(t, "needs Debian's chromium at "+chromium+" (scripts/deps.sh installs it): "+err.Error())
	}
	repo, err := stacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	// The dashboard, then wrenn-cp embedding it; the agent as usual.
	web := filepath.Join(repo, "web")
	if _, err := os.Stat(filepath.Join(web, "node_modules", "playwright-core")); err != nil {
		run(ctx, t, web, npm, "ci", "--no-audit", "--no-fund")
	}
	run(ctx, t, web, npm, "run", "build")
	ws, err := stacktest.New(ctx, images, "wrenn-browser-", "wrenn-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ws.Root)
	run(ctx, t, repo, "go", "build", "-tags", "webui", "-o", filepath.Join(ws.Bin, "wrenn-cp"), "./cmd/wrenn-cp")

	cfg := devstack.Config{
		Dir:       ws.Dir,
		BinDir:    ws.Bin,
		CPAddr:    stacktest.FreeAddr(),
		AgentAddr: stacktest.FreeAddr(),
		PGPort:    5448,
		Out:       testWriter{t},
		CPEnv:     []string{"WRENN_DOMAIN=wrenn.test", "WRENN_METRICS_ADDR=" + stacktest.FreeAddr()},
		// Names, ranges and ports of its own: other stacks may run beside it.
		AgentEnv: []string{"WRENN_AGENT_NAME=wbrow", "WRENN_AGENT_REAPER_INTERVAL=1s",
			// Samples every second, so the metrics charts have a history to show.
			"WRENN_AGENT_METRICS_INTERVAL=1s",
			"WRENN_AGENT_HOST_CIDR=10.110.0.0/16", "WRENN_AGENT_VETH_CIDR=10.111.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + stacktest.FreeAddr(), "WRENN_AGENT_VMM_UID_BASE=460000"},
	}
	st, err := devstack.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if n, err := st.DestroySandboxes(ctx); err != nil || n > 0 {
			t.Logf("destroyed %d leftover sandboxes (err %v)", n, err)
		}
		if err := st.Close(ctx); err != nil {
			t.Errorf("stop stack: %v", err)
		}
	}()

	// A second team, to check it sees none of the first team's sandboxes.
	other := struct{ Email, Password string }{fmt.Sprintf("other-%d@example.com", time.Now().UnixNano()), "other team password"}
	otherToken, otherTeam := signup(ctx, t, st.URL, other.Email, other.Password)
	// The admin joins it too, to switch between teams in the dashboard.
	call(ctx, t, "POST", st.URL+"/v1/teams/"+otherTeam+"/members", otherToken,
		map[string]string{"email": st.Admin.Email, "role": "member"}, http.StatusCreated)

	shots := os.Getenv("WRENN_BROWSER_SHOTS")
	if shots == "" {
		shots = filepath.Join(repo, "builds", "browser-shots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", shots)
	fmt.Fprintf(os.Stderr, "browser: screenshots in %s\n", shots)

	cmd := exec.CommandContext(ctx, node, filepath.Join(repo, "tests", "browser", "dashboard.mjs"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(),
		"WRENN_URL="+st.URL,
		"WRENN_ADMIN_EMAIL="+st.Admin.Email, "WRENN_ADMIN_PASSWORD="+st.Admin.Password, "WRENN_ADMIN_KEY="+st.Admin.APIKey,
		"WRENN_OTHER_EMAIL="+other.Email, "WRENN_OTHER_PASSWORD="+other.Password,
		"WRENN_SHOTS="+shots, "CHROMIUM="+chromium,
	)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("dashboard journey failed: %v (screenshots so far in %s)", err, shots)
	}
	if !strings.Contains(string(out), "journey: all steps passed") {
		t.Fatalf("the journey did not report completion")
	}
}

func run(ctx context.Context, t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// signup makes a user and their team "Other"; it returns the session
// token and the team id.
func signup(ctx context.Context, t *testing.T, base, email, password string) (token, team string) {
	t.Helper()
	var sess struct {
		Token string `json:"token"`
		Team  struct {
			ID string `json:"id"`
		} `json:"team"`
	}
	out := call(ctx, t, "POST", base+"/v1/auth/signup", "", map[string]string{"email": email, "password": password, "team_name": "Other"}, http.StatusCreated)
	if err := json.Unmarshal(out, &sess); err != nil || sess.Token == "" || sess.Team.ID == "" {
		t.Fatalf("sign up the second team: %s (%v)", out, err)
	}
	return sess.Token, sess.Team.ID
}

// call sends a JSON request (cred as a bearer token when set) and fails
// the test unless it answers want; it returns the body.
func call(ctx context.Context, t *testing.T, method, url, cred string, body any, want int) []byte {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, url, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, out)
	}
	return out
}

// testWriter sends the stack's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
