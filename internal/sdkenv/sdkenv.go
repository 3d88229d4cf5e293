// Package sdkenv installs pinned SDK environments — a Python virtualenv from
// a requirements file, a node_modules tree from package.json and its lock —
// into a cache directory, once per distinct input, and says how to run them.
// The benchmark's and the compatibility tests' E2B SDKs come from here.
//
// Each environment is one directory of the cache, named after a SHA-256 of
// what defines it (the requirements or the two npm files, and the runtime's
// version and path, since a virtualenv or a native module is bound to the
// interpreter that made it). A change of input is a new directory; old ones
// stay until someone removes them.
//
// An install is atomic: it is built in a hidden temporary directory beside
// its final name and renamed into place only once complete, so a directory
// under its final name is always complete and a crash leaves only a
// temporary directory (removed by the next install of the same entry). A
// lock file per entry makes a second caller, in this process or another,
// wait for the first one's install instead of racing it, and then use it.
//
// Installs reach the network (pip's index, npm's registry) with the
// caller's environment: PIP_INDEX_URL, npm_config_registry, proxies and the
// like apply. A missing runtime is ErrNoRuntime, so that a caller can skip
// what needs it and say why.
package sdkenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoRuntime is wrapped by the errors of Python and Node when the runtime
// they need (python3 with its venv module, or node and npm) is not
// installed: a reason to skip, not a failed install.
var ErrNoRuntime = errors.New("runtime not installed")

// Option changes how Python and Node install (never what: options are not
// part of the key).
type Option func(*settings)

type settings struct {
	output io.Writer
}

// Output copies the installers' output (venv, pip, npm) to w as it comes,
// for a log that shows a long install's progress; w is called from one
// goroutine at a time. Without it, only a failed install's error carries
// the end of that output.
func Output(w io.Writer) Option {
	return func(s *settings) { s.output = w }
}

func options(opts []Option) settings {
	var s settings
	for _, o := range opts {
		o(&s)
	}
	return s
}

// keyLen is how many hex digits of the SHA-256 name an entry: 96 bits, far
// past any chance of two inputs meeting in one cache.
const keyLen = 24

// lockPoll is how often a caller waiting for another's install retries the
// lock (flock itself cannot be cancelled by a context).
const lockPoll = 100 * time.Millisecond

// Python makes sure a virtualenv with requirements installed (the contents
// of a pip requirements file; pin every package, with hashes if wanted)
// exists in cacheDir, and returns its interpreter, cacheDir/python-<key>/bin/python.
// Run tools as `python -m <module>` (pytest, pip): the scripts in bin/ work
// too, but a module run depends on nothing but the interpreter's path.
//
// The key covers requirements and the python3 in PATH (its version and
// real path). The first call for a key runs `python3 -m venv` and
// `python -m pip install -r`; later calls only look. The error of a failed
// install carries the end of the installer's output.
func Python(ctx context.Context, cacheDir string, requirements []byte, opts ...Option) (python string, err error) {
	o := options(opts)
	ident, err := pythonIdentity(ctx)
	if err != nil {
		return "", err
	}
	name := "python-" + key("python", ident, requirements)
	dir, err := ensure(ctx, cacheDir, name, func(ctx context.Context, tmp string) error {
		return buildPython(ctx, o, tmp, filepath.Join(cacheDir, name), requirements)
	})
	if err != nil {
		return "", fmt.Errorf("python environment in %s: %w", cacheDir, err)
	}
	return filepath.Join(dir, "bin", "python"), nil
}

// Node makes sure `npm ci` of packageJSON and packageLock (package.json and
// package-lock.json) has been run in a directory of cacheDir, and returns
// that directory's node_modules, cacheDir/node-<key>/node_modules.
// Lifecycle scripts are not run (`--ignore-scripts`): an SDK is plain
// JavaScript, and a registry package gets no shell here.
//
// Node resolves a package from the importing file's directory upwards, so
// a caller runs its scripts from a directory holding a node_modules
// symlink to the result (or sets NODE_PATH for CommonJS).
//
// The key covers both files and the node in PATH (its version: native
// modules are bound to its ABI).
func Node(ctx context.Context, cacheDir string, packageJSON, packageLock []byte, opts ...Option) (nodeModulesDir string, err error) {
	o := options(opts)
	if len(bytes.TrimSpace(packageJSON)) == 0 || len(bytes.TrimSpace(packageLock)) == 0 {
		return "", errors.New("node environment: npm ci needs both package.json and package-lock.json")
	}
	ident, err := nodeIdentity(ctx)
	if err != nil {
		return "", err
	}
	name := "node-" + key("node", ident, packageJSON, packageLock)
	dir, err := ensure(ctx, cacheDir, name, func(ctx context.Context, tmp string) error {
		for f, b := range map[string][]byte{"package.json": packageJSON, "package-lock.json": packageLock} {
			if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
				return err
			}
		}
		return run(ctx, o, tmp, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier")
	})
	if err != nil {
		return "", fmt.Errorf("node environment in %s: %w", cacheDir, err)
	}
	return filepath.Join(dir, "node_modules"), nil
}

// key is the hex SHA-256 (keyLen digits) of kind and parts, each part
// length-prefixed so that bytes moved from one part to the next change it.
func key(kind string, parts ...[]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "sdkenv/%s\n", kind)
	for _, p := range parts {
		fmt.Fprintf(h, "%d\n", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:keyLen]
}

