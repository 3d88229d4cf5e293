package guestinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// errProcessDone is returned when signalling a child that was already reaped.
var errProcessDone = errors.New("process already exited")

// reaper owns every wait4 in PID 1. Orphans reparent to PID 1, so it must
// reap any pid (wait4(-1)); the children wrenn-init started itself are
// matched by pid and their status handed to whoever started them, which is
// why nothing else may call wait (os/exec would race with it).
type reaper struct {
	log *slog.Logger

	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
}

func newReaper(log *slog.Logger) *reaper {
	return &reaper{log: log, waiting: make(map[int]chan unix.WaitStatus)}
}

// start runs argv with the given stdin, stdout and stderr in a new session.
// The returned channel receives the exit status once.
func (r *reaper) start(argv, env []string, stdio [3]*os.File) (int, <-chan unix.WaitStatus, error) {
	files := make([]uintptr, 3)
	for i, f := range stdio {
		files[i] = f.Fd()
	}
	// Held across fork and registration: a child that dies at once is
	// reaped by run, which takes the lock before looking up the pid.
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiting[pid] = ch
	return pid, ch, nil
}

// signal sends sig to a child started by start, unless it was reaped
// already (its pid may belong to someone else by now).
func (r *reaper) signal(pid int, sig unix.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiting[pid]; !ok {
		return errProcessDone
	}
	if err := unix.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return nil
}

// run reaps on every SIGCHLD until ctx ends. SIGCHLDs coalesce, so each one
// drains every exited child.
func (r *reaper) run(ctx context.Context, sigchld <-chan os.Signal) {
	r.reapAll()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
			r.reapAll()
		}
	}
}

func (r *reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited yet
		}
		r.mu.Lock()
		ch, ok := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ok {
			ch <- ws // buffered, and sent once
		}
	}
}

// liveProcesses counts user processes other than PID 1. Kernel threads and
// zombies have an empty cmdline.
func liveProcesses() int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			n++
		}
	}
	return n
}

// describeStatus renders a wait status for logs.
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}
