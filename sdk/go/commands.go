package wrenn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// Commands runs processes in a sandbox. Reach it as Sandbox.Commands.
type Commands struct{ sb *Sandbox }

// RunOptions describes a command.
type RunOptions struct {
	// Args, when non-nil (even empty), makes the command string the
	// program and these its arguments, run without a shell. With nil Args
	// the command string is a shell line run by /bin/bash -l -c.
	Args []string
	// Env adds to the sandbox's environment for this command.
	Env map[string]string
	// Cwd is the working directory; default the user's home.
	Cwd string
	// User is the guest user; default "user".
	User string
	// Timeout kills the command after this long (rounded up to seconds).
	// Zero: the server's default (60 s for a Run without callbacks or
	// Stdin, none for streamed runs and Start).
	Timeout time.Duration
	// OnStdout and OnStderr receive output as it arrives, on one goroutine,
	// in order. The slices are only valid during the call. Setting either
	// streams the command over a WebSocket.
	OnStdout, OnStderr func([]byte)
	// Stdin is copied to the command's standard input, then closed. Setting
	// it streams the command over a WebSocket. A Read blocked on Stdin
	// when the command ends is abandoned, not interrupted: its goroutine
	// ends at the next Read's return.
	Stdin io.Reader
	// Tag names a command started with Start so it can be found again by
	// Connect.
	Tag string
}

// CommandResult is how a command ended and what it printed.
type CommandResult struct {
	PID      int
	ExitCode int
	// Stdout and Stderr hold up to MaxOutput bytes each; past that output
	// still reaches the callbacks but Truncated is set.
	Stdout, Stderr string
	Truncated      bool
	// Error is the server's note on how the process ended, e.g. "signal:
	// killed", when it gave one.
	Error string
}

// MaxOutput is how much of each stream a CommandResult keeps.
const MaxOutput = 10 << 20

// Run runs cmd to completion and returns its exit code and output. A
// non-zero exit is not an error: check ExitCode. When ctx ends first, a
// streamed command is sent SIGKILL and Run returns ctx's error.
func (c *Commands) Run(ctx context.Context, cmd string, o RunOptions) (*CommandResult, error) {
	req := c.execRequest(cmd, o)
	if o.OnStdout == nil && o.OnStderr == nil && o.Stdin == nil {
		var out api.ExecResult
		if err := c.sb.c.call(ctx, "POST", c.sb.path("/exec"), nil, req, &out); err != nil {
			return nil, fmt.Errorf("run in sandbox %s: %w", c.sb.ID, err)
		}
		return resultFromExec(out), nil
	}
	conn, err := c.sb.c.dial(ctx, c.sb.path("/exec/stream"), nil)
	if err != nil {
		return nil, fmt.Errorf("run in sandbox %s: %w", c.sb.ID, err)
	}
	s := newProcStream(conn, o.OnStdout, o.OnStderr)
	defer s.close()
	// The socket is read and written under a context of its own: the
	// WebSocket library closes a connection whose call context ends, and
	// a cancelled Run must still tell the server to kill the command.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	killed := make(chan struct{})
	stopKill := context.AfterFunc(ctx, func() {
		defer close(killed)
		s.kill()
		stop()
	})
	defer func() {
		if !stopKill() {
			<-killed
		}
	}()
	if err := s.send(sctx, req); err != nil {
		return nil, fmt.Errorf("run in sandbox %s: send request: %w", c.sb.ID, err)
	}
	if o.Stdin != nil {
		s.pumpStdin(sctx, o.Stdin)
	}
	res, err := s.follow(sctx)
	if ctx.Err() != nil {
		// The exit frame of the kill may have won the race; the caller
		// gave up either way.
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("run in sandbox %s: %w", c.sb.ID, err)
	}
	return res, nil
}

