package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Command is how to start one VMM process.
type Command struct {
	// Path is the executable; Args follow it (without argv[0]).
	Path string
	Args []string
	// Env is added to the agent's environment.
	Env []string
	// Dir is the working directory; the agent's when empty.
	Dir string
	// Output receives stdout and stderr. The caller may close its copy once
	// Start returns.
	Output *os.File
	// NetNS is the path of a network namespace to start in (such as
	// /run/netns/<name>); the agent's own when empty.
	NetNS string
	// UID and GID to run as, with Groups as the only supplementary groups;
	// UID and GID both zero keeps the agent's identity.
	UID, GID uint32
	Groups   []uint32
	// Jail, when set, confines the process's view of the file system (see
	// Jail); nil runs it in the agent's.
	Jail *Jail
}

// Jail is a VMM's minimal file system, in the way of Firecracker's jailer:
// the process starts in a mount namespace of its own whose root is an
// empty tmpfs holding only these paths, each bind-mounted at the same
// absolute path it has on the host (so the VMM's arguments need no
// rewriting, and the host still reaches its sockets at their host paths).
// The host's other mounts are detached from that namespace, not hidden.
// Symlinks among the paths are followed; a path inside another is carried
// by the outer one.
type Jail struct {
	// ReadOnly paths: the binary and its libraries, kernel, backing disks.
	ReadOnly []string
	// ReadWrite paths: the VMM's own directory, its memory file. Nothing
	// in them may be executed.
	ReadWrite []string
	// Devices are device nodes the VMM opens, such as /dev/kvm.
	Devices []string
}

// Process is a running VMM, watched through a pidfd so that its exit is seen
// whether it is the agent's child (Start) or was left by an earlier agent
// (Adopt). It owns one goroutine, which ends when the process exits or on
// Release.
type Process struct {
	pid   int
	pidfd int
	cmd   *exec.Cmd // nil when adopted: init reaps the process then
	log   *slog.Logger

	exited    chan struct{} // closed once the process is gone
	wakeW     *os.File      // closing it wakes the watcher
	watchDone chan struct{}

	mu       sync.Mutex // guards pidfd against use after Release, and console
	released bool
	console  *Console // nil until StartConsole
}

// ConsoleDrain bounds how long Release waits for the console copy to catch
// up with a process that has already exited.
const ConsoleDrain = 2 * time.Second

// Start starts c detached from the agent: in its own session (a signal to
// the agent's process group does not reach it) and with no Pdeathsig, so it
// outlives an agent that is killed or restarted. log receives its exit. On
// error nothing is left running.
func Start(c Command, log *slog.Logger) (*Process, error) {
	cmd, err := start(c)
	if err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	// A pidfd of our unreaped child cannot refer to anyone else.
	pidfd, err := pidfdOpen(pid)
	if err == nil {
		var p *Process
		if p, err = watch(pid, pidfd, cmd, log); err == nil {
			return p, nil
		}
		closeFD(pidfd)
	} else {
		err = fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, err
}

// Adopt takes over the process recorded in pidFile, after checking with
// match that its command line is this sandbox's VMM and not an unrelated
// process that reused a stale pid. None running is errdefs.ErrNotFound.
func Adopt(pidFile string, match func(argv []string) bool, log *slog.Logger) (*Process, error) {
	pid, pidfd, err := lookup(pidFile, match)
	if err != nil {
		return nil, err
	}
	p, err := watch(pid, pidfd, nil, log)
	if err != nil {
		closeFD(pidfd)
		return nil, err
	}
	return p, nil
}

// Running returns the pid of the process recorded in pidFile if it runs and
// match accepts its command line, else errdefs.ErrNotFound.
func Running(pidFile string, match func(argv []string) bool) (int, error) {
	pid, pidfd, err := lookup(pidFile, match)
	if err != nil {
		return 0, err
	}
	closeFD(pidfd)
	return pid, nil
}

// Matches reports whether process pid runs with a command line match
// accepts.
func Matches(pid int, match func(argv []string) bool) bool {
	argv, err := cmdline(pid)
	return err == nil && match(argv)
}

// lookup opens a pidfd for the process in pidFile. The command line is
// checked again once the pidfd is open, so the fd cannot refer to a process
// that took over the pid in between.
func lookup(pidFile string, match func(argv []string) bool) (pid, pidfd int, err error) {
	pid, err = ReadPIDFile(pidFile)
	if err != nil {
		return 0, -1, err
	}
	if !Matches(pid, match) {
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "pid file %s: pid %d is not the vmm (stale pid file)", pidFile, pid)
	}
	pidfd, err = pidfdOpen(pid)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return 0, -1, errdefs.New(errdefs.ErrNotFound, "pid file %s: vmm pid %d exited", pidFile, pid)
		}
		return 0, -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	if !Matches(pid, match) {
		closeFD(pidfd)
		return 0, -1, errdefs.New(errdefs.ErrNotFound, "pid file %s: vmm pid %d exited", pidFile, pid)
	}
	return pid, pidfd, nil
}

