// Package compat runs the official E2B SDKs, unchanged and pinned, against a
// whole single-node Wrenn: JavaScript `e2b` (js/package.json and its lock)
// with Node's test runner, and Python `e2b` (python/requirements.txt) with
// pytest. The stack is tests/e2e's kind (a private PostgreSQL, the real
// wrenn-cp and wrenn-agent built from this checkout, real microVMs); the
// SDKs reach it with only what a user sets: E2B_API_URL, E2B_API_KEY (an
// e2b_-format key) and E2B_SANDBOX_URL (plain HTTP, so no TLS or wildcard
// DNS is needed).
//
// The suite installs what it needs itself, into /var/cache/wrenn/compat:
// `npm ci` into a directory keyed by the lockfile's hash, and a virtualenv
// keyed by requirements.txt's hash (and the Python version). It needs root,
// QEMU and the images like tests/e2e: without them it skips and says why
// (or fails under WRENN_TEST_REQUIRE_VM=1). As root, a missing node, npm or
// python3 is a failure, not a skip.
//
// Run one SDK alone with -run TestCompat/js or -run TestCompat/python. The
// whole suite takes longer than go test's default 10 minutes under TCG:
// pass -timeout 60m (make test does).
package compat

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
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/sdkenv"
	"github.com/wrenn/wrenn/internal/tailfile"
	"github.com/wrenn/wrenn/internal/testenv"
)

const (
	// cacheDir holds the installed SDKs between runs (CI caches
	// /var/cache/wrenn).
	cacheDir = "/var/cache/wrenn/compat"
	// pgPort names the stack's private PostgreSQL socket: tests/e2e has
	// 5433, tests/security 5434, the benchmark 5450 and up.
	pgPort = 5435
	// runTimeout bounds one SDK's whole run.
	runTimeout = 50 * time.Minute
)

// e2bKeyShape is what the E2B SDKs and tools expect an API key to look like.
var e2bKeyShape = regexp.MustCompile(`^e2b_[0-9a-f]{40}$`)

var shared struct {
	once  sync.Once
	st    *devstack.Stack
	dir   string // the stack's WRENN_DIR, for its logs
	err   error
	close func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.close != nil {
		shared.close()
	}
	os.Exit(code)
}

