package wrenn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/coder/websocket"
)

// PTYs opens interactive terminals in a sandbox. Reach it as Sandbox.PTY.
type PTYs struct{ sb *Sandbox }

// PTYOptions describes a terminal.
type PTYOptions struct {
	// Cols and Rows are the initial size; zero takes 80x24.
	Cols, Rows int
	// Cmd is the command line to run; empty runs the server's default
	// (/bin/bash -l).
	Cmd string
	// OnData receives terminal output, on one goroutine, in order. The
	// slice is only valid during the call.
	OnData func([]byte)
}

// PTY is an open terminal. Its methods are safe for concurrent use.
type PTY struct {
	conn   *websocket.Conn
	ctx    context.Context // the terminal's own; ends on Kill
	cancel context.CancelFunc
	done   chan struct{}
	code   int
	err    error
}

// Create opens a terminal running o.Cmd and starts delivering its output
// to o.OnData. The terminal outlives ctx; end it with Kill or by ending
// its program (e.g. sending "exit\n" to a shell), and collect the exit
// code with Wait.
func (p *PTYs) Create(ctx context.Context, o PTYOptions) (*PTY, error) {
	q := url.Values{}
	if o.Cols > 0 {
		q.Set("cols", strconv.Itoa(o.Cols))
	}
	if o.Rows > 0 {
		q.Set("rows", strconv.Itoa(o.Rows))
	}
	if o.Cmd != "" {
		q.Set("cmd", o.Cmd)
	}
	conn, err := p.sb.c.dial(ctx, p.sb.path("/pty"), q)
	if err != nil {
		return nil, fmt.Errorf("open terminal in sandbox %s: %w", p.sb.ID, err)
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t := &PTY{conn: conn, ctx: tctx, cancel: cancel, done: make(chan struct{})}
	go t.read(o.OnData)
	return t, nil
}

// errPTYKilled is what Wait returns after Kill.
var errPTYKilled = errors.New("terminal closed by the client")

func (t *PTY) read(onData func([]byte)) {
	defer close(t.done)
	defer t.conn.Close(websocket.StatusNormalClosure, "")
	for {
		typ, b, err := t.conn.Read(t.ctx)
		if err != nil {
			switch {
			case t.ctx.Err() != nil:
				t.err = errPTYKilled
			case websocket.CloseStatus(err) == websocket.StatusNormalClosure:
				t.err = errors.New("terminal closed before its program exited")
			default:
				t.err = fmt.Errorf("read terminal: %w", err)
			}
			return
		}
		if typ == websocket.MessageBinary {
			if onData != nil {
				onData(b)
			}
			continue
		}
		var ev processEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.err = fmt.Errorf("decode terminal frame: %w", err)
			return
		}
		switch ev.Type {
		case "exit":
			if ev.ExitCode != nil {
				t.code = *ev.ExitCode
			}
			return
		case "error":
			t.err = errorFromFrame(ev.Error)
			return
		}
	}
}

// SendInput writes keystrokes (or any bytes) to the terminal. The write
// runs under the terminal's own context (see CommandHandle.SendStdin).
func (t *PTY) SendInput(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := t.conn.Write(t.ctx, websocket.MessageBinary, data); err != nil {
		return fmt.Errorf("terminal input: %w", err)
	}
	return nil
}

// Resize tells the terminal its new size.
func (t *PTY) Resize(ctx context.Context, cols, rows int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Cols int    `json:"cols"`
		Rows int    `json:"rows"`
	}{"resize", cols, rows})
	if err := t.conn.Write(t.ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	return nil
}

// Kill closes the terminal; the server ends its program when the socket
// closes. It waits for the reader to stop, and Wait then returns an
// error. Killing a terminal that already exited does nothing.
func (t *PTY) Kill(ctx context.Context) error {
	t.cancel()
	select {
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits for the terminal's program to exit and returns its exit
// code.
func (t *PTY) Wait(ctx context.Context) (int, error) {
	select {
	case <-t.done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if t.err != nil {
		return 0, t.err
	}
	return t.code, nil
}

// Done is closed when the terminal has ended.
func (t *PTY) Done() <-chan struct{} { return t.done }
