//go:build linux

package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// The test binary doubles as the "VMM": with helperEnv set it runs one of
// these modes instead of the tests.
const (
	helperEnv = "WRENN_VMMPROC_TEST_HELPER"
	// helperIdle prints its working directory and $WRENN_VMMPROC_TEST_X,
	// then idles until killed.
	helperIdle = "idle"
	// helperSpawner starts an idle helper with Start, records it in the
	// pid file named by its last argument and exits, leaving the idle
	// helper to be reparented: a VMM whose agent is gone.
	helperSpawner = "spawner"
	sandboxFlag   = "-vmmproc.sandbox"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case helperIdle:
		wd, _ := os.Getwd()
		fmt.Printf("cwd=%s x=%s\n", wd, os.Getenv("WRENN_VMMPROC_TEST_X"))
		for {
			time.Sleep(time.Hour) // a stand-in VMM idles until killed
		}
	case helperSpawner:
		pidFile := os.Args[len(os.Args)-1]
		p, err := Start(helperCommand(filepath.Dir(pidFile), helperIdle), slog.New(slog.DiscardHandler))
		if err == nil {
			err = WritePIDFile(pidFile, p.PID())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperCommand runs this test binary in mode, recognisable by sandbox.
func helperCommand(sandbox, mode string) Command {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return Command{Path: self, Args: []string{sandboxFlag, sandbox}, Env: []string{helperEnv + "=" + mode}}
}

func matchSandbox(dir string) func([]string) bool {
	return func(argv []string) bool { return HasFlag(argv, sandboxFlag, dir) }
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startHelper starts an idle helper for a fresh sandbox dir and kills it
// when the test ends.
func startHelper(t *testing.T, c func(*Command)) (*Process, string) {
	t.Helper()
	dir := t.TempDir()
	cmd := helperCommand(dir, helperIdle)
	if c != nil {
		c(&cmd)
	}
	p, err := Start(cmd, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := p.Kill()
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			// Released by the test: kill by pid, if it is still ours.
			if Matches(p.PID(), matchSandbox(dir)) {
				_ = syscall.Kill(p.PID(), syscall.SIGKILL)
			}
			return
		}
		if err != nil {
			t.Errorf("cleanup kill: %v", err)
		}
		if err := p.Release(); err != nil {
			t.Errorf("cleanup release: %v", err)
		}
	})
	return p, dir
}

// waitFile polls path until it contains want.
func waitFile(t *testing.T, path, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed %q: %q", path, want, b)
		case <-tick.C:
		}
	}
}

