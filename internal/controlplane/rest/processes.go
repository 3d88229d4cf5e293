package rest

// Processes in a sandbox: run to completion, start in the background,
// stream over WebSocket, reattach, list and signal. Everything goes to the
// sandbox's envd through its host agent's guest proxy.
//
// WebSocket protocol (exec/stream and processes/{selector}/stream): for
// exec/stream the client first sends one ExecRequest text frame; the
// server then sends {"type":"start","pid":N}, output as
// {"type":"stdout"|"stderr","data":"<base64>"} and finally
// {"type":"exit","exit_code":N} before closing with 1000. The client may
// send {"type":"stdin","data":"<base64>"}, {"type":"eof"} and
// {"type":"signal","signal":"SIGTERM"|"SIGKILL"}. A failure is
// {"type":"error","error":{"code":..,"message":..}}, then a close with 1008
// (the client's fault) or 1011. A process started by exec/stream is killed
// when its client goes away before it exits (background is ignored there:
// start with POST exec and reattach instead); a reattached one keeps
// running.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/proto/envd/process"
)

const (
	// guestUser is who commands and file operations run as by default.
	guestUser = "user"
	// defaultExecTimeout bounds a synchronous exec without timeout_sec.
	defaultExecTimeout = 60 * time.Second
	// maxExecOutput is how much of each stream a synchronous exec keeps.
	maxExecOutput = 10 << 20
	// maxBufferedExecOutput caps the output all synchronous execs of one
	// server hold at once. Each keeps up to maxExecOutput per stream until
	// it answers, and a team may hold many open (60 s each by default), so
	// without a shared cap they could take the control plane's memory;
	// 512 MiB is ~25 execs at full output. Past it output is dropped and
	// flagged truncated, as past the per-exec cap.
	maxBufferedExecOutput = 512 << 20
	// wsReadLimit bounds one client frame (stdin frames carry base64).
	wsReadLimit = 1 << 20
	// wsFirstFrameTimeout is how long exec/stream waits for its request.
	wsFirstFrameTimeout = 30 * time.Second
	// killTimeout bounds the kill sent for an abandoned process.
	killTimeout = 5 * time.Second
	maxTagLen   = 100
)

var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func (s *Server) mountProcesses(r chi.Router) {
	const one = "/sandboxes/{sandboxID}"
	r.Post(one+"/exec", s.sbHandler(s.execCommand))
	r.Get(one+"/exec/stream", s.sbHandler(s.execStream))
	r.Get(one+"/processes", s.sbHandler(s.listProcesses))
	r.Post(one+"/processes/{selector}/signal", s.sbHandler(s.signalProcess))
	r.Get(one+"/processes/{selector}/stream", s.sbHandler(s.reattachProcess))
	r.Get(one+"/pty", s.sbHandler(s.openPTY))
}

// sandboxEnvd returns a client for a running sandbox's envd, reached
// through its host agent's guest proxy.
func (s *Server) sandboxEnvd(ctx context.Context, sb store.Sandbox) (*envdclient.Client, error) {
	if sandboxes.State(sb.State) == sandboxes.Stopped {
		// Destroyed (by a delete or its timeout): nothing to run in, as
		// for a sandbox that never was.
		return nil, errdefs.New(errdefs.ErrNotFound, "sandbox %s was destroyed", sb.ID)
	}
	if err := sandboxes.Check(sandboxes.OpExec, sb); err != nil {
		return nil, err
	}
	if sb.HostID == nil {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no host", sb.ID)
	}
	if s.deps.Agents == nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "no host agents configured")
	}
	hc, base, err := s.deps.Agents.HTTP(ctx, sb.HostID.String())
	if err != nil {
		return nil, fmt.Errorf("reach host %s: %w", sb.HostID, err)
	}
	return envdclient.New(strings.TrimRight(base, "/")+"/sandboxes/"+sb.ID+"/envd",
		envdclient.WithHTTPClient(hc), envdclient.WithUser(guestUser)), nil
}

