package wrenntest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// DefaultExec is the fake's command runner. It splits a shell line on
// spaces (no quoting) or takes cmd and args as given, and knows:
//
//	echo ARGS...   print ARGS and a newline
//	stderr ARGS... print ARGS and a newline on stderr
//	cat            copy stdin to stdout
//	exit N         exit with N
//	true, false    exit 0, 1
//	sleep          wait until killed
//
// Anything else prints "NAME: command not found" and exits 127.
func DefaultExec(ctx context.Context, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) int {
	argv := strings.Fields(req.Cmd)
	if req.Args != nil {
		argv = append([]string{req.Cmd}, *req.Args...)
	}
	if len(argv) == 0 {
		return 0
	}
	switch argv[0] {
	case "echo":
		fmt.Fprintln(stdout, strings.Join(argv[1:], " "))
	case "stderr":
		fmt.Fprintln(stderr, strings.Join(argv[1:], " "))
	case "cat":
		if _, err := io.Copy(stdout, stdin); err != nil {
			return 1
		}
	case "exit":
		if len(argv) > 1 {
			n, _ := strconv.Atoi(argv[1])
			return n
		}
	case "true":
	case "false":
		return 1
	case "sleep":
		<-ctx.Done()
		return 137
	default:
		fmt.Fprintf(stderr, "%s: command not found\n", argv[0])
		return 127
	}
	return 0
}

// proc is a fake process: its output is kept whole so a reattachment
// replays it from the start.
type proc struct {
	pid    int
	tag    string
	req    api.ExecRequest
	cancel context.CancelFunc
	stdinW *io.PipeWriter

	mu      sync.Mutex
	events  []frame
	changed chan struct{} // closed and replaced on every append
	exited  bool
	code    int
}

