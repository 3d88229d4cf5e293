package guestinit

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestStep(t *testing.T) {
	tests := []struct {
		name string
		fn   func() error
		want []string // log lines, in order
	}{
		{"success logs nothing", func() error { return nil }, nil},
		{
			"error",
			func() error { return errors.New("mount proc: busy") },
			[]string{`wrenn-init: WARN step failed step=s err="mount proc: busy"`},
		},
		{
			"joined errors one line each",
			func() error { return errors.Join(errors.New("a bad"), errors.New("b bad")) },
			[]string{`wrenn-init: WARN step failed step=s err="a bad"`, `wrenn-init: WARN step failed step=s err="b bad"`},
		},
		{
			"panic is recovered",
			func() error { panic("boom") },
			[]string{`wrenn-init: ERROR step panicked step=s panic=boom stack=`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			step(slog.New(NewConsoleHandler(&buf)), "s", tt.fn)
			var lines []string
			if s := strings.TrimSuffix(buf.String(), "\n"); s != "" {
				lines = strings.Split(s, "\n")
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d lines %q, want %d", len(lines), lines, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestGoSafeRestartsAfterPanic(t *testing.T) {
	var buf syncBuffer
	var runs atomic.Int32
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	goSafe(ctx, &wg, slog.New(NewConsoleHandler(&buf)), "g", func() {
		if runs.Add(1) == 1 {
			panic("first run")
		}
	})
	// The second run returns normally, which ends the goroutine.
	wg.Wait()
	if got := runs.Load(); got != 2 {
		t.Errorf("runs = %d, want 2 (one panic, one restart)", got)
	}
	if !strings.Contains(buf.String(), "goroutine panicked, restarting goroutine=g") {
		t.Errorf("panic not logged: %q", buf.String())
	}
}