// pythonIdentity is the python3 in PATH as a key part (version and real
// executable path), checking on the way that it can make a virtualenv:
// Debian's python3 without python3-venv has no ensurepip.
func pythonIdentity(ctx context.Context) ([]byte, error) {
	if _, err := exec.LookPath("python3"); err != nil {
		return nil, fmt.Errorf("python environment: python3: %w (%v)", ErrNoRuntime, err)
	}
	out, err := exec.CommandContext(ctx, "python3", "-c",
		"import os, sys, venv, ensurepip; print(sys.version); print(os.path.realpath(sys.executable))").CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("python environment: python3 cannot make a virtualenv (on Debian: apt-get install python3-venv): %w: %v: %s",
			ErrNoRuntime, err, tail(out))
	}
	return out, nil
}

// nodeIdentity is the node in PATH as a key part, checking npm is there.
func nodeIdentity(ctx context.Context) ([]byte, error) {
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("node environment: %s: %w (%v)", bin, ErrNoRuntime, err)
		}
	}
	out, err := exec.CommandContext(ctx, "node", "--version").CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("node environment: node --version: %w: %v: %s", ErrNoRuntime, err, tail(out))
	}
	return out, nil
}

// buildPython makes the virtualenv in tmp, installs requirements into it
// and points its scripts at final, where it will be renamed to.
func buildPython(ctx context.Context, o settings, tmp, final string, requirements []byte) error {
	// tmp exists and is empty (MkdirTemp), which venv accepts.
	if err := run(ctx, o, tmp, "python3", "-m", "venv", tmp); err != nil {
		return err
	}
	// Kept in the environment: what it was made from, for whoever looks.
	req := filepath.Join(tmp, "requirements.txt")
	if err := os.WriteFile(req, requirements, 0o644); err != nil {
		return err
	}
	// No version check (a network call and a warning on every install),
	// no prompts; PIP_* settings of the caller still apply.
	if err := run(ctx, o, tmp, filepath.Join(tmp, "bin", "python"), "-m", "pip", "install",
		"--no-input", "--disable-pip-version-check", "-r", req); err != nil {
		return err
	}
	return relocateScripts(filepath.Join(tmp, "bin"), tmp, final)
}

// relocateScripts rewrites the virtualenv's absolute path, from (where it
// was built) to to (where it is renamed), in the text files of its bin/:
// the console scripts' #! lines and the activate scripts name it. The
// interpreter itself finds its environment from its own path at run time
// (pyvenv.cfg beside bin/), so nothing else needs it.
func relocateScripts(bin, from, to string) error {
	entries, err := os.ReadDir(bin)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // python, python3: symlinks to the base interpreter
		}
		p := filepath.Join(bin, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 || !bytes.Contains(b, []byte(from)) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte(from), []byte(to)), fi.Mode().Perm()); err != nil {
			return fmt.Errorf("relocate %s: %w", p, err)
		}
	}
	return nil
}

// ensure returns cacheDir/name, running build into a temporary directory
// and renaming it there first if it does not exist yet, under the entry's
// lock. A directory under the final name is complete by construction.
func ensure(ctx context.Context, cacheDir, name string, build func(ctx context.Context, tmp string) error) (string, error) {
	final := filepath.Join(cacheDir, name)
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil // the common case: no lock needed to read
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("make the cache directory: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(cacheDir, "."+name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another caller may have finished while this one waited.
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil
	} else if err == nil {
		return "", fmt.Errorf("%s exists and is not a directory", final)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	// Under the lock no one else builds this entry: temporary directories
	// of it are a crashed install's leftovers.
	prefix := "." + name + ".tmp-"
	if old, err := filepath.Glob(filepath.Join(cacheDir, prefix+"*")); err == nil {
		for _, o := range old {
			if err := os.RemoveAll(o); err != nil {
				return "", fmt.Errorf("remove an interrupted install: %w", err)
			}
		}
	}
	tmp, err := os.MkdirTemp(cacheDir, prefix)
	if err != nil {
		return "", fmt.Errorf("make a temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing is left there after the rename
	if err := build(ctx, tmp); err != nil {
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	// MkdirTemp made it 0700; the cache is readable like the rest of it
	// (a test run as root, a tool as the user).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("install %s: %w", name, err)
	}
	return final, nil
}

// lock takes an exclusive flock on path (created if needed), polling so
// that ctx can end the wait; the returned func releases it.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("wait for another install (%s): %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// run runs an install step in dir; its error carries the end of the
// step's output, which says what went wrong (a missing package, no
// network).
func run(ctx context.Context, o settings, dir string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out tailBuffer
	var w io.Writer = &out
	if o.output != nil {
		w = io.MultiWriter(&out, o.output)
	}
	// One writer for both: exec then gives them one pipe, so that the
	// writer is never called from two goroutines at once.
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), ctx.Err())
		}
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, tail(out.Bytes()))
	}
	return nil
}

// tailMax is how much of an installer's output an error keeps.
const tailMax = 4096

// tailBuffer keeps the last tailMax*2 bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte { return t.b }

// tail is the last tailMax bytes of out, trimmed.
func tail(out []byte) string {
	if len(out) > tailMax {
		out = out[len(out)-tailMax:]
	}
	return strings.TrimSpace(string(out))
}