// Start starts cmd in the background and returns at once with a handle
// that follows its output. Output is delivered to o.OnStdout/OnStderr and
// collected for Wait; o.Stdin, if set, is copied to the process. The
// command outlives ctx and the handle: call Kill to stop it, and Wait or
// Disconnect to stop following it.
//
// The process is started with POST exec and then attached to, so output
// it writes before the attachment is made is only seen if the server
// replays it.
func (c *Commands) Start(ctx context.Context, cmd string, o RunOptions) (*CommandHandle, error) {
	req := c.execRequest(cmd, o)
	req.Background = ptr(true)
	var out api.ExecResult
	if err := c.sb.c.call(ctx, "POST", c.sb.path("/exec"), nil, req, &out); err != nil {
		return nil, fmt.Errorf("start in sandbox %s: %w", c.sb.ID, err)
	}
	tag := o.Tag
	if out.Tag != nil {
		tag = *out.Tag
	}
	return c.attach(ctx, strconv.Itoa(out.Pid), out.Pid, tag, o.OnStdout, o.OnStderr, o.Stdin)
}

// ConnectOptions describes a reattachment.
type ConnectOptions struct {
	OnStdout, OnStderr func([]byte)
}

// Connect reattaches to a running background process by pid (digits) or
// tag, and follows its output like Start's handle.
func (c *Commands) Connect(ctx context.Context, pidOrTag string, o ConnectOptions) (*CommandHandle, error) {
	pid, err := strconv.Atoi(pidOrTag)
	var tag string
	if err != nil {
		tag = pidOrTag
		procs, err := c.List(ctx)
		if err != nil {
			return nil, err
		}
		pid = -1
		for _, p := range procs {
			if p.Tag != nil && *p.Tag == tag {
				pid = p.Pid
				break
			}
		}
		if pid < 0 {
			return nil, fmt.Errorf("connect to process in sandbox %s: %w", c.sb.ID,
				&Error{Status: 404, Code: string(ErrNotFound), Message: fmt.Sprintf("no running process tagged %q", tag)})
		}
	}
	return c.attach(ctx, pidOrTag, pid, tag, o.OnStdout, o.OnStderr, nil)
}

// List returns the processes started through envd that still run.
func (c *Commands) List(ctx context.Context) ([]api.Process, error) {
	var out struct {
		Processes []api.Process `json:"processes"`
	}
	if err := c.sb.c.call(ctx, "GET", c.sb.path("/processes"), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list processes in sandbox %s: %w", c.sb.ID, err)
	}
	return out.Processes, nil
}

// Signal sends SIGTERM or SIGKILL to a process by pid or tag.
func (c *Commands) Signal(ctx context.Context, pidOrTag string, sig api.SignalProcessJSONBodySignal) error {
	body := api.SignalProcessJSONBody{Signal: sig}
	if err := c.sb.c.call(ctx, "POST", c.sb.path("/processes/"+seg(pidOrTag)+"/signal"), nil, body, nil); err != nil {
		return fmt.Errorf("signal %s in sandbox %s: %w", pidOrTag, c.sb.ID, err)
	}
	return nil
}

func (c *Commands) execRequest(cmd string, o RunOptions) api.ExecRequest {
	req := api.ExecRequest{Cmd: cmd, Cwd: nonZero(o.Cwd), User: nonZero(o.User), Tag: nonZero(o.Tag)}
	if o.Args != nil {
		req.Args = &o.Args
	}
	if len(o.Env) > 0 {
		req.Env = &o.Env
	}
	if o.Timeout > 0 {
		req.TimeoutSec = ptr(seconds(o.Timeout))
	}
	return req
}