func TestStartDetached(t *testing.T) {
	outDir := t.TempDir()
	out, err := os.Create(filepath.Join(outDir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	workDir := t.TempDir()
	p, _ := startHelper(t, func(c *Command) {
		c.Output, c.Dir = out, workDir
		c.Env = append(c.Env, "WRENN_VMMPROC_TEST_X=from-env")
	})
	sid, err := unix.Getsid(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	if sid != p.PID() {
		t.Fatalf("vmm session %d, want its own (%d): a signal to the agent's group would reach it", sid, p.PID())
	}
	waitFile(t, out.Name(), "cwd="+workDir+" x=from-env\n")

	wctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a running process = %v, want DeadlineExceeded", err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatalf("wait after SIGTERM: %v", err)
	}
	// Signalling and killing what is gone is no error.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal after exit: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("kill after exit: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{name: "missing binary", cmd: Command{Path: "/nonexistent/vmm"}, want: errdefs.ErrNotFound},
		{name: "missing netns", cmd: Command{Path: "/bin/true", NetNS: "/run/netns/wrenn-vmmproc-missing"}, want: os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Start(tt.cmd, testLog(t))
			if !errors.Is(err, tt.want) {
				if p != nil {
					_ = p.Kill()
				}
				t.Fatalf("Start = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAdopt(t *testing.T) {
	p, dir := startHelper(t, nil)
	pidFile := filepath.Join(dir, "vmm.pid")
	match := matchSandbox(dir)

	if _, err := Adopt(pidFile, match, testLog(t)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("adopt without a pid file: err = %v, want NotFound", err)
	}
	// A stale pid file naming some other live process (ourselves).
	if err := WritePIDFile(pidFile, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(pidFile, match, testLog(t)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("adopt with a stale pid: err = %v, want NotFound", err)
	}
	if _, err := Running(pidFile, match); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("running with a stale pid: err = %v, want NotFound", err)
	}

	if err := WritePIDFile(pidFile, p.PID()); err != nil {
		t.Fatal(err)
	}
	if pid, err := Running(pidFile, match); err != nil || pid != p.PID() {
		t.Fatalf("Running = %d, %v; want %d", pid, err, p.PID())
	}
	if _, err := Running(pidFile, matchSandbox("/elsewhere")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("running for another sandbox: err = %v, want NotFound", err)
	}
	// Release lets go without stopping; Wait then says so.
	p.Release()
	p.Release()
	if err := p.Wait(t.Context()); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Wait after Release = %v, want FailedPrecondition", err)
	}
	if err := p.Kill(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Kill after Release = %v, want FailedPrecondition (its pidfd is closed)", err)
	}
	a, err := Adopt(pidFile, match, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if a.PID() != p.PID() {
		t.Fatalf("adopted pid %d, started %d", a.PID(), p.PID())
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(t.Context()); err != nil {
		t.Fatalf("wait after kill: %v", err)
	}
}

// TestAdoptOrphan adopts a VMM whose starter has exited, so it is not our
// child: its exit is seen through the pidfd alone.
func TestAdoptOrphan(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "vmm.pid")
	spawner := helperCommand(dir, helperSpawner)
	cmd := exec.Command(spawner.Path, append(spawner.Args, pidFile)...)
	cmd.Env = append(os.Environ(), spawner.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("spawner: %v: %s", err, out)
	}
	p, err := Adopt(pidFile, matchSandbox(dir), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if err := unix.Kill(p.PID(), 0); err != nil {
		t.Fatalf("adopted pid %d: %v", p.PID(), err)
	}
	if ppid := parentOf(t, p.PID()); ppid == os.Getpid() {
		t.Fatalf("pid %d is our child; the test needs an orphan", p.PID())
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatalf("wait for a non-child: %v", err)
	}
	if _, err := Running(pidFile, matchSandbox(dir)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("running after kill: err = %v, want NotFound", err)
	}
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...; comm may hold spaces, so cut at the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("parse %s/stat: %v", strconv.Itoa(pid), err)
	}
	return ppid
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and other users' credentials")
	}
}

func TestStartInNetNS(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create a netns")
	}
	name := "wrenn-vmmproc-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	target, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	p, _ := startHelper(t, func(c *Command) { c.NetNS = "/run/netns/" + name })

	in, err := netns.GetFromPid(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if !in.Equal(target) {
		t.Fatalf("vmm runs in %s, want %s", in, target)
	}
	// Start's locked thread went back: no thread of ours stays inside.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		h, err := netns.GetFromPath("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread has gone meanwhile
		}
		inside := h.Equal(target)
		h.Close()
		if inside {
			t.Fatalf("thread %s of the test process was left inside the netns", task.Name())
		}
	}
}

// procStatus is the value of field in /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

func TestStartAsUser(t *testing.T) {
	requireRoot(t)
	const nobody = 65534
	// nobody must be able to execute the helper: copy it where it can.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := os.MkdirTemp("", "vp-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(binDir, "vmm")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	p, _ := startHelper(t, func(c *Command) { c.Path, c.UID, c.GID, c.Dir = exe, nobody, nobody, "/" })
	ids := strconv.Itoa(nobody)
	ids = strings.Join([]string{ids, ids, ids, ids}, " ") // real, effective, saved, fs
	tests := []struct{ field, want string }{
		{"Uid", ids}, {"Gid", ids}, {"Groups", ""},
	}
	for _, tt := range tests {
		if got := procStatus(t, p.PID(), tt.field); got != tt.want {
			t.Errorf("vmm %s = %q, want %q", tt.field, got, tt.want)
		}
	}
}

// TestProcessConsole checks that Release, after the process has exited,
// drains what it printed last into the log before letting go.
func TestProcessConsole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	workDir := t.TempDir()
	p, _ := startHelper(t, func(c *Command) { c.Output, c.Dir = w, workDir })
	w.Close() // the process holds its own copy
	logPath := filepath.Join(t.TempDir(), "console.log")
	if err := p.StartConsole(r, logPath, 1<<20); err != nil {
		t.Fatal(err)
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if err := p.StartConsole(r2, logPath, 1<<20); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second console: err = %v, want FailedPrecondition", err)
	}
	waitFile(t, logPath, "cwd="+workDir)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if b, _ := os.ReadFile(logPath); !strings.HasPrefix(string(b), "cwd="+workDir+" x=\n") {
		t.Fatalf("console.log = %q", b)
	}
}