func TestCompat(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the compat suite boots a whole stack with VMs and runs the E2B SDKs against it")
	}
	images := testenv.RequireVM(t)
	repo, err := stacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	shared.once.Do(func() { shared.err = startStack(images) })
	if shared.err != nil {
		t.Fatalf("start stack: %v", shared.err)
	}
	st := shared.st
	key := e2bKey(t, st)
	env := []string{
		"E2B_API_URL=" + st.URL,
		"E2B_API_KEY=" + key,
		"E2B_SANDBOX_URL=" + st.URL,
	}
	t.Logf("SDK environment: E2B_API_URL=%s E2B_SANDBOX_URL=%s E2B_API_KEY=e2b_… (no E2B_DOMAIN)", st.URL, st.URL)

	t.Run("js", func(t *testing.T) {
		requireTool(t, "node")
		requireTool(t, "npm")
		requireNode(t)
		modules := installJS(t, filepath.Join(repo, "tests", "compat", "js"))
		runDir := jsRunDir(t, filepath.Join(repo, "tests", "compat", "js"), modules)
		files, err := filepath.Glob(filepath.Join(runDir, "*.test.mjs"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no *.test.mjs in %s (%v)", runDir, err)
		}
		sort.Strings(files)
		for i, f := range files {
			files[i] = filepath.Base(f)
		}
		// One file at a time: at most two sandboxes alive at once on a
		// two-core machine running guests under TCG.
		args := append([]string{"--test", "--test-concurrency=1", "--test-reporter=spec"}, files...)
		runSDK(t, runDir, env, "node", args...)
	})
	t.Run("python", func(t *testing.T) {
		requireTool(t, "python3")
		dir := filepath.Join(repo, "tests", "compat", "python")
		python := installPython(t, dir)
		runSDK(t, dir, append(env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"),
			python, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider")
	})
}

func startStack(images testenv.Images) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ws, err := stacktest.New(ctx, images, "wrenn-compat-", "wrenn-cp", "wrenn-agent")
	if err != nil {
		return err
	}
	shared.dir = ws.Dir
	fmt.Fprintf(os.Stderr, "compat: built binaries in %s\n", ws.BuildTime.Round(time.Millisecond))
	cfg := devstack.Config{
		Dir:       ws.Dir,
		BinDir:    ws.Bin,
		CPAddr:    stacktest.FreeAddr(),
		AgentAddr: stacktest.FreeAddr(),
		PGPort:    pgPort,
		Out:       os.Stderr,
		CPEnv:     []string{"WRENN_DOMAIN=wrenn.test", "WRENN_LOG_LEVEL=debug", "WRENN_METRICS_ADDR=" + stacktest.FreeAddr()},
		// Its own names, ranges and ports: tests/e2e (we2e, 10.90-91,
		// uids from 400000), tests/security (wsec, 10.100-101, 410000), a
		// make up stack (10.11-12, 200000) or a benchmark (10.200 and up)
		// may be on the same machine. The name is fixed: the agent leaves
		// host-wide state named after it (nftables table, cgroup parent,
		// guest-memory tmpfs) for its successor to adopt.
		AgentEnv: []string{"WRENN_LOG_LEVEL=debug", "WRENN_AGENT_NAME=wcompat",
			"WRENN_AGENT_HOST_CIDR=10.94.0.0/16", "WRENN_AGENT_VETH_CIDR=10.95.0.0/16",
			"WRENN_AGENT_METRICS_ADDR=" + stacktest.FreeAddr(), "WRENN_AGENT_VMM_UID_BASE=420000"},
	}
	st, err := devstack.Up(ctx, cfg)
	if err != nil {
		os.RemoveAll(ws.Root)
		return err
	}
	shared.st = st
	shared.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if n, err := st.DestroySandboxes(ctx); err != nil || n > 0 {
			fmt.Fprintf(os.Stderr, "compat: destroyed %d leftover sandboxes (err %v)\n", n, err)
		}
		if err := st.Close(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "compat: stop stack: %v\n", err)
		}
		if os.Getenv("WRENN_COMPAT_KEEP") == "" {
			os.RemoveAll(ws.Root)
		} else {
			fmt.Fprintf(os.Stderr, "compat: kept %s\n", ws.Root)
		}
	}
	return nil
}

// e2bKey logs in as the stack's admin and creates an API key in E2B's shape
// for the admin's team, as a user would for their SDK.
func e2bKey(t *testing.T, st *devstack.Stack) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sess struct {
		Token string `json:"token"`
	}
	if err := call(ctx, st.URL, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": st.Admin.Email, "password": st.Admin.Password}, http.StatusOK, &sess); err != nil {
		t.Fatalf("log in as the admin: %v", err)
	}
	var key struct {
		Key string `json:"key"`
	}
	if err := call(ctx, st.URL, http.MethodPost, "/v1/api-keys", sess.Token, map[string]string{"name": "compat " + time.Now().UTC().Format(time.RFC3339), "format": "e2b"}, http.StatusCreated, &key); err != nil {
		t.Fatalf("create an e2b-format API key: %v", err)
	}
	if !e2bKeyShape.MatchString(key.Key) {
		t.Fatalf("POST /v1/api-keys {format: e2b} answered a key of %d characters starting %q; want e2b_ + 40 lowercase hex", len(key.Key), prefix(key.Key, 4))
	}
	return key.Key
}

func prefix(s string, n int) string {
	if len(s) < n {
		return s
	}
	return s[:n]
}

// call does one JSON request against the control plane.
func call(ctx context.Context, base, method, path, cred string, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(rb)))
	}
	if err := json.Unmarshal(rb, out); err != nil {
		return fmt.Errorf("%s %s: decode %q: %w", method, path, rb, err)
	}
	return nil
}