// attach opens processes/{selector}/stream and starts following it.
func (c *Commands) attach(ctx context.Context, selector string, pid int, tag string, onStdout, onStderr func([]byte), stdin io.Reader) (*CommandHandle, error) {
	conn, err := c.sb.c.dial(ctx, c.sb.path("/processes/"+seg(selector)+"/stream"), nil)
	if err != nil {
		return nil, fmt.Errorf("attach to process %s in sandbox %s: %w", selector, c.sb.ID, err)
	}
	// The attachment lives until the process ends or the caller lets go,
	// not until the ctx of the call that made it.
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &CommandHandle{PID: pid, Tag: tag, cmds: c, s: newProcStream(conn, onStdout, onStderr), ctx: actx, cancel: cancel, done: make(chan struct{})}
	h.s.pid = pid
	if stdin != nil {
		h.s.pumpStdin(actx, stdin)
	}
	go h.follow()
	return h, nil
}

func resultFromExec(out api.ExecResult) *CommandResult {
	r := &CommandResult{PID: out.Pid}
	if out.ExitCode != nil {
		r.ExitCode = *out.ExitCode
	}
	if out.Stdout != nil {
		r.Stdout = *out.Stdout
	}
	if out.Stderr != nil {
		r.Stderr = *out.Stderr
	}
	if out.Truncated != nil {
		r.Truncated = *out.Truncated
	}
	if out.Error != nil {
		r.Error = *out.Error
	}
	return r
}

// CommandHandle follows a background process. Its methods are safe for
// concurrent use.
type CommandHandle struct {
	// PID is the process id in the guest.
	PID int
	// Tag is the tag given at start, if any.
	Tag string

	cmds   *Commands
	s      *procStream
	ctx    context.Context // the attachment's own; ends on Disconnect
	cancel context.CancelFunc
	done   chan struct{}
	res    *CommandResult
	err    error
}

func (h *CommandHandle) follow() {
	defer close(h.done)
	defer h.s.close()
	h.res, h.err = h.s.follow(h.ctx)
	if h.err != nil && h.ctx.Err() != nil {
		h.err = ErrDisconnected
	}
}

// ErrDisconnected is what Wait returns after Disconnect.
var ErrDisconnected = errors.New("wrenn: stopped following the process")

// Wait waits for the process to exit and returns how it ended. It returns
// ctx's error if ctx ends first (the process keeps running and the handle
// keeps following it).
func (h *CommandHandle) Wait(ctx context.Context) (*CommandResult, error) {
	select {
	case <-h.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if h.err != nil {
		return nil, fmt.Errorf("wait for process %d: %w", h.PID, h.err)
	}
	return h.res, nil
}

// Kill sends SIGKILL to the process.
func (h *CommandHandle) Kill(ctx context.Context) error {
	return h.cmds.Signal(ctx, strconv.Itoa(h.PID), api.SignalProcessJSONBodySignalSIGKILL)
}

// SendStdin writes data to the process's standard input.
//
// The write itself runs under the handle's context: the WebSocket library
// closes a connection whose write context ends mid-frame, and one
// abandoned write must not end the attachment. ctx is checked first.
func (h *CommandHandle) SendStdin(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.s.send(h.ctx, api.ProcessInput{Type: api.Stdin, Data: &data}); err != nil {
		return fmt.Errorf("stdin to process %d: %w", h.PID, err)
	}
	return nil
}

// CloseStdin closes the process's standard input.
func (h *CommandHandle) CloseStdin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.s.send(h.ctx, api.ProcessInput{Type: api.Eof}); err != nil {
		return fmt.Errorf("close stdin of process %d: %w", h.PID, err)
	}
	return nil
}

// Disconnect stops following the process without stopping it; Connect
// can reattach later. It waits for the follower to finish.
func (h *CommandHandle) Disconnect() {
	h.cancel()
	<-h.done
}

// procStream is one exec/stream or reattach WebSocket: it sends the
// client's frames and turns the server's into callbacks and a result.
type procStream struct {
	conn               *websocket.Conn
	onStdout, onStderr func([]byte)
	pid                int

	closeOnce sync.Once
	stdinStop context.CancelFunc
}

func newProcStream(conn *websocket.Conn, onStdout, onStderr func([]byte)) *procStream {
	return &procStream{conn: conn, onStdout: onStdout, onStderr: onStderr, stdinStop: func() {}}
}