// frame is a ProcessEvent as the fake sends it.
type frame struct {
	Type     string `json:"type"`
	Pid      *int   `json:"pid,omitempty"`
	Data     []byte `json:"data,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    any    `json:"error,omitempty"`
}

func (p *proc) append(f frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, f)
	close(p.changed)
	p.changed = make(chan struct{})
}

// since returns the events from index i on, whether the process has
// exited, and a channel closed on the next change.
func (p *proc) since(i int) ([]frame, bool, int, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.events[i:], p.exited, p.code, p.changed
}

func (p *proc) kill() {
	p.cancel()
	_ = p.stdinW.CloseWithError(context.Canceled)
}

type procWriter struct {
	p   *proc
	typ string
}

func (w procWriter) Write(b []byte) (int, error) {
	w.p.append(frame{Type: w.typ, Data: bytes.Clone(b)})
	return len(b), nil
}

// start runs req in sandbox sb. The caller holds s.mu.
func (s *Server) startLocked(sb *sandbox, req api.ExecRequest) *proc {
	sb.nextPID++
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	p := &proc{pid: sb.nextPID, req: req, cancel: cancel, stdinW: stdinW, changed: make(chan struct{})}
	if req.Tag != nil {
		p.tag = *req.Tag
	}
	sb.procs[p.pid] = p
	run := s.Exec
	if run == nil {
		run = DefaultExec
	}
	go func() {
		code := run(ctx, req, stdinR, procWriter{p, "stdout"}, procWriter{p, "stderr"})
		if ctx.Err() != nil {
			code = 137
		}
		_ = stdinR.Close()
		s.mu.Lock()
		delete(sb.procs, p.pid)
		s.mu.Unlock()
		p.mu.Lock()
		p.exited, p.code = true, code
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		cancel()
	}()
	return p
}

func (s *Server) runningSandbox(w http.ResponseWriter, r *http.Request) *sandbox {
	sb := s.lookupLocked(w, r)
	if sb != nil && sb.info.State != api.SandboxStateRunning {
		writeError(w, http.StatusConflict, "failed_precondition", fmt.Sprintf("sandbox %q is %s", sb.info.Id, sb.info.State))
		return nil
	}
	return sb
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var req api.ExecRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Cmd == "" {
		writeError(w, http.StatusBadRequest, "invalid_argument", "cmd is required")
		return
	}
	s.mu.Lock()
	sb := s.runningSandbox(w, r)
	var p *proc
	if sb != nil {
		p = s.startLocked(sb, req)
	}
	s.mu.Unlock()
	if p == nil {
		return
	}
	if req.Background != nil && *req.Background {
		writeJSON(w, http.StatusOK, api.ExecResult{Pid: p.pid, Tag: req.Tag})
		return
	}
	go func() {
		if req.Stdin != nil {
			_, _ = io.WriteString(p.stdinW, *req.Stdin)
		}
		_ = p.stdinW.Close()
	}()
	var stdout, stderr bytes.Buffer
	for i := 0; ; {
		evs, exited, code, changed := p.since(i)
		for _, f := range evs {
			if f.Type == "stdout" {
				stdout.Write(f.Data)
			} else {
				stderr.Write(f.Data)
			}
		}
		i += len(evs)
		if exited {
			out, errOut := stdout.String(), stderr.String()
			res := api.ExecResult{Pid: p.pid, ExitCode: &code, Stdout: &out, Stderr: &errOut, Tag: req.Tag}
			if code == 137 {
				res.Error = ptr("signal: killed")
			}
			writeJSON(w, http.StatusOK, res)
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			p.kill()
			return
		}
	}
}

func writeFrame(ctx context.Context, conn *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return conn.Write(ctx, websocket.MessageText, b)
}

func (s *Server) execStream(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb := s.runningSandbox(w, r)
	s.mu.Unlock()
	if sb == nil {
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	typ, b, err := conn.Read(ctx)
	if err != nil {
		return
	}
	var req api.ExecRequest
	if typ != websocket.MessageText || json.Unmarshal(b, &req) != nil || req.Cmd == "" {
		var e api.Error
		e.Error.Code, e.Error.Message = "invalid_argument", "first frame must be an ExecRequest with cmd"
		_ = writeFrame(ctx, conn, frame{Type: "error", Error: e})
		_ = conn.Close(websocket.StatusNormalClosure, "")
		return
	}
	s.mu.Lock()
	p := s.startLocked(sb, req)
	s.mu.Unlock()
	s.stream(ctx, conn, p, true)
}

func (s *Server) reattach(w http.ResponseWriter, r *http.Request) {
	sel := r.PathValue("sel")
	s.mu.Lock()
	sb := s.lookupLocked(w, r)
	var p *proc
	if sb != nil {
		for _, q := range sb.procs {
			if strconv.Itoa(q.pid) == sel || q.tag != "" && q.tag == sel {
				p = q
			}
		}
		if p == nil {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no running process %q", sel))
		}
	}
	s.mu.Unlock()
	if p == nil {
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	s.stream(r.Context(), conn, p, false)
}

// stream sends p's events on conn until it exits and applies the client's
// ProcessInput frames. A foreground stream kills the process when the
// client goes away first.
func (s *Server) stream(ctx context.Context, conn *websocket.Conn, p *proc, foreground bool) {
	ctx, cancel := context.WithCancel(ctx)
	readDone := make(chan struct{})
	defer func() {
		cancel()
		<-readDone
	}()
	go func() {
		defer close(readDone)
		defer cancel()
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var in api.ProcessInput
			if json.Unmarshal(b, &in) != nil {
				continue
			}
			switch in.Type {
			case api.Stdin:
				if in.Data != nil {
					_, _ = p.stdinW.Write(*in.Data)
				}
			case api.Eof:
				_ = p.stdinW.Close()
			case api.Signal:
				p.kill()
			}
		}
	}()
	if writeFrame(ctx, conn, frame{Type: "start", Pid: &p.pid}) != nil {
		return
	}
	for i := 0; ; {
		evs, exited, code, changed := p.since(i)
		for _, f := range evs {
			if writeFrame(ctx, conn, f) != nil {
				if foreground {
					p.kill()
				}
				return
			}
		}
		i += len(evs)
		if exited {
			_ = writeFrame(ctx, conn, frame{Type: "exit", ExitCode: &code})
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if foreground {
				p.kill()
			}
			return
		}
	}
}

func (s *Server) listProcesses(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	procs := []api.Process{}
	for _, p := range sb.procs {
		ap := api.Process{Pid: p.pid, Cmd: p.req.Cmd, Args: p.req.Args, Cwd: p.req.Cwd}
		if p.tag != "" {
			ap.Tag = ptr(p.tag)
		}
		procs = append(procs, ap)
	}
	writeJSON(w, http.StatusOK, map[string]any{"processes": procs})
}

func (s *Server) signalProcess(w http.ResponseWriter, r *http.Request) {
	var req api.SignalProcessJSONBody
	if !decode(w, r, &req) {
		return
	}
	if !req.Signal.Valid() {
		writeError(w, http.StatusBadRequest, "invalid_argument", "signal must be SIGTERM or SIGKILL")
		return
	}
	sel := r.PathValue("sel")
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	for _, p := range sb.procs {
		if strconv.Itoa(p.pid) == sel || p.tag != "" && p.tag == sel {
			p.kill()
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no running process %q", sel))
}

// PTYSession is what a fake terminal received, for tests to check.
type PTYSession struct {
	Cols, Rows int
	Cmd        string
	// Input is every byte the client typed; Resizes every resize frame.
	Input   []byte
	Resizes [][2]int
}

// PTYSessions returns the terminals opened so far (ended ones included).
func (s *Server) PTYSessions() []PTYSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PTYSession, len(s.ptys))
	for i, p := range s.ptys {
		out[i] = *p
		out[i].Input = bytes.Clone(p.Input)
	}
	return out
}

// pty is a fake terminal: it greets with "fake pty COLSxROWS CMD\r\n",
// echoes input, answers a resize with "resized COLSxROWS\r\n", and exits
// with code 0 when it reads Ctrl-D (0x04) or with code N on "exit N\r".
func (s *Server) pty(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sess := &PTYSession{Cols: 80, Rows: 24, Cmd: q.Get("cmd")}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"cols", &sess.Cols}, {"rows", &sess.Rows}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				writeError(w, http.StatusBadRequest, "invalid_argument", f.name+" must be 1-1000")
				return
			}
			*f.dst = n
		}
	}
	s.mu.Lock()
	sb := s.runningSandbox(w, r)
	if sb != nil {
		s.ptys = append(s.ptys, sess)
	}
	s.mu.Unlock()
	if sb == nil {
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx := r.Context()
	if conn.Write(ctx, websocket.MessageBinary, fmt.Appendf(nil, "fake pty %dx%d %s\r\n", sess.Cols, sess.Rows, sess.Cmd)) != nil {
		return
	}
	var line []byte
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText {
			var rs struct {
				Type       string `json:"type"`
				Cols, Rows int
			}
			if json.Unmarshal(b, &rs) == nil && rs.Type == "resize" {
				s.mu.Lock()
				sess.Resizes = append(sess.Resizes, [2]int{rs.Cols, rs.Rows})
				s.mu.Unlock()
				_ = conn.Write(ctx, websocket.MessageBinary, fmt.Appendf(nil, "resized %dx%d\r\n", rs.Cols, rs.Rows))
			}
			continue
		}
		s.mu.Lock()
		sess.Input = append(sess.Input, b...)
		s.mu.Unlock()
		code := -1
		for _, c := range b {
			switch {
			case c == 0x04:
				code = 0
			case c == '\r' || c == '\n':
				if n, ok := strings.CutPrefix(string(line), "exit "); ok {
					code, _ = strconv.Atoi(strings.TrimSpace(n))
				}
				line = line[:0]
			default:
				line = append(line, c)
			}
		}
		if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
			return
		}
		if code >= 0 {
			_ = writeFrame(ctx, conn, frame{Type: "exit", ExitCode: &code})
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}