// requireTool fails the test when bin is not in PATH: the suite only runs
// as root (RequireVM), where CI must have installed the runtimes.
func requireTool(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("the compat suite needs %s in PATH to install and run the E2B SDK: %v", bin, err)
	}
}

// requireNode checks Node is new enough for e2b 2.51 (engines: >=20.18.1):
// an older one installs with a warning and then fails in obscure ways.
func requireNode(t *testing.T) {
	t.Helper()
	out, err := exec.Command("node", "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	parts := strings.SplitN(v, ".", 3)
	major, err1 := strconv.Atoi(parts[0])
	minor := 0
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	if err1 != nil || major < 20 || (major == 20 && minor < 18) || major == 21 {
		t.Fatalf("node %s: the e2b JS SDK needs Node >= 20.18.1 (and not 21)", v)
	}
}

// installJS makes sure the pinned JS SDK is installed (`npm ci` from
// dir's package.json and package-lock.json, internal/sdkenv) and returns
// its node_modules.
func installJS(t *testing.T, dir string) string {
	t.Helper()
	pkg, lock := readFile(t, filepath.Join(dir, "package.json")), readFile(t, filepath.Join(dir, "package-lock.json"))
	w := &lineLog{t: t, prefix: "npm: "}
	defer w.Flush()
	modules, err := sdkenv.Node(context.Background(), cacheDir, pkg, lock, sdkenv.Output(w))
	if err != nil {
		t.Fatalf("install the JS SDK: %v", err)
	}
	return modules
}

// jsRunDir is a fresh directory holding the JS tests beside the cached
// node_modules: ES modules resolve "e2b" from the importing file's
// directory, and the repository must not grow a node_modules.
func jsRunDir(t *testing.T, dir, modules string) string {
	t.Helper()
	run := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".mjs") || e.Name() == "package.json") {
			if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(run, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(modules, filepath.Join(run, "node_modules")); err != nil {
		t.Fatal(err)
	}
	return run
}

// installPython makes sure a virtualenv with dir's requirements.txt
// exists (internal/sdkenv) and returns its python.
func installPython(t *testing.T, dir string) string {
	t.Helper()
	w := &lineLog{t: t, prefix: "pip: "}
	defer w.Flush()
	py, err := sdkenv.Python(context.Background(), cacheDir, readFile(t, filepath.Join(dir, "requirements.txt")), sdkenv.Output(w))
	if err != nil {
		t.Fatalf("install the Python SDK: %v", err)
	}
	return py
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// runSDK runs one SDK's test runner in dir with the E2B environment,
// streaming its output into the test log, and fails the test when the
// runner fails; then it logs the end of the control plane's and the agent's
// logs, which say what Wrenn answered.
func runSDK(t *testing.T, dir string, e2bEnv []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d.Add(-time.Minute))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(sdkEnviron(), e2bEnv...)
	// Its own process group, so a timeout stops the runner's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	w := &lineLog{t: t}
	cmd.Stdout, cmd.Stderr = w, w
	start := time.Now()
	t.Logf("running %s %s in %s", name, strings.Join(args, " "), dir)
	err := cmd.Run()
	w.Flush()
	if err != nil {
		for _, l := range []string{"cp.log", "agent.log"} {
			path := filepath.Join(shared.dir, "logs", l)
			b, _ := tailfile.Read(path, 16<<10)
			t.Logf("end of %s:\n%s", path, b)
		}
		t.Fatalf("%s failed after %s: %v", filepath.Base(name), time.Since(start).Round(time.Second), err)
	}
	t.Logf("%s passed in %s", filepath.Base(name), time.Since(start).Round(time.Second))
}

// sdkEnviron is this process's environment without E2B_ settings, so that
// a developer's own E2B_DOMAIN or E2B_DEBUG cannot steer the SDKs away
// from the stack under test.
func sdkEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "E2B_") {
			env = append(env, kv)
		}
	}
	return env
}

// lineLog writes what a child prints into the test log, a line at a time.
type lineLog struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.t.Log(l.prefix + string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// Flush logs a last line without a newline.
func (l *lineLog) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.t.Log(l.prefix + string(l.buf))
		l.buf = nil
	}
}