// send writes v as one JSON text frame. The WebSocket library allows
// concurrent writers.
func (s *procStream) send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.conn.Write(ctx, websocket.MessageText, b)
}

// stdinChunk is how much stdin one frame carries: 16 KiB is about 22 KiB
// of base64, under the 32 KiB message limit WebSocket servers built on
// github.com/coder/websocket apply by default.
const stdinChunk = 16 << 10

// pumpStdin copies r into stdin frames, then sends eof. It stops at the
// first failed write (the stream ended) or when the stream is closed.
func (s *procStream) pumpStdin(ctx context.Context, r io.Reader) {
	ctx, cancel := context.WithCancel(ctx)
	s.stdinStop = cancel
	go func() {
		defer cancel()
		buf := make([]byte, stdinChunk)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				data := buf[:n]
				if s.send(ctx, api.ProcessInput{Type: api.Stdin, Data: &data}) != nil {
					return
				}
			}
			if err != nil {
				// EOF or a read error both end the input; the command sees EOF.
				_ = s.send(ctx, api.ProcessInput{Type: api.Eof})
				return
			}
		}
	}()
}

// processEvent is api.ProcessEvent with the error member kept raw: the
// route text shows {"type":"error","error":{"code","message"}} while the
// schema nests the Error object ({"error":{"error":{...}}}); both decode.
type processEvent struct {
	Type     api.ProcessEventType `json:"type"`
	Pid      *int                 `json:"pid"`
	Data     []byte               `json:"data"`
	ExitCode *int                 `json:"exit_code"`
	Error    json.RawMessage      `json:"error"`
}

// follow reads frames until the exit frame and returns the result.
func (s *procStream) follow(ctx context.Context) (*CommandResult, error) {
	res := &CommandResult{PID: s.pid}
	var stdout, stderr capped
	for {
		typ, b, err := s.conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return nil, errors.New("stream closed before the process exited")
			}
			return nil, fmt.Errorf("read stream: %w", err)
		}
		if typ != websocket.MessageText {
			continue
		}
		var ev processEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			return nil, fmt.Errorf("decode stream frame: %w", err)
		}
		switch ev.Type {
		case api.ProcessEventTypeStart:
			if ev.Pid != nil {
				res.PID = *ev.Pid
			}
		case api.ProcessEventTypeStdout:
			stdout.write(ev.Data)
			if s.onStdout != nil {
				s.onStdout(ev.Data)
			}
		case api.ProcessEventTypeStderr:
			stderr.write(ev.Data)
			if s.onStderr != nil {
				s.onStderr(ev.Data)
			}
		case api.ProcessEventTypeExit:
			if ev.ExitCode != nil {
				res.ExitCode = *ev.ExitCode
			}
			res.Stdout, res.Stderr = string(stdout.b), string(stderr.b)
			res.Truncated = stdout.truncated || stderr.truncated
			return res, nil
		case api.ProcessEventTypeError:
			return nil, errorFromFrame(ev.Error)
		}
	}
}

// kill asks the server to SIGKILL the process, best effort, for a
// foreground command whose caller gave up.
func (s *procStream) kill() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sig := api.ProcessInputSignalSIGKILL
	_ = s.send(ctx, api.ProcessInput{Type: api.Signal, Signal: &sig})
}

// close ends the stream: stdin pumping stops and the socket closes.
func (s *procStream) close() {
	s.closeOnce.Do(func() {
		s.stdinStop()
		_ = s.conn.Close(websocket.StatusNormalClosure, "")
	})
}

// capped collects up to MaxOutput bytes.
type capped struct {
	b         []byte
	truncated bool
}

func (c *capped) write(p []byte) {
	room := MaxOutput - len(c.b)
	if len(p) > room {
		p = p[:room]
		c.truncated = true
	}
	c.b = append(c.b, p...)
}
