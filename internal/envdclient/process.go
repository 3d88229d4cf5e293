package envdclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/proto/envd/process"
)

// RunRequest describes a process to start in the guest.
type RunRequest struct {
	Cmd  string
	Args []string
	// Env is added to envd's defaults (those from Init).
	Env map[string]string
	// Cwd defaults to envd's default working directory.
	Cwd string
	// User defaults to the Client's user, then envd's default.
	User string
	// Tag names the process for Connect(ByTag(...)) and List.
	Tag string

	// Stdin, when set, is streamed to the process, then stdin is closed
	// (for a PTY process it is typed into the terminal and left open). Its
	// Read must eventually return: Run and Process.Close wait for it.
	Stdin io.Reader
	// OpenStdin gives the process a stdin pipe for SendStdin even without
	// Stdin. Without either, the process's stdin is /dev/null.
	OpenStdin bool
	// PTY, when set, runs the process on a terminal of this size; its output
	// then arrives on Stdout only.
	PTY *PTYSize

	// Stdout and Stderr receive output as it arrives, from one goroutine,
	// in order. Nil discards. A slow writer slows the stream, not memory.
	Stdout, Stderr io.Writer
}

// PTYSize is a terminal size in character cells.
type PTYSize struct{ Cols, Rows uint32 }

// Result is how a process ended.
type Result struct {
	// ExitCode is the exit status, or -1 when a signal ended the process.
	ExitCode int
	// Exited is true when the process exited by itself (not by a signal).
	Exited bool
	// Status is envd's description, e.g. "exit status 1" or "signal: killed".
	Status string
	// Error is set when envd could not run or wait for the process.
	Error string
}

// Selector picks a running process by pid or tag.
type Selector struct {
	pid uint32
	tag string
}

// ByPID selects a process by its guest pid.
func ByPID(pid uint32) Selector { return Selector{pid: pid} }

// ByTag selects a process by the tag it was started with.
func ByTag(tag string) Selector { return Selector{tag: tag} }

func (s Selector) proto() *process.ProcessSelector {
	if s.tag != "" {
		return &process.ProcessSelector{Selector: &process.ProcessSelector_Tag{Tag: s.tag}}
	}
	return &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: s.pid}}
}

func (s Selector) String() string {
	if s.tag != "" {
		return "tag " + s.tag
	}
	return fmt.Sprintf("pid %d", s.pid)
}

// ProcessInfo describes a running process envd started.
type ProcessInfo struct {
	PID  uint32
	Tag  string
	Cmd  string
	Args []string
	Env  map[string]string
	Cwd  string
}

// Run starts a process, streams its output to req.Stdout/Stderr and
// returns how it ended. A non-zero exit is a Result, not an error. If ctx
// ends first the process is killed (best effort) and ctx's error returned.
func (c *Client) Run(ctx context.Context, req RunRequest) (Result, error) {
	p, err := c.Start(ctx, req)
	if err != nil {
		return Result{}, err
	}
	defer p.Close()
	res, err := p.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		// The caller gave up; do not leave the command running in the guest.
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = p.Kill(kctx)
	}
	return res, err
}

// Start starts a process and returns once envd reports its pid. Output is
// delivered to req.Stdout/Stderr in the background until the process ends,
// Close is called, or ctx ends: ctx bounds the whole attachment, not just
// the start. Ending the attachment does not kill the process.
func (c *Client) Start(ctx context.Context, req RunRequest) (*Process, error) {
	if req.Cmd == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "start process: empty command")
	}
	sreq := &process.StartRequest{
		Process: &process.ProcessConfig{Cmd: req.Cmd, Args: req.Args, Envs: req.Env},
	}
	if req.Cwd != "" {
		sreq.Process.Cwd = &req.Cwd
	}
	if req.Tag != "" {
		sreq.Tag = &req.Tag
	}
	stdin := req.Stdin != nil || req.OpenStdin
	sreq.Stdin = &stdin
	if req.PTY != nil {
		sreq.Pty = &process.PTY{Size: &process.PTY_Size{Cols: req.PTY.Cols, Rows: req.PTY.Rows}}
	}
	creq := connect.NewRequest(sreq)
	setUser(creq.Header(), req.User)

	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.proc.Start(sctx, creq)
	if err != nil {
		cancel()
		return nil, connectErr("start process "+req.Cmd, err)
	}
	p := newProcess(c, cancel, streamOf(stream), req.Stdout, req.Stderr, req.PTY != nil)
	if err := p.awaitStart(Selector{}); err != nil {
		return nil, fmt.Errorf("start process %s: %w", req.Cmd, err)
	}
	if req.Stdin != nil {
		p.feed(sctx, req.Stdin)
	}
	return p, nil
}

