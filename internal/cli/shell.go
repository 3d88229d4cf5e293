package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	wrenn "github.com/wrenn/wrenn/sdk/go"
)

func (a *app) sbxShell() *cobra.Command {
	var command string
	cmd := &cobra.Command{
		Use:   "shell <id>",
		Short: "Open an interactive terminal in a sandbox",
		Long: `Open an interactive terminal (default: the server's login shell).
With a terminal on stdin the local terminal is put in raw mode, follows
window resizes, and is restored on exit. wrenn exits with the remote
program's exit code.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			code, err := a.shell(cmd.Context(), c.Sandboxes.Handle(args[0]), command)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&command, "cmd", "", "program to run instead of the login shell")
	return cmd
}

// shell connects the local terminal (or plain stdin/stdout) to a PTY and
// returns the remote program's exit code.
func (a *app) shell(ctx context.Context, sb *wrenn.Sandbox, command string) (int, error) {
	inFd, inTerm := terminalFd(a.env.Stdin)
	outFd, outTerm := terminalFd(a.env.Stdout)
	cols, rows := 80, 24
	if outTerm {
		if w, h, err := term.GetSize(outFd); err == nil {
			cols, rows = w, h
		}
	}
	t, err := sb.PTY.Create(ctx, wrenn.PTYOptions{Cols: cols, Rows: rows, Cmd: command, OnData: func(b []byte) {
		_, _ = a.env.Stdout.Write(b)
	}})
	if err != nil {
		return 0, err
	}
	// Whatever happens below, the remote terminal is closed on return.
	defer t.Kill(context.WithoutCancel(ctx))

	if inTerm {
		old, err := term.MakeRaw(inFd)
		if err != nil {
			return 0, fmt.Errorf("raw mode: %w", err)
		}
		// Restore before anything else prints (deferred calls run last-in
		// first-out, so this runs before Kill).
		defer func() { _ = term.Restore(inFd, old) }()
	}
	if outTerm {
		stop := watchResize(ctx, outFd, func(w, h int) { _ = t.Resize(ctx, w, h) })
		defer stop()
	}

	// Stdin is pumped until it ends or the terminal does. A blocked Read
	// on a terminal cannot be interrupted; the process exits right after,
	// which ends it.
	inErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := a.env.Stdin.Read(buf)
			if n > 0 {
				if serr := t.SendInput(ctx, buf[:n]); serr != nil {
					inErr <- nil
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				inErr <- err
				return
			}
		}
	}()

	select {
	case <-t.Done():
	case err := <-inErr:
		if err != nil {
			return 0, fmt.Errorf("read stdin: %w", err)
		}
		// Local input ended (a pipe): let the remote side finish.
		<-t.Done()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return t.Wait(ctx)
}

// watchResize calls resize with the terminal's size after each SIGWINCH
// until the returned stop function is called.
func watchResize(ctx context.Context, fd int, resize func(w, h int)) (stop func()) {
	sig := resizeSignal()
	if sig == nil {
		return func() {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ch:
				if w, h, err := term.GetSize(fd); err == nil {
					resize(w, h)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}
