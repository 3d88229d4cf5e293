package guestinit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv is the environment of everything wrenn-init starts: the kernel
// gives PID 1 almost none.
var childEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"TERM=xterm-256color",
}

// supervisor keeps one process running, restarting it with backoff, and
// copies its output to out.
type supervisor struct {
	name    string
	argv    []string
	out     io.Writer
	reaper  *reaper
	log     *slog.Logger
	backoff Backoff
	// stopGrace is how long the process gets between SIGTERM and SIGKILL.
	stopGrace time.Duration

	copiers sync.WaitGroup // output copiers, one per run
}

// run starts the process and restarts it whenever it exits, until ctx ends;
// then it stops the process and returns.
func (s *supervisor) run(ctx context.Context) {
	for {
		started := time.Now()
		pid, done, err := s.startOnce()
		if err != nil {
			s.log.Error("start failed", "process", s.name, "err", err)
		} else {
			s.log.Info(s.name+" started", "pid", pid, "uptime_ms", readUptimeMillis())
			select {
			case ws := <-done:
				s.log.Warn(s.name+" exited", "pid", pid, "status", describeStatus(ws), "ran_ms", time.Since(started).Milliseconds())
			case <-ctx.Done():
				s.stop(pid, done)
				return
			}
		}
		delay := s.backoff.Next(time.Since(started))
		s.log.Info("restarting", "process", s.name, "in_ms", delay.Milliseconds())
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

func (s *supervisor) startOnce() (int, <-chan unix.WaitStatus, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, fmt.Errorf("pipe for %s output: %w", s.name, err)
	}
	pid, done, err := s.reaper.start(s.argv, childEnv, [3]*os.File{null, pw, pw})
	pw.Close()
	if err != nil {
		pr.Close()
		return 0, nil, err
	}
	// The copier ends at EOF, when the process and every descendant holding
	// the pipe have exited; shutdown kills them all.
	s.copiers.Add(1)
	go func() {
		defer s.copiers.Done()
		defer pr.Close()
		_, _ = io.Copy(s.out, pr)
	}()
	return pid, done, nil
}

// stop sends SIGTERM (tini passes it on to envd), then SIGKILL after
// stopGrace, and waits for the exit.
func (s *supervisor) stop(pid int, done <-chan unix.WaitStatus) {
	if err := s.reaper.signal(pid, unix.SIGTERM); err != nil {
		s.log.Warn("stop failed", "process", s.name, "pid", pid, "err", err)
	}
	t := time.NewTimer(s.stopGrace)
	defer t.Stop()
	select {
	case ws := <-done:
		s.log.Info(s.name+" stopped", "pid", pid, "status", describeStatus(ws))
		return
	case <-t.C:
	}
	s.log.Warn("killing", "process", s.name, "pid", pid, "grace_ms", s.stopGrace.Milliseconds())
	_ = s.reaper.signal(pid, unix.SIGKILL)
	t.Reset(2 * time.Second)
	select {
	case <-done:
	case <-t.C:
		s.log.Error("process survived SIGKILL", "process", s.name, "pid", pid)
	}
}