// Connect re-attaches to a running process: its output from now on goes to
// stdout/stderr (nil discards), then its end. ctx bounds the attachment.
func (c *Client) Connect(ctx context.Context, sel Selector, stdout, stderr io.Writer) (*Process, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.proc.Connect(sctx, connect.NewRequest(&process.ConnectRequest{Process: sel.proto()}))
	if err != nil {
		cancel()
		return nil, connectErr("connect to process "+sel.String(), err)
	}
	p := newProcess(c, cancel, streamOf(stream), stdout, stderr, false)
	if err := p.awaitStart(sel); err != nil {
		return nil, fmt.Errorf("connect to process %s: %w", sel, err)
	}
	return p, nil
}

// List returns the processes envd started that still run.
func (c *Client) List(ctx context.Context) ([]ProcessInfo, error) {
	resp, err := c.proc.List(ctx, connect.NewRequest(&process.ListRequest{}))
	if err != nil {
		return nil, connectErr("list processes", err)
	}
	out := make([]ProcessInfo, 0, len(resp.Msg.GetProcesses()))
	for _, pi := range resp.Msg.GetProcesses() {
		cfg := pi.GetConfig()
		out = append(out, ProcessInfo{
			PID: pi.GetPid(), Tag: pi.GetTag(),
			Cmd: cfg.GetCmd(), Args: cfg.GetArgs(), Env: cfg.GetEnvs(), Cwd: cfg.GetCwd(),
		})
	}
	return out, nil
}

// Process is a handle on a process running in the guest. Its methods are
// safe for concurrent use. Call Close (or Wait to the end) to release it.
type Process struct {
	c      *Client
	pid    uint32
	events events
	stdout io.Writer
	stderr io.Writer
	pty    atomic.Bool

	cancel context.CancelFunc
	// first carries the pid (or the failure) from the reader goroutine.
	first chan error
	done  chan struct{} // closed when the reader goroutine has finished
	wg    sync.WaitGroup

	// Written by the reader goroutine before done is closed.
	res    Result
	ended  bool
	err    error
	mu     sync.Mutex
	inErr  error // stdin feeder failure
	closed sync.Once
}

// events abstracts the Start and Connect response streams.
type events struct {
	receive func() bool
	event   func() *process.ProcessEvent
	err     func() error
	close   func() error
}

// eventer is *StartResponse or *ConnectResponse.
type eventer[T any] interface {
	*T
	GetEvent() *process.ProcessEvent
}

func streamOf[T any, PT eventer[T]](s *connect.ServerStreamForClient[T]) events {
	return events{
		receive: s.Receive,
		event:   func() *process.ProcessEvent { return PT(s.Msg()).GetEvent() },
		err:     s.Err,
		close:   s.Close,
	}
}

func newProcess(c *Client, cancel context.CancelFunc, ev events, stdout, stderr io.Writer, pty bool) *Process {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	p := &Process{
		c: c, events: ev, stdout: stdout, stderr: stderr, cancel: cancel,
		first: make(chan error, 1), done: make(chan struct{}),
	}
	p.pty.Store(pty)
	p.wg.Add(1)
	go p.read()
	return p
}

// awaitStart waits for the start event. A Connect stream may begin with
// output instead; the selector's pid is then used.
func (p *Process) awaitStart(sel Selector) error {
	if err := <-p.first; err != nil {
		p.Close()
		return err
	}
	if p.pid == 0 {
		p.pid = sel.pid
	}
	return nil
}

// read owns the response stream: it delivers output in order and records
// how the process ended.
func (p *Process) read() {
	defer p.wg.Done()
	defer close(p.done)
	defer func() { _ = p.events.close() }()
	started := false
	signalStart := func(err error) {
		if !started {
			started = true
			p.first <- err
		}
	}
	for p.events.receive() {
		ev := p.events.event()
		switch e := ev.GetEvent().(type) {
		case *process.ProcessEvent_Start:
			if !started {
				p.pid = e.Start.GetPid()
			}
			signalStart(nil)
		case *process.ProcessEvent_Data:
			signalStart(nil)
			if err := p.write(e.Data); err != nil {
				p.err = err
				return
			}
		case *process.ProcessEvent_End:
			signalStart(nil)
			end := e.End
			p.res = Result{ExitCode: int(end.GetExitCode()), Exited: end.GetExited(), Status: end.GetStatus(), Error: end.GetError()}
			p.ended = true
			return
		case *process.ProcessEvent_Keepalive:
		}
	}
	err := p.events.err()
	if err == nil {
		err = errdefs.New(errdefs.ErrUnavailable, "envd closed the process stream before the process ended")
	} else {
		err = fromConnect(err)
	}
	p.err = err
	signalStart(err)
}

