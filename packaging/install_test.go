// Package packaging holds what installs Wrenn on a host (systemd units,
// install.sh behind `make install`); its test stages an install.
package packaging

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/agent"
	cpconfig "github.com/wrenn/wrenn/internal/controlplane/config"
)

var repo = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Dir(wd)
}()

// fakeBuilds is a builds/ directory holding stand-ins for the binaries.
func fakeBuilds(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"wrenn-cp", "wrenn-agent", "wrenn"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho "+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// makeInstall runs make install in the checkout (the parent of this
// package's directory, resolved before any test changes directory).
func makeInstall(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", repo, "install"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// envFile reads KEY=VALUE lines as systemd's EnvironmentFile= does for
// the simple lines the example holds (comments and blank lines skipped,
// surrounding quotes removed).
func envFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=VALUE", path, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, k+"="+v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("installed tree: %v", err)
	}
	return fi.Mode().Perm()
}

// TestMakeInstall stages `make install` into a temporary DESTDIR: the
// binaries, both units (pointing at the installed binaries and env files,
// the agent's with KillMode=process so its VMs outlive it), and env files
// each daemon's own parser accepts, the control plane's with a fresh JWT
// secret. A second install keeps edited env files; systemd-analyze, when
// installed, finds nothing to say about the units.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	builds := fakeBuilds(t)
	dest := t.TempDir()
	out, err := makeInstall(t, "DESTDIR="+dest, "BUILDS="+builds, "PREFIX=/opt/wrenn")
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, want := range []string{"Installed under " + dest, "systemctl enable --now wrenn-cp", "/opt/wrenn/bin/wrenn-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("make install output lacks %q:\n%s", want, out)
		}
	}

	files := map[string]os.FileMode{
		"opt/wrenn/bin/wrenn-cp":                 0o755,
		"opt/wrenn/bin/wrenn-agent":              0o755,
		"opt/wrenn/bin/wrenn":                    0o755,
		"etc/systemd/system/wrenn-cp.service":    0o644,
		"etc/systemd/system/wrenn-agent.service": 0o644,
		"etc/wrenn/wrenn-cp.env":                 0o600,
		"etc/wrenn/wrenn-agent.env":              0o600,
		"etc/wrenn/wrenn-cp.env.example":         0o644,
		"etc/wrenn/wrenn-agent.env.example":      0o644,
	}
	for rel, want := range files {
		if got := mode(t, filepath.Join(dest, rel)); got != want {
			t.Errorf("%s: mode %v, want %v", rel, got, want)
		}
	}
	var n int
	_ = filepath.WalkDir(dest, func(_ string, d os.DirEntry, _ error) error {
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if n != len(files) {
		t.Errorf("installed %d files, want exactly %d", n, len(files))
	}

	unit := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cp, ag := unit("wrenn-cp.service"), unit("wrenn-agent.service")
	for _, c := range []struct{ unit, text, want string }{
		{"wrenn-cp", cp, "\nExecStart=/opt/wrenn/bin/wrenn-cp\n"},
		{"wrenn-cp", cp, "\nEnvironmentFile=/etc/wrenn/wrenn-cp.env\n"},
		{"wrenn-cp", cp, "\nRestart=on-failure\n"},
		{"wrenn-cp", cp, "After=network-online.target postgresql.service\n"},
		{"wrenn-agent", ag, "\nExecStart=/opt/wrenn/bin/wrenn-agent\n"},
		{"wrenn-agent", ag, "\nEnvironmentFile=/etc/wrenn/wrenn-agent.env\n"},
		{"wrenn-agent", ag, "\nRestart=on-failure\n"},
		{"wrenn-agent", ag, "\nKillMode=process\n"},
	} {
		if !strings.Contains(c.text, c.want) {
			t.Errorf("%s.service lacks %q", c.unit, strings.TrimSpace(c.want))
		}
	}
	for _, bad := range []string{"ProtectSystem=", "PrivateTmp=", "PrivateDevices=", "CapabilityBoundingSet=", "SystemCallFilter="} {
		if strings.Contains(ag, "\n"+bad) {
			t.Errorf("wrenn-agent.service sets %s: a private mount namespace or filter the VMMs inherit breaks them", bad)
		}
	}

	cpEnv := envFile(t, filepath.Join(dest, "etc/wrenn/wrenn-cp.env"))
	secret := regexp.MustCompile(`^WRENN_JWT_SECRET=[0-9a-f]{64}$`)
	var secrets int
	for _, kv := range cpEnv {
		if secret.MatchString(kv) {
			secrets++
		}
	}
	if secrets != 1 {
		t.Errorf("wrenn-cp.env: want one generated WRENN_JWT_SECRET of 64 hex digits, got %d", secrets)
	}
	// Each daemon's own parser accepts its file as systemd hands it over
	// (the environment). The control plane parses in an empty directory:
	// it would read a ./.env too.
	t.Chdir(t.TempDir())
	if _, err := cpconfig.Parse(nil, cpEnv, io.Discard); err != nil {
		t.Errorf("wrenn-cp rejects the installed wrenn-cp.env: %v", err)
	}
	agEnv := envFile(t, filepath.Join(dest, "etc/wrenn/wrenn-agent.env"))
	if _, err := agent.ParseDaemonConfig(nil, agEnv, io.Discard); err != nil {
		t.Errorf("wrenn-agent rejects the installed wrenn-agent.env: %v", err)
	}
	for _, kv := range agEnv {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "WRENN_JWT_SECRET=") {
			t.Errorf("wrenn-agent.env carries the control plane's %s", kv)
		}
	}
	for _, kv := range cpEnv {
		if strings.HasPrefix(kv, "WRENN_AGENT_") {
			t.Errorf("wrenn-cp.env carries the agent's %s", kv)
		}
	}

	// An edited env file survives the next install.
	edited := filepath.Join(dest, "etc/wrenn/wrenn-cp.env")
	if err := os.WriteFile(edited, []byte("DATABASE_URL=postgres://mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = makeInstall(t, "DESTDIR="+dest, "BUILDS="+builds, "PREFIX=/opt/wrenn")
	if err != nil {
		t.Fatalf("second make install: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(edited); string(b) != "DATABASE_URL=postgres://mine\n" {
		t.Errorf("the second install overwrote wrenn-cp.env: %q", b)
	}
	if !strings.Contains(out, "Kept") || !strings.Contains(out, "/etc/wrenn/wrenn-cp.env") {
		t.Errorf("the second install does not say it kept wrenn-cp.env:\n%s", out)
	}

	// systemd-analyze checks ExecStart exists, so it verifies copies that
	// point into the staged tree.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: units not verified")
		return
	}
	vdir := t.TempDir()
	var paths []string
	for name, text := range map[string]string{"wrenn-cp.service": cp, "wrenn-agent.service": ag} {
		p := filepath.Join(vdir, name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, "=/opt/wrenn/bin/", "="+dest+"/opt/wrenn/bin/")), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	vout, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(vout))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, vout)
	}
}

// Without the built binaries make install stops and says to build first.
func TestMakeInstallNeedsBuild(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest := t.TempDir()
	out, err := makeInstall(t, "DESTDIR="+dest, "BUILDS="+t.TempDir())
	if err == nil || !strings.Contains(out, "run make build first") {
		t.Errorf("make install without binaries: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Errorf("make install without binaries left %d entries in DESTDIR", len(entries))
	}
}
