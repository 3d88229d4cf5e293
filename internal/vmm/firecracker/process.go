package firecracker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// procSpec is how to start one firecracker process.
type procSpec struct {
	bin      string
	args     []string
	env      []string // appended to the agent's environment
	dir      string   // working directory
	out      *os.File // stdout and stderr
	netns    string
	uid, gid uint32
}

// startProcess starts firecracker detached from the agent: its own session
// (a signal to the agent's process group does not reach it) and no
// Pdeathsig, so it outlives an agent that is killed or restarted. With
// netns set it starts inside that network namespace.
func startProcess(p procSpec) (*exec.Cmd, error) {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Dir = p.dir
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.uid != 0 || p.gid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: p.uid, Gid: p.gid, Groups: []uint32{}}
	}
	if p.netns == "" {
		if err := cmd.Start(); err != nil {
			return nil, errdefs.FromOS(fmt.Errorf("start %s: %w", p.bin, err))
		}
		return cmd, nil
	}

	// A forked child inherits the network namespace of the OS thread that
	// forks it. One locked thread enters the netns, forks, and returns. It
	// runs on a goroutine of its own: if returning fails, the goroutine
	// exits still locked and the runtime discards the tainted thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(p.netns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- errdefs.FromOS(fmt.Errorf("open netns %s: %w", p.netns, err))
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", p.netns, err)
			return
		}
		startErr := cmd.Start()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(startErr, fmt.Errorf("return from netns %s: %w", p.netns, err))
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		if startErr != nil {
			startErr = errdefs.FromOS(fmt.Errorf("start %s in netns %s: %w", p.bin, p.netns, startErr))
		}
		errc <- startErr
	}()
	if err := <-errc; err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		return nil, err
	}
	return cmd, nil
}

// writePIDFile records pid for Attach. Firecracker writes none itself.
// Written to a temporary name and renamed, so a reader never sees half.
func writePIDFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

// readPIDFile returns the pid in path; a missing file is ErrNotFound.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, errdefs.FromOS(fmt.Errorf("read pid file: %w", err))
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, errdefs.New(errdefs.ErrNotFound, "pid file %s: no pid in %.20q", path, b)
	}
	return pid, nil
}

// isFirecrackerFor reports whether process pid was started with sock as its
// --api-sock, i.e. is this sandbox's VMM and not an unrelated process that
// reused a stale pid. The socket path is unique to the sandbox's Dir.
func isFirecrackerFor(pid int, sock string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	argv := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	for i := 1; i+1 < len(argv); i++ {
		if string(argv[i]) == "--api-sock" && string(argv[i+1]) == sock {
			return true
		}
	}
	return false
}

// runningFirecracker returns a pidfd for the firecracker recorded in dir's
// pid file, or ErrNotFound when none runs. The identity is checked again
// once the pidfd is open, so the fd cannot refer to a reused pid.
func runningFirecracker(dir string) (pid, pidfd int, err error) {
	pid, err = readPIDFile(filepath.Join(dir, PIDFileName))
	if err != nil {
		return 0, -1, err
	}
	sock := filepath.Join(dir, APISocketName)
	if !isFirecrackerFor(pid, sock) {
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "no firecracker for %s runs (stale pid %d)", dir, pid)
	}
	pidfd, err = unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, -1, errdefs.New(errdefs.ErrNotFound, "firecracker pid %d for %s exited", pid, dir)
		}
		return 0, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if !isFirecrackerFor(pid, sock) {
		unix.Close(pidfd)
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "firecracker pid %d for %s exited", pid, dir)
	}
	return pid, pidfd, nil
}

// Available reports whether binary exists and this process may execute it.
// The agent's driver selection uses it.
func Available(binary string) bool {
	st, err := os.Stat(binary)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	return unix.Access(binary, unix.X_OK) == nil
}