// watch starts the goroutine that waits for pidfd to report the exit.
func watch(pid, pidfd int, cmd *exec.Cmd, log *slog.Logger) (*Process, error) {
	wakeR, wakeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create wake pipe: %w", err)
	}
	p := &Process{
		pid: pid, pidfd: pidfd, cmd: cmd, log: log,
		exited:    make(chan struct{}),
		wakeW:     wakeW,
		watchDone: make(chan struct{}),
	}
	go p.watch(wakeR)
	return p, nil
}

func (p *Process) watch(wakeR *os.File) {
	defer close(p.watchDone)
	defer wakeR.Close()
	gone, err := waitExit(p.pidfd, wakeR)
	if err != nil {
		p.log.Error("wait for vmm exit failed", "pid", p.pid, "err", err)
		return
	}
	if !gone {
		return // Release
	}
	if p.cmd != nil {
		// Reap our child. Its exit status is no error here: a guest that
		// powers off or panics exits 0, a kill does not.
		_ = p.cmd.Wait()
	}
	p.log.Info("vmm exited", "pid", p.pid)
	close(p.exited)
}

// PID of the process.
func (p *Process) PID() int { return p.pid }

// Exited is closed once the process is gone.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Signal sends sig through the pidfd, so it cannot reach a process that
// reused the pid. A process that is already gone is no error; a Released
// one is errdefs.ErrFailedPrecondition.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("signal pid %d: %w", p.pid, err)
	}
	return nil
}

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		// The fd number may already name something else.
		return errdefs.New(errdefs.ErrFailedPrecondition, "process was released")
	}
	if err := pidfdSignal(p.pidfd, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// KillWait bounds Kill's wait for a SIGKILLed process to disappear. Only a
// process stuck in uninterruptible I/O takes longer.
const KillWait = 10 * time.Second

// Kill sends SIGKILL and waits, up to KillWait, for the process to be gone.
func (p *Process) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill pid %d: %w", p.pid, err)
	}
	t := time.NewTimer(KillWait)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
		return fmt.Errorf("pid %d still alive %s after SIGKILL", p.pid, KillWait)
	}
}

// Wait blocks until the process exits. It fails with ctx's error if ctx ends
// first, and with errdefs.ErrFailedPrecondition once Released (the exit is
// then no longer observed).
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.watchDone:
		select {
		case <-p.exited:
			return nil
		default:
		}
		return errdefs.New(errdefs.ErrFailedPrecondition, "machine was closed")
	}
}

// StartConsole copies the process's console output from src into logPath
// (see the package-level StartConsole) until the process closes it or the
// Process is released. It takes ownership of src.
func (p *Process) StartConsole(src io.ReadCloser, logPath string, max int64) error {
	c, err := StartConsole(src, logPath, max)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released || p.console != nil {
		return errors.Join(errdefs.New(errdefs.ErrFailedPrecondition, "console of pid %d: already attached or released", p.pid), c.Close())
	}
	p.console = c
	return nil
}

// Release lets go of the process without stopping it: it ends the console
// copy (after draining it, up to ConsoleDrain, if the process has exited),
// stops the watcher and closes the pidfd. A later Adopt can take the
// process over again. Releasing twice is a no-op. The error is the console
// copy's.
func (p *Process) Release() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return nil
	}
	p.released = true
	var err error
	if p.console != nil {
		select {
		case <-p.exited:
			err = p.console.Drain(ConsoleDrain)
		default:
			err = p.console.Close()
		}
	}
	p.wakeW.Close()
	<-p.watchDone
	closeFD(p.pidfd)
	return err
}
