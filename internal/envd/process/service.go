// Package process serves envd's process.Process Connect service: it starts
// processes in the guest, streams their output to any number of attached
// clients, and lets clients re-attach, send input and signals, and resize
// PTYs. A process outlives the client that started it.
//
// Error codes, beyond the obvious not_found for an unknown or finished
// pid/tag: an argument that can never work is invalid_argument (empty cmd,
// missing cwd, unset selector or input, a signal other than SIGTERM/SIGKILL,
// a zero PTY size); an operation the chosen process cannot take is
// failed_precondition (Update on a process without a PTY, stdin input to a
// PTY process or to one started with stdin=false, PTY input without a PTY,
// CloseStdin on a PTY or stdin-less process, input after stdin was closed);
// a second running process with the same tag is already_exists.
//
// A process with a PTY has no separate stdin: StartRequest.stdin is ignored
// and input goes to the PTY. Update without a pty field changes nothing.
package process

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

var _ processconnect.ProcessHandler = (*Service)(nil)

// DefaultKeepAliveInterval is how often an idle output stream carries a
// KeepAlive event, as E2B's envd does, so proxies do not cut it.
const DefaultKeepAliveInterval = 50 * time.Second

// Service implements processconnect.ProcessHandler.
type Service struct {
	// KeepAliveInterval is the idle time after which an output stream gets a
	// KeepAlive event. Set it before serving; tests shorten it.
	KeepAliveInterval time.Duration

	logger *slog.Logger
	defs   *defaults.Defaults

	abort     chan struct{} // closed by Close: fan-outs stop waiting for clients
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine of every process

	mu       sync.Mutex
	closed   bool
	byPID    map[uint32]*proc
	byTag    map[string]*proc
	reserved map[string]bool // tags of processes being started
}

// NewService returns a service that runs processes with the given defaults.
func NewService(logger *slog.Logger, defs *defaults.Defaults) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if defs == nil {
		defs = defaults.New("", "")
	}
	return &Service{
		KeepAliveInterval: DefaultKeepAliveInterval,
		logger:            logger,
		defs:              defs,
		abort:             make(chan struct{}),
		byPID:             map[uint32]*proc{},
		byTag:             map[string]*proc{},
		reserved:          map[string]bool{},
	}
}

// Close kills every process the service started (SIGKILL to each process
// group) and waits for them to be reaped and their streams to end. Start
// fails with unavailable afterwards. Close is safe to call more than once.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	procs := slices.Collect(maps.Values(s.byPID))
	s.mu.Unlock()
	s.closeOnce.Do(func() { close(s.abort) })
	for _, p := range procs {
		_ = p.signal(unix.SIGKILL)
	}
	s.wg.Wait()
}

// List returns the running processes, ordered by pid.
func (s *Service) List(context.Context, *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error) {
	s.mu.Lock()
	procs := slices.Collect(maps.Values(s.byPID))
	s.mu.Unlock()
	slices.SortFunc(procs, func(a, b *proc) int { return cmp.Compare(a.pid, b.pid) })
	out := &pb.ListResponse{}
	for _, p := range procs {
		out.Processes = append(out.Processes, p.info())
	}
	return connect.NewResponse(out), nil
}

// Start runs a process and streams StartEvent, its output and EndEvent.
// The process keeps running if the client goes away.
func (s *Service) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, sub, err := s.start(req, ctx.Done())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	defer p.unsubscribe(sub)
	return errdefs.ToConnect(s.follow(ctx, p, sub, func(ev *pb.ProcessEvent) error {
		return stream.Send(&pb.StartResponse{Event: ev})
	}))
}

// Connect re-attaches to a running process: StartEvent, output produced
// from now on, then EndEvent.
func (s *Service) Connect(ctx context.Context, req *connect.Request[pb.ConnectRequest], stream *connect.ServerStream[pb.ConnectResponse]) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := s.lookup(req.Msg.GetProcess())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	sub, err := p.subscribe(ctx.Done())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	defer p.unsubscribe(sub)
	return errdefs.ToConnect(s.follow(ctx, p, sub, func(ev *pb.ProcessEvent) error {
		return stream.Send(&pb.ConnectResponse{Event: ev})
	}))
}

