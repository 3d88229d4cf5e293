package devstack

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a progress writer the test reads while supervisors write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fakeStack is a Stack with no PostgreSQL or Wrenn daemons, whose
// "wrenn-cp" is whatever command the test gives, to exercise supervision.
func fakeStack(t *testing.T, out *lockedBuffer, policy RestartPolicy) *Stack {
	t.Helper()
	cfg := Config{Dir: t.TempDir(), Out: out, ReadyTimeout: 10 * time.Second, Restart: policy}
	cfg.defaults()
	return &Stack{cfg: cfg, restarts: map[string]int{}, closed: make(chan struct{}), failed: make(chan struct{})}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A daemon killed while the stack runs is started again, the restart is
// reported on the stack's output, and Close stops the new one without
// restarting it.
func TestSuperviseRestartsKilledDaemon(t *testing.T) {
	var out lockedBuffer
	s := fakeStack(t, &out, RestartPolicy{Backoff: 10 * time.Millisecond})
	log := filepath.Join(s.cfg.Dir, "cp.log")
	start := func() (*child, error) { return startChild("/bin/sleep", []string{"600"}, nil, log) }
	var err error
	if s.cp, err = start(); err != nil {
		t.Fatal(err)
	}
	s.supervise(context.Background(), &daemon{name: CP, start: start,
		ready: func(context.Context, *child, time.Time) error { return nil }})

	for attempt := 1; attempt <= 2; attempt++ {
		pid := s.PID(CP)
		if pid == 0 {
			t.Fatal("no pid for the running daemon")
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "restart", 10*time.Second, func() bool { return s.Restarts(CP) == attempt })
		if p := s.PID(CP); p == 0 || p == pid {
			t.Fatalf("after restart %d: pid %d (killed %d)", attempt, p, pid)
		}
	}
	got := out.String()
	for _, want := range []string{
		"==> wrenn-cp exited: signal: killed; restarting (attempt 1)\n",
		"==> wrenn-cp exited: signal: killed; restarting (attempt 2)\n",
		"==> wrenn-cp is back (",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	last := s.current(CP)
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-last.done:
	default:
		t.Fatal("Close left the daemon running")
	}
	if err := s.Wait(context.Background()); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	if n := s.Restarts(CP); n != 2 {
		t.Errorf("restarts after Close: %d, want 2 (Close's stop is no crash)", n)
	}
}

// A daemon that keeps dying right after it starts is restarted with a
// growing backoff, then given up on: Wait returns an error naming it and
// its last log lines.
func TestSuperviseGivesUp(t *testing.T) {
	var out lockedBuffer
	s := fakeStack(t, &out, RestartPolicy{Backoff: 50 * time.Millisecond, MaxCrashes: 3, Window: time.Minute})
	log := filepath.Join(s.cfg.Dir, "cp.log")
	start := func() (*child, error) {
		return startChild("/bin/sh", []string{"-c", "echo database is gone >&2; exit 3"}, nil, log)
	}
	var err error
	if s.cp, err = start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	s.supervise(context.Background(), &daemon{name: CP, start: start,
		ready: func(ctx context.Context, c *child, _ time.Time) error {
			return s.poll(ctx, "never healthy", c, func(context.Context) (bool, error) { return false, nil })
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	werr := s.Wait(ctx)
	elapsed := time.Since(began)
	if werr == nil {
		t.Fatalf("Wait: nil, want the give-up error; output:\n%s", out.String())
	}
	for _, want := range []string{"wrenn-cp exited: exit status 3", "crashed 4 times within 1m0s, giving up", "database is gone"} {
		if !strings.Contains(werr.Error(), want) {
			t.Errorf("Wait error lacks %q: %v", want, werr)
		}
	}
	// 50 + 100 + 200 ms of backoff before the three restarts.
	if elapsed < 350*time.Millisecond {
		t.Errorf("gave up after %s: the backoff did not grow", elapsed)
	}
	got := out.String()
	for _, want := range []string{"(attempt 1)", "(attempt 2)", "(attempt 3)"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "(attempt 4)") || strings.Contains(got, "is back") {
		t.Errorf("restarted past the limit or claimed a recovery:\n%s", got)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("close: %v", err)
	}
}