// runningEnvd loads the caller's sandbox and its envd client.
func (s *Server) runningEnvd(r *http.Request) (store.Sandbox, *envdclient.Client, error) {
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return sb, nil, err
	}
	ec, err := s.sandboxEnvd(r.Context(), sb)
	return sb, ec, err
}

// execSpec is a validated ExecRequest.
type execSpec struct {
	run        envdclient.RunRequest
	stdin      *string
	timeout    time.Duration
	background bool
}

func parseExec(req api.ExecRequest) (execSpec, error) {
	var e execSpec
	if req.Cmd == "" {
		return e, invalid("cmd is required")
	}
	if strings.ContainsRune(req.Cmd, 0) {
		return e, invalid("cmd contains NUL")
	}
	if req.Args == nil {
		// Without args cmd is a shell command line; with args, even an
		// empty list, it is the program (no shell: cheaper, no quoting).
		e.run.Cmd, e.run.Args = "/bin/bash", []string{"-l", "-c", req.Cmd}
	} else {
		for _, a := range *req.Args {
			if strings.ContainsRune(a, 0) {
				return e, invalid("args contain NUL")
			}
		}
		e.run.Cmd, e.run.Args = req.Cmd, *req.Args
	}
	if req.Env != nil {
		if err := sandboxes.CheckEnv(*req.Env); err != nil {
			return e, err
		}
		e.run.Env = *req.Env
	}
	if req.Cwd != nil {
		if *req.Cwd == "" || strings.ContainsRune(*req.Cwd, 0) {
			return e, invalid("cwd %q: must be a non-empty path", *req.Cwd)
		}
		e.run.Cwd = *req.Cwd
	}
	if req.User != nil {
		if !userRE.MatchString(*req.User) {
			return e, invalid("user %q: not a user name", *req.User)
		}
		e.run.User = *req.User
	}
	if req.Tag != nil {
		if err := checkTag(*req.Tag); err != nil {
			return e, err
		}
		e.run.Tag = *req.Tag
	}
	if req.TimeoutSec != nil {
		if *req.TimeoutSec < 1 || *req.TimeoutSec > 86400 {
			return e, invalid("timeout_sec %d: must be 1-86400", *req.TimeoutSec)
		}
		e.timeout = time.Duration(*req.TimeoutSec) * time.Second
	}
	e.background = req.Background != nil && *req.Background
	e.stdin = req.Stdin
	return e, nil
}

// checkTag keeps tags usable as a selector: not all digits (that is a
// pid) and no '/' (a path segment).
func checkTag(tag string) error {
	if tag == "" || len(tag) > maxTagLen {
		return invalid("tag %q: must be 1-%d bytes", tag, maxTagLen)
	}
	if _, err := strconv.ParseUint(tag, 10, 32); err == nil {
		return invalid("tag %q: must not be all digits (selectors read digits as a pid)", tag)
	}
	if strings.ContainsAny(tag, "/\x00") {
		return invalid("tag %q: must not contain '/' or NUL", tag)
	}
	return nil
}

// selector parses a processes/{selector} path segment.
func parseSelector(v string) (envdclient.Selector, *process.ProcessSelector, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		if n == 0 {
			return envdclient.Selector{}, nil, invalid("pid 0 is not a process")
		}
		return envdclient.ByPID(uint32(n)), &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: uint32(n)}}, nil
	}
	if err := checkTag(v); err != nil {
		return envdclient.Selector{}, nil, err
	}
	return envdclient.ByTag(v), &process.ProcessSelector{Selector: &process.ProcessSelector_Tag{Tag: v}}, nil
}

// byteBudget is a server-wide allowance of bytes, granted without waiting.
// The zero value allows maxBufferedExecOutput.
type byteBudget struct {
	used atomic.Int64
	// limit replaces maxBufferedExecOutput when set (tests).
	limit int64
}