// Update resizes a process's PTY. A request without a pty changes nothing.
func (s *Service) Update(_ context.Context, req *connect.Request[pb.UpdateRequest]) (*connect.Response[pb.UpdateResponse], error) {
	p, err := s.lookup(req.Msg.GetProcess())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if req.Msg.Pty != nil {
		size := req.Msg.GetPty().GetSize()
		if err := validSize(size); err != nil {
			return nil, errdefs.ToConnect(err)
		}
		if err := p.resize(size); err != nil {
			return nil, errdefs.ToConnect(err)
		}
	}
	return connect.NewResponse(&pb.UpdateResponse{}), nil
}

// SendInput writes one chunk to a process's stdin or PTY.
func (s *Service) SendInput(ctx context.Context, req *connect.Request[pb.SendInputRequest]) (*connect.Response[pb.SendInputResponse], error) {
	p, err := s.lookup(req.Msg.GetProcess())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := p.write(ctx, req.Msg.GetInput()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.SendInputResponse{}), nil
}

// StreamInput writes a client stream of input to a process in order. The
// first message must name the process; KeepAlive messages are ignored.
func (s *Service) StreamInput(ctx context.Context, stream *connect.ClientStream[pb.StreamInputRequest]) (*connect.Response[pb.StreamInputResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "input stream ended before its start message"))
	}
	start := stream.Msg().GetStart()
	if start == nil {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "first input stream message must be start"))
	}
	p, err := s.lookup(start.GetProcess())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *pb.StreamInputRequest_Data:
			if err := p.write(ctx, ev.Data.GetInput()); err != nil {
				return nil, errdefs.ToConnect(err)
			}
		case *pb.StreamInputRequest_Keepalive:
		case *pb.StreamInputRequest_Start:
			return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "input stream sent start twice"))
		default:
			return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "input stream message has no event"))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pb.StreamInputResponse{}), nil
}

// SendSignal sends SIGTERM or SIGKILL to a process's whole group.
func (s *Service) SendSignal(_ context.Context, req *connect.Request[pb.SendSignalRequest]) (*connect.Response[pb.SendSignalResponse], error) {
	var sig unix.Signal
	switch req.Msg.GetSignal() {
	case pb.Signal_SIGNAL_SIGTERM:
		sig = unix.SIGTERM
	case pb.Signal_SIGNAL_SIGKILL:
		sig = unix.SIGKILL
	default:
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument,
			"signal %v is not supported: use SIGNAL_SIGTERM or SIGNAL_SIGKILL", req.Msg.GetSignal()))
	}
	p, err := s.lookup(req.Msg.GetProcess())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := p.signal(sig); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.SendSignalResponse{}), nil
}

// CloseStdin closes a process's stdin pipe so it reads EOF.
func (s *Service) CloseStdin(_ context.Context, req *connect.Request[pb.CloseStdinRequest]) (*connect.Response[pb.CloseStdinResponse], error) {
	p, err := s.lookup(req.Msg.GetProcess())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := p.closeStdin(); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&pb.CloseStdinResponse{}), nil
}

// start validates the request, starts the process and returns it with the
// caller already subscribed, so not a byte of output is missed.
func (s *Service) start(req *connect.Request[pb.StartRequest], done <-chan struct{}) (*proc, *subscriber, error) {
	msg := req.Msg
	var size *pb.PTY_Size
	if msg.Pty != nil {
		size = msg.GetPty().GetSize()
		if size == nil {
			size = &pb.PTY_Size{Cols: 80, Rows: 24}
		}
		if err := validSize(size); err != nil {
			return nil, nil, err
		}
	}
	cmd, u, err := s.command(req.Header(), msg)
	if err != nil {
		return nil, nil, err
	}
	tag := msg.GetTag()
	if err := s.reserve(tag); err != nil {
		return nil, nil, err
	}
	cfg := proto.CloneOf(msg.GetProcess())
	p, childEnds, err := newProc(cmd, cfg, tag, size, msg.Stdin == nil || msg.GetStdin(), s.logger)
	if err != nil {
		s.release(tag)
		return nil, nil, err
	}
	// The starter is subscribed before the first byte can be produced.
	sub := &subscriber{ch: make(chan *pb.ProcessEvent, subscriberBuffer), done: done}
	p.subs = []*subscriber{sub}

	err = cmd.Start()
	for _, f := range childEnds {
		_ = f.Close()
	}
	if err != nil {
		p.closeFiles()
		s.release(tag)
		return nil, nil, fmt.Errorf("start %s: %w", cfg.GetCmd(), errdefs.FromOS(err))
	}
	p.pid = uint32(cmd.Process.Pid)
	resetOOMScore(cmd.Process.Pid)
	p.logger = s.logger.With("pid", p.pid, "tag", tag)
	p.logger.Info("process started", "cmd", cfg.GetCmd(), "user", u.Name, "pty", size != nil)
	s.register(p)
	return p, sub, nil
}

