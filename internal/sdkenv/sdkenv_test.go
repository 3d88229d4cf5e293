package sdkenv

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKey(t *testing.T) {
	a := key("python", []byte("3.11.7 /usr/bin/python3.11"), []byte("six==1.17.0\n"))
	if len(a) != keyLen {
		t.Fatalf("key %q: want %d hex digits", a, keyLen)
	}
	if b := key("python", []byte("3.11.7 /usr/bin/python3.11"), []byte("six==1.17.0\n")); a != b {
		t.Fatalf("same input, keys %s and %s", a, b)
	}
	for what, other := range map[string]string{
		"requirements": key("python", []byte("3.11.7 /usr/bin/python3.11"), []byte("six==1.16.0\n")),
		"interpreter":  key("python", []byte("3.12.1 /usr/bin/python3.12"), []byte("six==1.17.0\n")),
		"kind":         key("node", []byte("3.11.7 /usr/bin/python3.11"), []byte("six==1.17.0\n")),
	} {
		if other == a {
			t.Errorf("another %s, same key %s", what, a)
		}
	}
	// Bytes moved from package.json to the lock are another input.
	if key("node", []byte("v20"), []byte(`{"a":1}`), []byte(`{}`)) == key("node", []byte("v20"), []byte(`{"a":1}{`), []byte(`}`)) {
		t.Error("parts are not delimited: moving bytes between them keeps the key")
	}
}

func TestEnsureBuildsOnceAndRenames(t *testing.T) {
	cache := t.TempDir()
	var builds atomic.Int32
	var built string
	builder := func(name string) func(context.Context, string) error {
		return func(_ context.Context, tmp string) error {
			builds.Add(1)
			built = tmp
			if filepath.Dir(tmp) != cache {
				t.Errorf("built in %s, want a directory beside the final one in %s", tmp, cache)
			}
			if !strings.HasPrefix(filepath.Base(tmp), "."+name+".tmp-") {
				t.Errorf("temporary directory %s: want a hidden name of the entry", tmp)
			}
			if _, err := os.Stat(filepath.Join(cache, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the final directory exists while building: %v", err)
			}
			return os.WriteFile(filepath.Join(tmp, "marker"), []byte("done"), 0o644)
		}
	}
	build := builder("entry")
	dir, err := ensure(context.Background(), cache, "entry", build)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(cache, "entry") {
		t.Fatalf("dir %s", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "marker")); err != nil || string(b) != "done" {
		t.Fatalf("the build's content is not in the final directory: %q %v", b, err)
	}
	if _, err := os.Stat(built); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory %s still there: %v", built, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("final directory mode %v (%v), want 0755", fi.Mode().Perm(), err)
	}
	if _, err := ensure(context.Background(), cache, "entry", build); err != nil {
		t.Fatal(err)
	}
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds, want 1: a complete entry is reused", n)
	}
	if _, err := ensure(context.Background(), cache, "other", builder("other")); err != nil {
		t.Fatal(err)
	}
	if n := builds.Load(); n != 2 {
		t.Fatalf("%d builds, want 2: another key is another entry", n)
	}
}

func TestEnsureFailedBuildLeavesNothing(t *testing.T) {
	cache := t.TempDir()
	_, err := ensure(context.Background(), cache, "entry", func(_ context.Context, tmp string) error {
		if err := os.WriteFile(filepath.Join(tmp, "half"), []byte("x"), 0o644); err != nil {
			return err
		}
		return errors.New("network down")
	})
	if err == nil || !strings.Contains(err.Error(), "network down") {
		t.Fatalf("err %v: want the build's error", err)
	}
	entries, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ".entry.lock" { // the lock file stays, empty
			t.Errorf("a failed build left %s", e.Name())
		}
	}
	var ran bool
	if _, err := ensure(context.Background(), cache, "entry", func(context.Context, string) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("the next call must build again: ran %v, %v", ran, err)
	}
}