func (p *Process) write(d *process.ProcessEvent_DataEvent) error {
	var err error
	switch o := d.GetOutput().(type) {
	case *process.ProcessEvent_DataEvent_Stdout:
		_, err = p.stdout.Write(o.Stdout)
	case *process.ProcessEvent_DataEvent_Stderr:
		_, err = p.stderr.Write(o.Stderr)
	case *process.ProcessEvent_DataEvent_Pty:
		p.pty.Store(true)
		_, err = p.stdout.Write(o.Pty)
	}
	if err != nil {
		return fmt.Errorf("write process output: %w", err)
	}
	return nil
}

// feed streams r into the process's stdin in the background, then closes
// stdin (not for a PTY, where EOF is a keystroke the caller chooses).
func (p *Process) feed(ctx context.Context, r io.Reader) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, rerr := r.Read(buf)
			if n > 0 {
				if err := p.SendStdin(ctx, buf[:n]); err != nil {
					// A send fails when the process exited without reading
					// everything (head -1); that is no error of the caller's.
					<-p.done
					if !p.ended {
						p.setInErr(err)
					}
					return
				}
			}
			if errors.Is(rerr, io.EOF) {
				break
			}
			if rerr != nil {
				p.setInErr(fmt.Errorf("read stdin for process %d: %w", p.pid, rerr))
				break // still close stdin so the process can finish
			}
		}
		if !p.pty.Load() {
			if err := p.CloseStdin(ctx); err != nil && ctx.Err() == nil {
				<-p.done
				if !p.ended {
					p.setInErr(err)
				}
			}
		}
	}()
}

func (p *Process) setInErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inErr == nil {
		p.inErr = err
	}
}

// PID is the process's pid in the guest.
func (p *Process) PID() uint32 { return p.pid }

// Wait blocks until the process ends (all its output delivered) or ctx
// ends. A non-zero exit is reported in Result, not as an error.
func (p *Process) Wait(ctx context.Context) (Result, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("wait for process %d: %w", p.pid, ctx.Err())
	}
	p.mu.Lock()
	inErr := p.inErr
	p.mu.Unlock()
	if p.err != nil {
		return Result{}, fmt.Errorf("wait for process %d: %w", p.pid, errors.Join(p.err, inErr))
	}
	if inErr != nil {
		return p.res, fmt.Errorf("process %d: %w", p.pid, inErr)
	}
	return p.res, nil
}

// Close stops receiving output and releases the handle. The process keeps
// running in the guest; Kill it first if it should not. Close waits for the
// RunRequest.Stdin feeder, so that reader's Read must return.
func (p *Process) Close() {
	p.closed.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
}

// Signal sends sig to the process.
func (p *Process) Signal(ctx context.Context, sig process.Signal) error {
	_, err := p.c.proc.SendSignal(ctx, connect.NewRequest(&process.SendSignalRequest{Process: p.sel(), Signal: sig}))
	return connectErr(fmt.Sprintf("signal process %d", p.pid), err)
}

// Kill sends SIGKILL.
func (p *Process) Kill(ctx context.Context) error {
	return p.Signal(ctx, process.Signal_SIGNAL_SIGKILL)
}

// SendStdin writes data to the process's stdin, or types it into its
// terminal when it runs on a PTY.
func (p *Process) SendStdin(ctx context.Context, data []byte) error {
	in := &process.ProcessInput{Input: &process.ProcessInput_Stdin{Stdin: data}}
	if p.pty.Load() {
		in.Input = &process.ProcessInput_Pty{Pty: data}
	}
	_, err := p.c.proc.SendInput(ctx, connect.NewRequest(&process.SendInputRequest{Process: p.sel(), Input: in}))
	return connectErr(fmt.Sprintf("send input to process %d", p.pid), err)
}

// CloseStdin signals EOF on the process's stdin (not for PTY processes).
func (p *Process) CloseStdin(ctx context.Context) error {
	_, err := p.c.proc.CloseStdin(ctx, connect.NewRequest(&process.CloseStdinRequest{Process: p.sel()}))
	return connectErr(fmt.Sprintf("close stdin of process %d", p.pid), err)
}

// Resize changes the size of the process's terminal.
func (p *Process) Resize(ctx context.Context, size PTYSize) error {
	req := &process.UpdateRequest{Process: p.sel(), Pty: &process.PTY{Size: &process.PTY_Size{Cols: size.Cols, Rows: size.Rows}}}
	_, err := p.c.proc.Update(ctx, connect.NewRequest(req))
	return connectErr(fmt.Sprintf("resize terminal of process %d", p.pid), err)
}

func (p *Process) sel() *process.ProcessSelector { return ByPID(p.pid).proto() }
