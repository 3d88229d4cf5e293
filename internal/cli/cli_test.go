package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/version"
	"github.com/wrenn/wrenn/sdk/go/wrenntest"
)

type result struct {
	code           int
	stdout, stderr string
}

// harness runs the CLI against a fake API with a private HOME.
type harness struct {
	t   *testing.T
	srv *wrenntest.Server
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	srv := wrenntest.New(t)
	return &harness{t: t, srv: srv, env: map[string]string{
		"HOME":          t.TempDir(),
		"WRENN_API_URL": srv.URL,
		"WRENN_API_KEY": srv.APIKey,
	}}
}

func (h *harness) runIn(stdin io.Reader, args ...string) result {
	h.t.Helper()
	var out, errOut bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code := Run(context.Background(), args, Env{Stdin: stdin, Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return h.env[k] }})
	return result{code, out.String(), errOut.String()}
}

func (h *harness) run(args ...string) result {
	h.t.Helper()
	return h.runIn(nil, args...)
}

func (h *harness) mustRun(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("wrenn %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func TestVersion(t *testing.T) {
	h := newHarness(t)
	if got := h.mustRun("--version"); got != "wrenn "+version.Version+"\n" {
		t.Errorf("--version = %q", got)
	}
}

func TestCreatePrintsID(t *testing.T) {
	h := newHarness(t)
	out := h.mustRun("sandbox", "create", "--template", "python", "--vcpus", "2", "--memory", "1024", "--timeout", "10m", "--metadata", "a=1", "--metadata", "b=x=y")
	id := strings.TrimSpace(out)
	if st, ok := h.srv.SandboxState(id); !ok || st != api.SandboxStateRunning || out != id+"\n" {
		t.Fatalf("create printed %q; sandbox state %q %v", out, st, ok)
	}
	var body api.CreateSandboxRequest
	if err := json.Unmarshal(h.srv.LastRequest("POST", "/v1/sandboxes").Body, &body); err != nil {
		t.Fatal(err)
	}
	if *body.Template != "python" || *body.Vcpus != 2 || *body.MemoryMb != 1024 || *body.TimeoutSec != 600 || (*body.Metadata)["b"] != "x=y" || body.DiskMb != nil {
		t.Errorf("create body = %s", h.srv.LastRequest("POST", "/v1/sandboxes").Body)
	}
	var js api.Sandbox
	if err := json.Unmarshal([]byte(h.mustRun("sbx", "create", "--json")), &js); err != nil || js.Id == "" {
		t.Fatalf("create --json: %v %+v", err, js)
	}
}

func TestListJSONAndTable(t *testing.T) {
	h := newHarness(t)
	h.srv.PageSize = 1
	a := strings.TrimSpace(h.mustRun("sbx", "create", "--metadata", "team=red"))
	b := strings.TrimSpace(h.mustRun("sbx", "create", "--metadata", "team=blue"))
	var all []api.Sandbox
	if err := json.Unmarshal([]byte(h.mustRun("sbx", "ls", "--json")), &all); err != nil {
		t.Fatalf("ls --json is not JSON: %v", err)
	}
	if len(all) != 2 || all[0].Id != b || all[1].Id != a {
		t.Errorf("ls --json = %+v, want [%s %s]", all, b, a)
	}
	var red []api.Sandbox
	if err := json.Unmarshal([]byte(h.mustRun("sbx", "ls", "--json", "--metadata", "team=red", "--state", "running,paused")), &red); err != nil || len(red) != 1 || red[0].Id != a {
		t.Errorf("filtered ls = %+v, %v", red, err)
	}
	if q := h.srv.LastRequest("GET", "/v1/sandboxes").Query; q.Get("state") != "running,paused" || q.Get("metadata") != "team=red" {
		t.Errorf("ls query = %v", q)
	}
	table := h.mustRun("sbx", "ls")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(table, "team=blue") {
		t.Errorf("table:\n%s", table)
	}
	var empty []api.Sandbox
	if err := json.Unmarshal([]byte(h.mustRun("sbx", "ls", "--json", "--state", "stopped")), &empty); err != nil || empty == nil || len(empty) != 0 {
		t.Errorf("empty ls --json should be [], got %v %v", empty, err)
	}
}

func TestExec(t *testing.T) {
	h := newHarness(t)
	id := strings.TrimSpace(h.mustRun("sbx", "create"))
	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "output", args: []string{"echo", "hello", "world"}, wantStdout: "hello world\n"},
		{name: "exit code", args: []string{"exit", "3"}, wantCode: 3},
		{name: "shell line", args: []string{"exit 7"}, wantCode: 7},
		{name: "stderr", args: []string{"stderr", "oops"}, wantStderr: "oops\n"},
		{name: "stdin forwarded", args: []string{"cat"}, stdin: "piped input\n", wantStdout: "piped input\n"},
		{name: "not found", args: []string{"nosuch"}, wantCode: 127, wantStderr: "nosuch: command not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.runIn(strings.NewReader(tt.stdin), append([]string{"sbx", "exec", id, "--"}, tt.args...)...)
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != tt.wantStderr {
				t.Errorf("got exit %d stdout %q stderr %q; want %d %q %q", r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestErrorLine(t *testing.T) {
	h := newHarness(t)
	r := h.run("sbx", "info", "nope")
	if r.code != 1 || r.stderr != "wrenn: sandbox \"nope\" not found (not_found)\n" || r.stdout != "" {
		t.Errorf("got %+v", r)
	}
	r = h.run("sbx", "exec", "nope", "--", "true")
	if r.code != 1 || r.stderr != "wrenn: sandbox \"nope\" not found (not_found)\n" {
		t.Errorf("exec on missing sandbox: %+v", r)
	}
	h.env["WRENN_API_KEY"] = ""
	r = h.run("sbx", "ls")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "wrenn: no API key") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("no key: %+v", r)
	}
	r = h.run("sbx", "ls", "--bogus")
	if r.code != 1 || r.stderr != "wrenn: unknown flag: --bogus\n" {
		t.Errorf("bad flag: %+v", r)
	}
}

func TestConfigPrecedence(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "WRENN_API_KEY")
	delete(h.env, "WRENN_API_URL")
	url, key := h.srv.URL, h.srv.APIKey

	// Login with a bad key saves nothing.
	r := h.run("login", "--api-url", url, "--api-key", "wrn_bad")
	if r.code != 1 || !strings.Contains(r.stderr, "(unauthenticated)") {
		t.Fatalf("bad login: %+v", r)
	}
	cfgPath := filepath.Join(h.env["HOME"], ".config", "wrenn", "config.json")
	if _, err := os.Stat(cfgPath); !os.IsNotExist(err) {
		t.Fatalf("config written after a failed login: %v", err)
	}
	// Prompted login (stdin is not a terminal: one line).
	r = h.runIn(strings.NewReader(key+"\n"), "login", "--api-url", url)
	if r.code != 0 || !strings.Contains(r.stdout, wrenntest.TeamName) {
		t.Fatalf("login: %+v", r)
	}
	st, err := os.Stat(cfgPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config %v mode %v", err, st.Mode())
	}
	var saved fileConfig
	b, _ := os.ReadFile(cfgPath)
	if json.Unmarshal(b, &saved) != nil || saved.APIKey != key || saved.APIURL != url {
		t.Fatalf("saved config = %s", b)
	}

	// The file alone works.
	h.mustRun("template", "ls")
	// The environment overrides the file...
	h.env["WRENN_API_KEY"] = "wrn_env_wrong"
	if r := h.run("template", "ls"); r.code != 1 || !strings.Contains(r.stderr, "(unauthenticated)") {
		t.Errorf("env key should override the file: %+v", r)
	}
	// ...and a flag overrides the environment.
	h.mustRun("template", "ls", "--api-key", key)
	h.env["WRENN_API_URL"] = "http://127.0.0.1:1"
	h.mustRun("template", "ls", "--api-key", key, "--api-url", url)
	if r := h.run("template", "ls", "--api-key", key); r.code != 1 || !strings.HasPrefix(r.stderr, "wrenn: ") {
		t.Errorf("env URL should override the file: %+v", r)
	}
}

func TestCopyRoundTrip(t *testing.T) {
	h := newHarness(t)
	id := strings.TrimSpace(h.mustRun("sbx", "create"))
	src := filepath.Join(t.TempDir(), "project")
	files := map[string][]byte{
		"README.md":          []byte("# hi\n"),
		"src/main.go":        []byte("package main\n"),
		"src/deep/data.bin":  randomBytes(t, 9<<20), // over the progress threshold
		"empty/.keep":        nil,
		"src/deep/more/x.js": []byte("x"),
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Directory upload into an existing directory keeps its name.
	h.mustRun("sbx", "cp", src, id+":/home/user")
	if got, ok := h.srv.File(id, "/home/user/project/src/deep/data.bin"); !ok || sum(got) != sum(files["src/deep/data.bin"]) {
		t.Fatalf("uploaded data.bin missing or different (%v)", ok)
	}
	// Download the tree back and compare every file.
	dst := t.TempDir()
	h.mustRun("sbx", "cp", id+":/home/user/project", dst)
	got := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dst, "project"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(filepath.Join(dst, "project"), p)
		got[filepath.ToSlash(rel)] = sum(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Errorf("downloaded %d files, want %d: %v", len(got), len(files), got)
	}
	for name, data := range files {
		if got[name] != sum(data) {
			t.Errorf("%s: checksum differs after the round trip", name)
		}
	}
	// Single file, to an explicit name and back.
	one := filepath.Join(t.TempDir(), "one.txt")
	if err := os.WriteFile(one, []byte("single"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.mustRun("sbx", "cp", one, id+":/tmp/renamed.txt")
	back := filepath.Join(t.TempDir(), "back.txt")
	h.mustRun("sbx", "cp", id+":/tmp/renamed.txt", back)
	if b, _ := os.ReadFile(back); string(b) != "single" {
		t.Errorf("single file round trip = %q", b)
	}
	// Both local, or a relative remote path, is an error.
	if r := h.run("sbx", "cp", one, back); r.code != 1 || !strings.Contains(r.stderr, "exactly one") {
		t.Errorf("local-to-local: %+v", r)
	}
	if r := h.run("sbx", "cp", one, id+":"); r.code != 1 || !strings.Contains(r.stderr, "absolute") {
		t.Errorf("relative remote: %+v", r)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestLifecycleCommands(t *testing.T) {
	h := newHarness(t)
	id := strings.TrimSpace(h.mustRun("sbx", "create"))
	if out := h.mustRun("sbx", "pause", id); out != id+" paused\n" {
		t.Errorf("pause = %q", out)
	}
	if r := h.run("sbx", "pause", id); r.code != 1 || !strings.HasSuffix(r.stderr, "(failed_precondition)\n") {
		t.Errorf("second pause = %+v", r)
	}
	h.mustRun("sbx", "resume", id)
	if out := h.mustRun("sbx", "hibernate", id); out != id+" hibernated\n" {
		t.Errorf("hibernate = %q", out)
	}
	h.mustRun("sbx", "resume", id)
	if out := h.mustRun("sbx", "timeout", id, "120"); out != id+" timeout 120 s\n" {
		t.Errorf("timeout = %q", out)
	}
	forks := strings.Fields(h.mustRun("sbx", "fork", id, "-n", "2"))
	if len(forks) != 2 {
		t.Fatalf("fork printed %v", forks)
	}
	if !strings.Contains(h.mustRun("sbx", "logs", id), id) {
		t.Error("logs lack the sandbox id")
	}
	info := h.mustRun("sbx", "info", id)
	if !strings.Contains(info, "State:") || !strings.Contains(info, "running") {
		t.Errorf("info:\n%s", info)
	}
	r := h.run("sbx", "kill", forks[0], "missing", forks[1])
	if r.code != 1 || r.stdout != forks[0]+"\n"+forks[1]+"\n" || !strings.Contains(r.stderr, "(not_found)") {
		t.Errorf("kill = %+v", r)
	}
	for _, f := range forks {
		if _, ok := h.srv.SandboxState(f); ok {
			t.Errorf("%s still exists", f)
		}
	}
}

func TestShellWithoutTerminal(t *testing.T) {
	h := newHarness(t)
	id := strings.TrimSpace(h.mustRun("sbx", "create"))
	r := h.runIn(strings.NewReader("whoami\rexit 4\r"), "sbx", "shell", id, "--cmd", "/bin/zsh")
	if r.code != 4 || !strings.Contains(r.stdout, "fake pty 80x24 /bin/zsh") || !strings.Contains(r.stdout, "whoami") {
		t.Errorf("shell = %+v", r)
	}
}

func TestTemplatesAndHosts(t *testing.T) {
	h := newHarness(t)
	h.srv.AddTemplate(api.Template{Name: "mine"})
	var tpls []api.Template
	if err := json.Unmarshal([]byte(h.mustRun("template", "ls", "--json")), &tpls); err != nil || len(tpls) != 3 {
		t.Fatalf("template ls --json = %v, %v", tpls, err)
	}
	h.mustRun("template", "rm", "mine")
	if r := h.run("template", "rm", "minimal"); r.code != 1 || !strings.Contains(r.stderr, "(permission_denied)") {
		t.Errorf("rm builtin = %+v", r)
	}

	out := h.mustRun("host", "add", "--type", "byoc", "--address", "10.1.2.3:50051")
	if body := string(h.srv.LastRequest("POST", "/v1/hosts").Body); body != `{"type":"byoc"}` {
		t.Errorf("host add body = %s", body)
	}
	if !strings.Contains(out, "wrenn-agent --register wrr_") || !strings.Contains(out, "--address 10.1.2.3:50051") || !strings.Contains(out, "WRENN_CP_URL="+h.srv.URL) {
		t.Errorf("host add printed:\n%s", out)
	}
	var hosts []api.Host
	if err := json.Unmarshal([]byte(h.mustRun("host", "ls", "--json")), &hosts); err != nil || len(hosts) != 1 || hosts[0].Type != api.HostTypeByoc {
		t.Fatalf("host ls = %v, %v", hosts, err)
	}
	hid := hosts[0].Id.String()
	h.srv.SetHostRunning(hid, 2)
	if r := h.run("host", "rm", hid); r.code != 1 || !strings.Contains(r.stderr, "(failed_precondition)") {
		t.Errorf("rm busy host = %+v", r)
	}
	h.mustRun("host", "rm", "--force", hid)
	if q := h.srv.LastRequest("DELETE", "/v1/hosts/"+hid).Query.Get("force"); q != "true" {
		t.Errorf("force query = %q", q)
	}
	if r := h.run("host", "add", "--type", "weird"); r.code != 1 || !strings.Contains(r.stderr, "regular or byoc") {
		t.Errorf("bad type = %+v", r)
	}
}

// TestCreateIdempotencyKey: --idempotency-key is sent as the header; a
// create without it still sends a fresh key of its own.
func TestCreateIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	h.mustRun("sbx", "create", "--idempotency-key", "nightly-build-42")
	if got := h.srv.LastRequest("POST", "/v1/sandboxes").Header.Get("Idempotency-Key"); got != "nightly-build-42" {
		t.Errorf("Idempotency-Key = %q, want nightly-build-42", got)
	}
	h.mustRun("sbx", "create")
	a := h.srv.LastRequest("POST", "/v1/sandboxes").Header.Get("Idempotency-Key")
	h.mustRun("sbx", "create")
	b := h.srv.LastRequest("POST", "/v1/sandboxes").Header.Get("Idempotency-Key")
	if a == "" || a == b || a == "nightly-build-42" {
		t.Errorf("default keys %q and %q: want fresh, distinct keys", a, b)
	}
}