func TestEnsureRemovesInterruptedInstall(t *testing.T) {
	cache := t.TempDir()
	stale := filepath.Join(cache, ".entry.tmp-123")
	if err := os.MkdirAll(filepath.Join(stale, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ensure(context.Background(), cache, "entry", func(context.Context, string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a crashed install's directory is still there: %v", err)
	}
}

func TestEnsureConcurrentCallersBuildOnce(t *testing.T) {
	cache := t.TempDir()
	var builds, inside atomic.Int32
	build := func(_ context.Context, tmp string) error {
		builds.Add(1)
		if inside.Add(1) > 1 {
			t.Error("two builds at once")
		}
		defer inside.Add(-1)
		time.Sleep(50 * time.Millisecond)
		return os.WriteFile(filepath.Join(tmp, "marker"), nil, 0o644)
	}
	var wg sync.WaitGroup
	dirs := make([]string, 6)
	for i := range dirs {
		wg.Go(func() {
			d, err := ensure(context.Background(), cache, "entry", build)
			if err != nil {
				t.Error(err)
			}
			dirs[i] = d
		})
	}
	wg.Wait()
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds for one entry, want 1", n)
	}
	for _, d := range dirs {
		if d != filepath.Join(cache, "entry") {
			t.Fatalf("callers got %v", dirs)
		}
	}
}

func TestEnsureWaitEndsWithContext(t *testing.T) {
	cache := t.TempDir()
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := ensure(context.Background(), cache, "entry", func(context.Context, string) error {
			close(started)
			<-release
			return nil
		})
		done <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 3*lockPoll)
	defer cancel()
	_, err := ensure(ctx, cache, "entry", func(context.Context, string) error {
		t.Error("built while another install held the lock")
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v: want the context's error while another install holds the lock", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRelocateScripts(t *testing.T) {
	root := t.TempDir()
	from, to := filepath.Join(root, ".python-abc.tmp-1"), filepath.Join(root, "python-abc")
	bin := filepath.Join(from, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!" + from + "/bin/python\nimport sys\n"
	if err := os.WriteFile(filepath.Join(bin, "pip"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "activate"), []byte("VIRTUAL_ENV='"+from+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	binary := append([]byte(from), 0, 1, 2)
	if err := os.WriteFile(filepath.Join(bin, "native"), binary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/bin/python3", filepath.Join(bin, "python")); err != nil {
		t.Fatal(err)
	}
	if err := relocateScripts(bin, from, to); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"pip":      "#!" + to + "/bin/python\nimport sys\n",
		"activate": "VIRTUAL_ENV='" + to + "'\n",
		"native":   string(binary),
	} {
		b, err := os.ReadFile(filepath.Join(bin, f))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q (%v), want %q", f, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(bin, "pip")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("pip lost its mode: %v %v", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(bin, "python")); err != nil || l != "/usr/bin/python3" {
		t.Errorf("the interpreter symlink changed: %q %v", l, err)
	}
}

func TestMissingRuntime(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Python(context.Background(), t.TempDir(), []byte("six==1.17.0\n")); !errors.Is(err, ErrNoRuntime) {
		t.Errorf("python3 not in PATH: %v, want ErrNoRuntime", err)
	}
	if _, err := Node(context.Background(), t.TempDir(), []byte(`{}`), []byte(`{}`)); !errors.Is(err, ErrNoRuntime) {
		t.Errorf("node not in PATH: %v, want ErrNoRuntime", err)
	}
}

func TestNodeNeedsLock(t *testing.T) {
	if _, err := Node(context.Background(), t.TempDir(), []byte(`{"name":"x"}`), nil); err == nil || errors.Is(err, ErrNoRuntime) {
		t.Fatalf("no lock file: %v, want a clear error before any install", err)
	}
}

// TestPythonInstall installs a small pinned package from PyPI for real.
func TestPythonInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the real install from PyPI (network, ~10 s)")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed; the install path cannot be tried here")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cache := t.TempDir()
	req := []byte("six==1.17.0\n")
	var log bytes.Buffer
	python, err := Python(ctx, cache, req, Output(&log))
	if errors.Is(err, ErrNoRuntime) {
		t.Skipf("python3 cannot make a virtualenv here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "Successfully installed six-1.17.0") {
		t.Errorf("Output got no pip output: %q", log.String())
	}
	out, err := exec.CommandContext(ctx, python, "-c", "import six, sys; print(six.__version__, sys.prefix)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", python, err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 || fields[0] != "1.17.0" || fields[1] != filepath.Dir(filepath.Dir(python)) {
		t.Fatalf("six version and sys.prefix: %q, want 1.17.0 and %s", out, filepath.Dir(filepath.Dir(python)))
	}
	// The renamed environment's own scripts still run: their #! lines
	// were pointed at the final directory.
	if out, err := exec.CommandContext(ctx, filepath.Join(filepath.Dir(python), "pip"), "--version").CombinedOutput(); err != nil {
		t.Fatalf("bin/pip after the rename: %v: %s", err, out)
	}
	start := time.Now()
	log.Reset()
	again, err := Python(ctx, cache, req, Output(&log))
	if err != nil || again != python {
		t.Fatalf("second call: %s %v, want %s", again, err, python)
	}
	if d := time.Since(start); d > 5*time.Second || log.Len() > 0 {
		t.Errorf("second call took %s and printed %q: it must reuse the environment", d, log.String())
	}
	other, err := Python(ctx, cache, []byte("six==1.16.0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if other == python {
		t.Fatal("other requirements, same environment")
	}
}

// TestNodeInstall runs npm ci of a one-package lock from npm's registry.
func TestNodeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the real npm ci from the registry (network)")
	}
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed; the install path cannot be tried here", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pkg := []byte(`{"name": "sdkenv-test", "version": "1.0.0", "private": true, "dependencies": {"is-number": "7.0.0"}}`)
	lock := []byte(`{
  "name": "sdkenv-test", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {
    "": {"name": "sdkenv-test", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}},
    "node_modules/is-number": {
      "version": "7.0.0",
      "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
      "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==",
      "license": "MIT", "engines": {"node": ">=0.12.0"}
    }
  }
}`)
	cache := t.TempDir()
	modules, err := Node(ctx, cache, pkg, lock)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(modules) != "node_modules" {
		t.Fatalf("got %s, want a node_modules directory", modules)
	}
	cmd := exec.CommandContext(ctx, "node", "-e", `console.log(require("is-number")(5))`)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "true" {
		t.Fatalf("require is-number from %s: %q %v", modules, out, err)
	}
	again, err := Node(ctx, cache, pkg, lock)
	if err != nil || again != modules {
		t.Fatalf("second call: %s %v, want %s", again, err, modules)
	}
}