// take grants up to n bytes: fewer, or none, once the budget is spent.
func (b *byteBudget) take(n int64) int64 {
	limit := b.limit
	if limit == 0 {
		limit = maxBufferedExecOutput
	}
	for {
		used := b.used.Load()
		grant := min(n, limit-used)
		if grant <= 0 {
			return 0
		}
		if b.used.CompareAndSwap(used, used+grant) {
			return grant
		}
	}
}

func (b *byteBudget) release(n int64) { b.used.Add(-n) }

// capBuffer keeps the first max bytes written, as far as the shared budget
// allows, and notes what it dropped. release gives its bytes back.
type capBuffer struct {
	buf       bytes.Buffer
	max       int
	budget    *byteBudget
	taken     int64
	truncated bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.max - c.buf.Len(); len(p) > room {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	if c.budget != nil && len(p) > 0 {
		got := c.budget.take(int64(len(p)))
		c.taken += got
		if got < int64(len(p)) {
			c.truncated = true
			p = p[:got]
		}
	}
	c.buf.Write(p)
	return n, nil
}

func (c *capBuffer) release() {
	if c.budget != nil {
		c.budget.release(c.taken)
		c.taken = 0
	}
}

// execCommand runs a command to completion (or starts it in the
// background). A command that outlives its timeout is killed and answered
// with exit_code -1 and error "timeout", with the output it wrote.
func (s *Server) execCommand(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	var req api.ExecRequest
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() {
		s.audit(ctx, "sandbox", id, "exec", err, map[string]any{"background": req.Background != nil && *req.Background})
	}()
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	spec, err := parseExec(req)
	if err != nil {
		return err
	}
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	if spec.background {
		if spec.stdin != nil {
			return invalid("stdin is for a synchronous exec; stream a background process's input with exec/stream")
		}
		// The attachment ends at once; the process keeps running, its
		// stdin open for a reattached client (which sends eof to end it).
		spec.run.OpenStdin = true
		p, err := ec.Start(ctx, spec.run)
		if err != nil {
			return err
		}
		p.Close()
		writeJSON(w, http.StatusOK, api.ExecResult{Pid: int(p.PID()), Tag: req.Tag})
		return nil
	}

	timeout := spec.timeout
	if timeout == 0 {
		timeout = defaultExecTimeout
	}
	stdout := &capBuffer{max: maxExecOutput, budget: &s.execOutput}
	stderr := &capBuffer{max: maxExecOutput, budget: &s.execOutput}
	defer stdout.release()
	defer stderr.release()
	spec.run.Stdout, spec.run.Stderr = stdout, stderr
	if spec.stdin != nil {
		spec.run.Stdin = strings.NewReader(*spec.stdin)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := ec.Start(rctx, spec.run)
	if err != nil {
		return err
	}
	defer p.Close()
	res, werr := p.Wait(rctx)
	// Close waits for the output reader, so the buffers are complete and
	// no longer written.
	p.Close()
	out := api.ExecResult{Pid: int(p.PID()), Tag: req.Tag}
	switch {
	case werr == nil:
		out.ExitCode = &res.ExitCode
		if res.Error != "" {
			out.Error = &res.Error
		} else if !res.Exited && res.Status != "" {
			out.Error = &res.Status
		}
	case rctx.Err() != nil || errors.Is(werr, context.DeadlineExceeded):
		// Timed out (envd may notice the deadline it was sent first), or
		// the client left: do not leave the command running.
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		defer kcancel()
		_ = p.Kill(kctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		code, msg := -1, fmt.Sprintf("timeout: killed after %s", timeout)
		out.ExitCode, out.Error = &code, &msg
	default:
		return werr
	}
	if stdout.truncated || stderr.truncated {
		t := true
		out.Truncated = &t
	}
	writeExecResult(w, out, stdout.buf.Bytes(), stderr.buf.Bytes())
	return nil
}

// writeExecResult answers 200 with out and the output, encoding the output
// as it writes: json.Marshal would build the whole body first, and escaping
// can make it six times the output (\u0001 for each control byte).
func writeExecResult(w http.ResponseWriter, out api.ExecResult, stdout, stderr []byte) {
	out.Stdout, out.Stderr = nil, nil
	head, err := json.Marshal(out) // never empty: pid is always there
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": map[string]string{"code": "internal", "message": "internal error"}})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	_, _ = bw.Write(head[:len(head)-1])
	_, _ = bw.WriteString(`,"stdout":`)
	writeJSONString(bw, stdout)
	_, _ = bw.WriteString(`,"stderr":`)
	writeJSONString(bw, stderr)
	_, _ = bw.WriteString("}\n")
	_ = bw.Flush()
}

// writeJSONString writes b as a JSON string exactly as encoding/json
// encodes string(b): invalid UTF-8 as U+FFFD, HTML-safe.
func writeJSONString(w *bufio.Writer, b []byte) {
	const hex = "0123456789abcdef"
	_ = w.WriteByte('"')
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				_ = w.WriteByte('\\')
				_ = w.WriteByte(c)
			case c == '\n':
				_, _ = w.WriteString(`\n`)
			case c == '\r':
				_, _ = w.WriteString(`\r`)
			case c == '\t':
				_, _ = w.WriteString(`\t`)
			case c == '\b':
				_, _ = w.WriteString(`\b`)
			case c == '\f':
				_, _ = w.WriteString(`\f`)
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				_, _ = w.WriteString(`\u00`)
				_ = w.WriteByte(hex[c>>4])
				_ = w.WriteByte(hex[c&0xf])
			default:
				_ = w.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			_, _ = w.WriteString(`\ufffd`)
		case r == '\u2028' || r == '\u2029':
			_, _ = w.WriteString(`\u202`)
			_ = w.WriteByte(hex[r&0xf])
		default:
			_, _ = w.Write(b[i : i+size])
		}
		i += size
	}
	_ = w.WriteByte('"')
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	list, err := ec.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Process, len(list))
	for i, p := range list {
		out[i] = api.Process{Pid: int(p.PID), Cmd: p.Cmd}
		if p.Tag != "" {
			out[i].Tag = &p.Tag
		}
		if len(p.Args) > 0 {
			out[i].Args = &p.Args
		}
		if p.Cwd != "" {
			out[i].Cwd = &p.Cwd
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"processes": out})
	return nil
}

