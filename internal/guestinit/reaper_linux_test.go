package guestinit

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond every 10 ms until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startReaper runs a reaper for the test. The test process becomes a child
// subreaper, so orphans of its children come back to it as they come to PID 1
// in the guest.
func startReaper(t *testing.T, log *slog.Logger) *reaper {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("needs PR_SET_CHILD_SUBREAPER: %v", err)
	}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	ctx, cancel := context.WithCancel(context.Background())
	r := newReaper(log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx, sigchld)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		signal.Stop(sigchld)
	})
	return r
}

func stdio(t *testing.T, out *os.File) [3]*os.File {
	t.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { null.Close() })
	if out == nil {
		out = null
	}
	return [3]*os.File{null, out, out}
}

func TestReaperMatchesChildAndReapsOrphans(t *testing.T) {
	r := startReaper(t, slog.New(NewConsoleHandler(&syncBuffer{})))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The shell leaves an orphan that outlives it and exits with another
	// status: the child's status must still be its own.
	pid, done, err := r.start([]string{"/bin/sh", "-c", "(sleep 0.2; exit 7) & echo $!; exit 5"}, nil, stdio(t, pw))
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	var line [32]byte
	n, _ := pr.Read(line[:])
	orphan, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatalf("orphan pid %q: %v", line[:n], err)
	}
	select {
	case ws := <-done:
		if !ws.Exited() || ws.ExitStatus() != 5 {
			t.Errorf("child %d status = %s, want exit 5", pid, describeStatus(ws))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child status never delivered")
	}
	// Reaped means gone from /proc, not left as a zombie.
	waitFor(t, "orphan to be reaped", func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		return os.IsNotExist(err)
	})
	if err := r.signal(pid, unix.SIGTERM); err != errProcessDone {
		t.Errorf("signal to reaped child = %v, want errProcessDone", err)
	}
}

func TestReaperStartError(t *testing.T) {
	r := startReaper(t, slog.New(NewConsoleHandler(&syncBuffer{})))
	if _, _, err := r.start([]string{"/nonexistent/envd"}, nil, stdio(t, nil)); err == nil || !strings.Contains(err.Error(), "/nonexistent/envd") {
		t.Errorf("start of a missing binary: err = %v", err)
	}
}

func TestSupervisorRestartsAndStops(t *testing.T) {
	tests := []struct {
		name   string
		script string
		// wantOut must show up in the output before the test cancels.
		wantOut func(string) bool
		wantLog []string
	}{
		{
			name:    "restarts a dying process",
			script:  "echo run; exit 1",
			wantOut: func(s string) bool { return strings.Count(s, "run\n") >= 3 },
			wantLog: []string{"WARN test exited", "status=\"exit 1\"", "restarting process=test"},
		},
		{
			name:    "stops with SIGTERM",
			script:  `trap "exit 0" TERM; echo ready; while :; do sleep 0.01; done`,
			wantOut: func(s string) bool { return strings.Contains(s, "ready") },
			wantLog: []string{"test started pid=", "test stopped", "status=\"exit 0\""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs, out syncBuffer
			log := slog.New(NewConsoleHandler(&logs))
			s := &supervisor{
				name:      "test",
				argv:      []string{"/bin/sh", "-c", tt.script},
				out:       &out,
				reaper:    startReaper(t, log),
				log:       log,
				backoff:   Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Reset: time.Hour},
				stopGrace: 5 * time.Second,
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.run(ctx)
			}()
			waitFor(t, "output", func() bool { return tt.wantOut(out.String()) })
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("supervisor did not return after cancel")
			}
			s.copiers.Wait()
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
		})
	}
}
