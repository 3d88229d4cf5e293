package qemu

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

// startQEMU starts bin with args, detached from the agent: its own session
// (a signal to the agent's process group does not reach it), stdio in log,
// and no Pdeathsig, so QEMU outlives an agent that is killed or restarted.
// With netnsPath set QEMU starts inside that network namespace.
func startQEMU(bin string, args []string, log *os.File, netnsPath string, uid, gid uint32) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if uid != 0 || gid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	}
	if netnsPath == "" {
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		return cmd, nil
	}

	// The forked child inherits the network namespace of the OS thread that
	// forks it. Switch one locked thread into the netns, fork, switch back.
	// This runs on a goroutine of its own: if switching back fails, the
	// goroutine exits still locked and the runtime discards the tainted
	// thread instead of reusing it.
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
		target, err := netns.GetFromPath(netnsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- errdefs.FromOS(fmt.Errorf("open netns %s: %w", netnsPath, err))
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", netnsPath, err)
			return
		}
		startErr := cmd.Start()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(startErr, fmt.Errorf("return from netns %s: %w", netnsPath, err))
			return
		}
		runtime.UnlockOSThread()
		if startErr != nil {
			startErr = fmt.Errorf("start %s in netns %s: %w", bin, netnsPath, startErr)
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

// readPIDFile returns the pid QEMU wrote to path. A missing file is
// errdefs.ErrNotFound.
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

// isQEMUFor reports whether process pid is a QEMU started with pidFile as its
// -pidfile, i.e. the VMM of this sandbox and not an unrelated process that
// reused a stale pid.
func isQEMUFor(pid int, pidFile string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	argv := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	if len(argv) == 0 || !strings.Contains(filepath.Base(string(argv[0])), "qemu") {
		return false
	}
	for i := 1; i+1 < len(argv); i++ {
		if string(argv[i]) == "-pidfile" && string(argv[i+1]) == pidFile {
			return true
		}
	}
	return false
}

// runningQEMU returns a pidfd for the QEMU recorded in dir's pid file, or
// errdefs.ErrNotFound when no such process runs. The identity is checked
// again after the pidfd is open, so the fd cannot refer to a reused pid.
func runningQEMU(dir string) (pid, pidfd int, err error) {
	pidFile := filepath.Join(dir, PIDFileName)
	pid, err = readPIDFile(pidFile)
	if err != nil {
		return 0, -1, err
	}
	if !isQEMUFor(pid, pidFile) {
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "no qemu for %s runs (stale pid %d)", dir, pid)
	}
	pidfd, err = unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return 0, -1, errdefs.New(errdefs.ErrNotFound, "qemu pid %d for %s exited", pid, dir)
		}
		return 0, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if !isQEMUFor(pid, pidFile) {
		unix.Close(pidfd)
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "qemu pid %d for %s exited", pid, dir)
	}
	return pid, pidfd, nil
}

// logTail returns the last few non-empty lines of QEMU's log, for errors.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tailBytes = 2048
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-tailBytes, 0)
	b := make([]byte, tailBytes)
	n, _ := f.ReadAt(b, off)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b[:n])), "\n") {
		// The driver's own "--- time argv" header says nothing new.
		if strings.HasPrefix(l, "--- ") {
			lines = lines[:0]
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