func (s *Server) signalProcess(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id, selector := chi.URLParam(r, "sandboxID"), chi.URLParam(r, "selector")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "signal_process", err, map[string]any{"selector": selector}) }()
	var body api.SignalProcessJSONBody
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	sig, err := parseSignal(string(body.Signal))
	if err != nil {
		return err
	}
	_, sel, err := parseSelector(selector)
	if err != nil {
		return err
	}
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	if _, err := ec.Process().SendSignal(ctx, connect.NewRequest(&process.SendSignalRequest{Process: sel, Signal: sig})); err != nil {
		return fmt.Errorf("signal process %s: %w", selector, errdefs.FromConnect(err))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func parseSignal(v string) (process.Signal, error) {
	switch v {
	case "SIGTERM":
		return process.Signal_SIGNAL_SIGTERM, nil
	case "SIGKILL":
		return process.Signal_SIGNAL_SIGKILL, nil
	}
	return 0, invalid("signal %q: must be SIGTERM or SIGKILL", v)
}

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

var errNeedWebSocket = errdefs.New(errdefs.ErrInvalidArgument, "this route needs a WebSocket upgrade")

// acceptWS upgrades the request. On failure Accept has already answered.
func (s *Server) acceptWS(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.deps.AllowedOrigins, Subprotocols: []string{wsProtocol}})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(wsReadLimit)
	return c, nil
}