// reserve claims tag for a process about to start and counts the start in
// wg, so Close waits for it. Starting after Close is unavailable.
func (s *Service) reserve(tag string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errdefs.New(errdefs.ErrUnavailable, "process service is shutting down")
	}
	if tag != "" {
		if _, ok := s.byTag[tag]; ok || s.reserved[tag] {
			return errdefs.New(errdefs.ErrAlreadyExists, "a running process already has tag %q", tag)
		}
		s.reserved[tag] = true
	}
	s.wg.Add(1)
	return nil
}

// release undoes reserve for a start that failed.
func (s *Service) release(tag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, tag)
	s.wg.Done()
}

// register makes a started process visible and starts its goroutines. If
// Close ran meanwhile the process is killed at once; it is still reaped.
func (s *Service) register(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, p.tag)
	s.byPID[p.pid] = p
	if p.tag != "" {
		s.byTag[p.tag] = p
	}
	p.run(&s.wg, s.abort, s.remove)
	s.wg.Done() // the reservation; p.run holds its own counts now
	if s.closed {
		_ = p.signal(unix.SIGKILL)
	}
}

// remove forgets a process that has exited: from now on it is not found,
// and its tag is free again.
func (s *Service) remove(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byPID[p.pid] == p {
		delete(s.byPID, p.pid)
	}
	if p.tag != "" && s.byTag[p.tag] == p {
		delete(s.byTag, p.tag)
	}
}

// lookup finds a running process by pid or tag.
func (s *Service) lookup(sel *pb.ProcessSelector) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch x := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		if p, ok := s.byPID[x.Pid]; ok {
			return p, nil
		}
		return nil, errdefs.New(errdefs.ErrNotFound, "no running process with pid %d", x.Pid)
	case *pb.ProcessSelector_Tag:
		if x.Tag == "" {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "process selector has an empty tag")
		}
		if p, ok := s.byTag[x.Tag]; ok {
			return p, nil
		}
		return nil, errdefs.New(errdefs.ErrNotFound, "no running process with tag %q", x.Tag)
	}
	return nil, errdefs.New(errdefs.ErrInvalidArgument, "process selector must set pid or tag")
}

// follow streams a subscription to a client: StartEvent, then every event
// until EndEvent, with KeepAlive events while idle. It returns when the
// process has ended, the client is gone, or the service shuts down.
func (s *Service) follow(ctx context.Context, p *proc, sub *subscriber, send func(*pb.ProcessEvent) error) error {
	if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: p.pid}}}); err != nil {
		return err
	}
	interval := cmp.Or(s.KeepAliveInterval, DefaultKeepAliveInterval)
	idle := time.NewTimer(interval)
	defer idle.Stop()
	for {
		select {
		case ev := <-sub.ch:
			if err := send(ev); err != nil {
				return err
			}
			if ev.GetEnd() != nil {
				return nil
			}
			idle.Reset(interval)
		case <-idle.C:
			if err := send(&pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}); err != nil {
				return err
			}
			idle.Reset(interval)
		case <-p.done:
			// Normally the EndEvent is already queued; on shutdown the
			// fan-out may have skipped this client.
			for {
				select {
				case ev := <-sub.ch:
					if err := send(ev); err != nil || ev.GetEnd() != nil {
						return err
					}
				default:
					return nil
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func validSize(size *pb.PTY_Size) error {
	if size.GetCols() == 0 || size.GetRows() == 0 || size.GetCols() > 0xffff || size.GetRows() > 0xffff {
		return errdefs.New(errdefs.ErrInvalidArgument, "pty size must be 1..65535 columns and rows, got %dx%d", size.GetCols(), size.GetRows())
	}
	return nil
}

// resetOOMScore gives a user process the default OOM score. In the guest
// envd runs with oom_score_adj -1000 so that a memory hog gets killed rather
// than the agent; its children inherit that and must not keep it. Raising
// the score needs no privilege; failure (no /proc, a process already gone)
// only means the child keeps its parent's score.
func resetOOMScore(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte("0"), 0)
}
