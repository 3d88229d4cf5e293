//go:build linux

package vmmproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// start forks c; see Start.
func start(c Command) (*exec.Cmd, error) {
	cmd := exec.Command(c.Path, c.Args...)
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.Dir = c.Dir
	cmd.Stdout = c.Output
	cmd.Stderr = c.Output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c.UID != 0 || c.GID != 0 {
		// setgroups is called whatever Groups holds (NoSetGroups is false), so
		// the agent's own supplementary groups are never inherited.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.Groups}
	}
	if c.NetNS == "" && c.Jail == nil {
		if err := cmd.Start(); err != nil {
			return nil, errdefs.FromOS(fmt.Errorf("start %s: %w", c.Path, err))
		}
		return cmd, nil
	}

	if c.Jail != nil {
		if err := startJailed(cmd, c); err != nil {
			return nil, err
		}
		return cmd, nil
	}

	// A forked child inherits the network namespace of the OS thread that
	// forks it. One locked thread enters the netns, forks, and returns. It
	// runs on a goroutine of its own: if returning fails, the goroutine
	// exits still locked and the runtime discards the tainted thread instead
	// of reusing it.
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
		target, err := netns.GetFromPath(c.NetNS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- errdefs.FromOS(fmt.Errorf("open netns %s: %w", c.NetNS, err))
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", c.NetNS, err)
			return
		}
		startErr := cmd.Start()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(startErr, fmt.Errorf("return from netns %s: %w", c.NetNS, err))
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		if startErr != nil {
			startErr = errdefs.FromOS(fmt.Errorf("start %s in netns %s: %w", c.Path, c.NetNS, startErr))
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

// startJailed starts cmd from a locked thread that enters c's network
// namespace and then the jail (a mount namespace and root of its own). A
// thread cannot well leave a mount namespace or root again, so it is
// never given back: the goroutine ends still locked and the runtime
// discards the thread.
func startJailed(cmd *exec.Cmd, c Command) error {
	// Opened here, not by Start inside the jail, which has no /dev/null of
	// its own unless asked.
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devNull.Close()
	cmd.Stdin = devNull
	errc := make(chan error, 1)
	onDisposableThread(func() {
		if c.NetNS != "" {
			target, err := netns.GetFromPath(c.NetNS)
			if err != nil {
				errc <- errdefs.FromOS(fmt.Errorf("open netns %s: %w", c.NetNS, err))
				return
			}
			err = netns.Set(target)
			target.Close()
			if err != nil {
				errc <- fmt.Errorf("enter netns %s: %w", c.NetNS, err)
				return
			}
		}
		if err := enterJail(c.Jail); err != nil {
			errc <- fmt.Errorf("start %s: %w", c.Path, err)
			return
		}
		if err := cmd.Start(); err != nil {
			errc <- errdefs.FromOS(fmt.Errorf("start %s in its jail: %w", c.Path, err))
			return
		}
		errc <- nil
	})
	if err := <-errc; err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		return err
	}
	return nil
}

// onDisposableThread runs fn on an OS thread locked to it that the runtime
// discards when fn returns (its goroutine ends still locked). That thread
// is never the main thread: the runtime cannot discard that one and would
// keep it, namespaces and all, and /proc/self/ns/* name the main thread's
// namespaces. While the main thread is held by a goroutine locked to it,
// no other goroutine can run there, so fn is then given another thread.
func onDisposableThread(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return // still locked: the thread goes
		}
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			defer close(done)
			fn()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}

func pidfdOpen(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

func pidfdSignal(pidfd int, sig syscall.Signal) error {
	return unix.PidfdSendSignal(pidfd, sig, nil, 0)
}

func closeFD(fd int) { unix.Close(fd) }

// waitExit polls the pidfd, which becomes readable when the process exits,
// and wake, which becomes readable when its write end is closed. It reports
// whether the process exited.
func waitExit(pidfd int, wake *os.File) (bool, error) {
	fds := []unix.PollFd{
		{Fd: int32(pidfd), Events: unix.POLLIN},
		{Fd: int32(wake.Fd()), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll pidfd: %w", err)
		}
		if fds[0].Revents != 0 {
			return true, nil
		}
		if fds[1].Revents != 0 {
			return false, nil
		}
	}
}

// cmdline is process pid's argv from /proc.
func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	var argv []string
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		argv = append(argv, string(a))
	}
	return argv, nil
}