// procFrame is a server frame of a process stream (ProcessEvent, with the
// error object flat as the route text describes).
type procFrame struct {
	Type     string      `json:"type"`
	Pid      *uint32     `json:"pid,omitempty"`
	Data     []byte      `json:"data,omitempty"`
	ExitCode *int        `json:"exit_code,omitempty"`
	Error    *frameError `json:"error,omitempty"`
}

type frameError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeFrame(ctx context.Context, c *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return c.Write(ctx, websocket.MessageText, b)
}

// wsFail sends an error frame and closes: 1008 when the client is at
// fault, 1011 otherwise (whose message is not shown).
func (s *Server) wsFail(ctx context.Context, c *websocket.Conn, err error) {
	status := errdefs.HTTPStatus(err)
	fe := &frameError{Code: errdefs.Code(err), Message: err.Error()}
	code := websocket.StatusPolicyViolation
	if status >= 500 {
		code = websocket.StatusInternalError
		if status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout {
			s.log.Error("websocket session failed", "err", err)
			fe.Message = "internal error"
		} else if msg, hide := hostFailure(err); hide {
			s.log.Warn("websocket session: host agent unreachable", "err", err)
			fe.Message = msg
		}
	}
	_ = writeFrame(ctx, c, procFrame{Type: string(api.ProcessEventTypeError), Error: fe})
	_ = c.Close(code, fe.Code)
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// outputFrames sends what is written as typ frames, but only once ready is
// closed: envd may deliver output before the start frame is out.
func outputFrames(ctx context.Context, c *websocket.Conn, typ string, ready <-chan struct{}) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		select {
		case <-ready:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if err := writeFrame(ctx, c, procFrame{Type: typ, Data: p}); err != nil {
			return 0, err
		}
		return len(p), nil
	})
}

// procSession is one process followed over a WebSocket.
type procSession struct {
	// start starts or attaches to the process, sending output to the writers.
	start func(ctx context.Context, stdout, stderr io.Writer) (*envdclient.Process, error)
	// killOnLeave kills the process when the client goes away first.
	killOnLeave bool
	// timeout, when set, kills the process after that long.
	timeout time.Duration
}

// serveProcess runs a process session on an accepted WebSocket until the
// process ends or the client leaves.
func (s *Server) serveProcess(ctx context.Context, c *websocket.Conn, ps procSession) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	p, err := ps.start(ctx, outputFrames(ctx, c, "stdout", ready), outputFrames(ctx, c, "stderr", ready))
	if err != nil {
		s.wsFail(ctx, c, err)
		return
	}
	defer p.Close()
	pid := p.PID()
	if err := writeFrame(ctx, c, procFrame{Type: "start", Pid: &pid}); err != nil {
		s.leave(ctx, p, ps.killOnLeave)
		return
	}
	close(ready)

	// The input pump owns the socket's reads; it ends when the socket
	// closes, and a client that leaves cancels the session.
	var wg sync.WaitGroup
	inputErr := make(chan error, 1)
	wg.Go(func() {
		err := s.pumpProcessInput(ctx, c, p)
		inputErr <- err
		cancel()
	})
	defer wg.Wait()
	defer c.CloseNow()

	wctx := ctx
	if ps.timeout > 0 {
		var tcancel context.CancelFunc
		wctx, tcancel = context.WithTimeout(ctx, ps.timeout)
		defer tcancel()
	}
	res, err := p.Wait(wctx)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		// Timed out: kill it and report how it ended.
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		_ = p.Kill(kctx)
		kcancel()
		res, err = p.Wait(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			select {
			case ierr := <-inputErr:
				if errors.Is(ierr, errdefs.ErrInvalidArgument) {
					s.leave(ctx, p, ps.killOnLeave)
					s.wsFail(context.WithoutCancel(ctx), c, ierr)
					return
				}
			default:
			}
			s.leave(ctx, p, ps.killOnLeave)
			return
		}
		s.wsFail(ctx, c, err)
		return
	}
	code := res.ExitCode
	if err := writeFrame(ctx, c, procFrame{Type: "exit", ExitCode: &code}); err != nil {
		return
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}

// leave ends a session whose client went away.
func (s *Server) leave(ctx context.Context, p *envdclient.Process, kill bool) {
	if !kill {
		return
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
	defer cancel()
	_ = p.Kill(kctx)
}

// pumpProcessInput applies the client's stdin, eof and signal frames until
// the socket closes. A malformed frame ends the session with an error.
func (s *Server) pumpProcessInput(ctx context.Context, c *websocket.Conn, p *envdclient.Process) error {
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			return invalid("process input frames are JSON text frames")
		}
		var in api.ProcessInput
		if err := json.Unmarshal(data, &in); err != nil {
			return invalid("process input frame: %v", err)
		}
		switch in.Type {
		case api.Stdin:
			if in.Data != nil && len(*in.Data) > 0 {
				err = p.SendStdin(ctx, *in.Data)
			}
		case api.Eof:
			err = p.CloseStdin(ctx)
		case api.Signal:
			sig, perr := parseSignal(string(orZero(in.Signal)))
			if perr != nil {
				return perr
			}
			err = p.Signal(ctx, sig)
		default:
			return invalid("process input frame type %q: want stdin, eof or signal", in.Type)
		}
		// Input to a process that just ended fails; its exit frame follows.
		if err != nil {
			s.log.Debug("process input", "pid", p.PID(), "err", err)
		}
	}
}

func orZero[T any](p *T) T {
	var zero T
	if p != nil {
		return *p
	}
	return zero
}

func (s *Server) execStream(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	if !isWebSocket(r) {
		return errNeedWebSocket
	}
	c, err := s.acceptWS(w, r)
	if err != nil {
		return nil
	}
	defer c.CloseNow()
	ctx := r.Context()

	rctx, cancel := context.WithTimeout(ctx, wsFirstFrameTimeout)
	typ, data, err := c.Read(rctx)
	cancel()
	if err != nil {
		return nil
	}
	var req api.ExecRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if typ != websocket.MessageText {
		s.wsFail(ctx, c, invalid("send the ExecRequest as a JSON text frame"))
		return nil
	}
	if err := dec.Decode(&req); err != nil {
		s.wsFail(ctx, c, invalid("invalid ExecRequest: %v", err))
		return nil
	}
	spec, err := parseExec(req)
	if err != nil {
		s.wsFail(ctx, c, err)
		return nil
	}
	spec.run.OpenStdin = true
	if spec.stdin != nil {
		spec.run.Stdin = strings.NewReader(*spec.stdin)
	}
	s.serveProcess(ctx, c, procSession{
		start: func(ctx context.Context, stdout, stderr io.Writer) (*envdclient.Process, error) {
			run := spec.run
			run.Stdout, run.Stderr = stdout, stderr
			return ec.Start(ctx, run)
		},
		killOnLeave: true,
		timeout:     spec.timeout,
	})
	return nil
}

func (s *Server) reattachProcess(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	selector := chi.URLParam(r, "selector")
	sel, _, err := parseSelector(selector)
	if err != nil {
		return err
	}
	if !isWebSocket(r) {
		return errNeedWebSocket
	}
	// A process that is not running answers 404 before the upgrade.
	list, err := ec.List(r.Context())
	if err != nil {
		return err
	}
	found := false
	for _, p := range list {
		if strconv.FormatUint(uint64(p.PID), 10) == selector || (p.Tag != "" && p.Tag == selector) {
			found = true
			break
		}
	}
	if !found {
		return notFound("process", selector)
	}
	c, err := s.acceptWS(w, r)
	if err != nil {
		return nil
	}
	defer c.CloseNow()
	s.serveProcess(r.Context(), c, procSession{
		start: func(ctx context.Context, stdout, stderr io.Writer) (*envdclient.Process, error) {
			return ec.Connect(ctx, sel, stdout, stderr)
		},
	})
	return nil
}
