package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/process"
)

const (
	// chunkSize bounds one DataEvent; a read returns whatever is available,
	// so small writes go out at once.
	chunkSize = 32 << 10
	// eventBuffer is how many chunks the readers may be ahead of the fan-out.
	eventBuffer = 16
	// subscriberBuffer is how many events one client may lag behind before
	// the process is held back.
	subscriberBuffer = 32
	// drainGrace is how long output is still read after the process exits.
	// A background child that inherited stdout keeps the pipe open; without
	// this bound the EndEvent would wait for that child.
	drainGrace = 500 * time.Millisecond
)

// kind says which stream a chunk of output came from.
type kind int

const (
	kindStdout kind = iota
	kindStderr
	kindPTY
)

// output is a read end of a process's stdout, stderr or PTY master.
type output struct {
	f    *os.File
	kind kind
}

// subscriber is one client stream attached to a process. The fan-out sends
// on ch and gives up when done closes (the client went away).
type subscriber struct {
	ch   chan *pb.ProcessEvent
	done <-chan struct{}
}

// proc is one started process. Its output flows reader goroutines -> events
// -> the owning fan-out goroutine -> each subscriber's channel; every hop is
// bounded and blocking, so a fast producer is slowed down, never truncated.
type proc struct {
	pid    uint32
	tag    string
	config *pb.ProcessConfig
	logger *slog.Logger
	cmd    *exec.Cmd

	stdin       *os.File // write end of the stdin pipe; nil without one
	stdinClosed atomic.Bool
	ptmx        *os.File // PTY master; nil without a PTY
	outputs     []output
	inMu        sync.Mutex // one writer at a time, so input chunks never interleave

	events chan *pb.ProcessEvent
	end    *pb.ProcessEvent // set before events is closed
	done   chan struct{}    // closed once the EndEvent has been fanned out

	mu     sync.Mutex
	subs   []*subscriber
	exited bool // the pid is (about to be) reaped: never signal it again
	ended  bool // EndEvent sent; nobody may subscribe any more
}

// newProc wires cmd's stdin/stdout/stderr (or a PTY) and returns a proc
// ready to start, with the child's ends of those files, which the caller
// closes once the child has them. On error every file opened here is closed.
func newProc(cmd *exec.Cmd, cfg *pb.ProcessConfig, tag string, size *pb.PTY_Size, stdin bool, logger *slog.Logger) (*proc, []*os.File, error) {
	p := &proc{
		tag:    tag,
		config: cfg,
		logger: logger,
		cmd:    cmd,
		events: make(chan *pb.ProcessEvent, eventBuffer),
		done:   make(chan struct{}),
	}
	var childEnds []*os.File
	fail := func(err error) (*proc, []*os.File, error) {
		for _, f := range childEnds {
			_ = f.Close()
		}
		p.closeFiles()
		return nil, nil, err
	}

	if size != nil {
		master, tty, err := openPTY(size)
		if err != nil {
			return fail(err)
		}
		p.ptmx = master
		p.outputs = []output{{f: master, kind: kindPTY}}
		childEnds = append(childEnds, tty)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0 // the child's stdin, which is the tty
		return p, childEnds, nil
	}

	if stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("create stdin pipe: %w", err))
		}
		p.stdin = w
		childEnds = append(childEnds, r)
		cmd.Stdin = r
	}
	for _, k := range []kind{kindStdout, kindStderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("create output pipe: %w", err))
		}
		p.outputs = append(p.outputs, output{f: r, kind: k})
		childEnds = append(childEnds, w)
		if k == kindStdout {
			cmd.Stdout = w
		} else {
			cmd.Stderr = w
		}
	}
	return p, childEnds, nil
}

// openPTY opens a PTY of the given size. The master is re-made non-blocking
// because pty.Open leaves it blocking, and only a pollable file lets reads
// take a deadline and lets Close interrupt a pending read or write.
func openPTY(size *pb.PTY_Size) (master, tty *os.File, err error) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	fd, err := unix.FcntlInt(ptmx.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	_ = ptmx.Close()
	if err != nil {
		_ = tty.Close()
		return nil, nil, fmt.Errorf("dup pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		_ = tty.Close()
		return nil, nil, fmt.Errorf("make pty master non-blocking: %w", err)
	}
	master = os.NewFile(uintptr(fd), "ptmx")
	if err := setWinsize(master, size); err != nil {
		_ = master.Close()
		_ = tty.Close()
		return nil, nil, err
	}
	return master, tty, nil
}

func setWinsize(f *os.File, size *pb.PTY_Size) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize pty: %w", err)
	}
	var ioctlErr error
	err = sc.Control(func(fd uintptr) {
		ioctlErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ,
			&unix.Winsize{Row: uint16(size.GetRows()), Col: uint16(size.GetCols())})
	})
	if err == nil {
		err = ioctlErr
	}
	if err != nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "resize pty: %v", err)
	}
	return nil
}

// subscribe attaches a client. Events produced from now on are delivered to
// it, then the EndEvent. A process whose end was already sent is NotFound.
func (p *proc) subscribe(done <-chan struct{}) (*subscriber, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil, errdefs.New(errdefs.ErrNotFound, "process %d has finished", p.pid)
	}
	sub := &subscriber{ch: make(chan *pb.ProcessEvent, subscriberBuffer), done: done}
	p.subs = append(p.subs, sub)
	return sub, nil
}

func (p *proc) unsubscribe(sub *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = slices.DeleteFunc(p.subs, func(s *subscriber) bool { return s == sub })
}

// run starts the process's goroutines: one reader per output, a waiter and
// the fan-out owner. wg is done when all of them have returned. onExit is
// called once the process has exited, before anything else learns of it.
func (p *proc) run(wg *sync.WaitGroup, abort <-chan struct{}, onExit func(*proc)) {
	var readers sync.WaitGroup
	for _, o := range p.outputs {
		readers.Add(1)
		wg.Go(func() {
			defer readers.Done()
			p.read(o)
		})
	}
	wg.Go(func() { p.wait(&readers, onExit) })
	wg.Go(func() { p.fanOut(abort) })
}

// read copies one output into events until EOF (EIO for a PTY), or until the
// process has exited and nothing more arrived within drainGrace.
func (p *proc) read(o output) {
	buf := make([]byte, chunkSize)
	for {
		if p.hasExited() {
			// The deadline is renewed before each read, so time spent
			// blocked on a slow client never counts against it.
			_ = o.f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := o.f.Read(buf)
		if n > 0 {
			p.events <- dataEvent(o.kind, bytes.Clone(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

func (p *proc) hasExited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// wait reaps the process, records its EndEvent and closes events once all
// output has been read.
func (p *proc) wait(readers *sync.WaitGroup, onExit func(*proc)) {
	// Wait for the exit without reaping, so the pid cannot be reused while
	// signal() still believes the process runs.
	waitExited(p.cmd.Process.Pid)
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	onExit(p)

	waitErr := p.cmd.Wait()
	for _, o := range p.outputs {
		_ = o.f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	if p.stdin != nil {
		p.stdinClosed.Store(true)
		_ = p.stdin.Close()
	}
	readers.Wait()

	end := &pb.ProcessEvent_EndEvent{ExitCode: -1}
	if st := p.cmd.ProcessState; st != nil {
		end.ExitCode = int32(st.ExitCode())
		end.Exited = st.Exited()
		end.Status = st.String()
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		msg := waitErr.Error()
		end.Error = &msg
	}
	p.logger.Info("process ended", "status", end.Status)
	p.end = &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: end}}
	close(p.events)
}

// fanOut is the owner of delivery: it hands each event to every current
// subscriber in order, blocking on slow ones (backpressure) but dropping a
// subscriber the moment its client is gone. With no subscribers output is
// discarded, so a detached process never stalls on a full pipe.
func (p *proc) fanOut(abort <-chan struct{}) {
	for ev := range p.events {
		p.deliver(ev, abort)
	}
	p.mu.Lock()
	p.ended = true
	p.mu.Unlock()
	p.deliver(p.end, abort)
	p.mu.Lock()
	p.subs = nil
	p.mu.Unlock()
	p.closeFiles()
	close(p.done)
}

func (p *proc) deliver(ev *pb.ProcessEvent, abort <-chan struct{}) {
	p.mu.Lock()
	subs := slices.Clone(p.subs)
	p.mu.Unlock()
	for _, s := range subs {
		// Try without blocking first: when there is room the event must
		// go out, even if abort or done are ready too (select is random).
		select {
		case s.ch <- ev:
			continue
		default:
		}
		select {
		case s.ch <- ev:
		case <-s.done:
			p.unsubscribe(s)
		case <-abort:
			// Shutting down: nobody may hold the process back any more.
		}
	}
}

func (p *proc) closeFiles() {
	for _, o := range p.outputs {
		_ = o.f.Close()
	}
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
}

// signal sends sig to the process's whole group.
func (p *proc) signal(sig unix.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return errdefs.New(errdefs.ErrNotFound, "process %d has finished", p.pid)
	}
	// Setsid made the process a group leader, so its pgid is its pid.
	if err := unix.Kill(-int(p.pid), sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errdefs.New(errdefs.ErrNotFound, "process %d has finished", p.pid)
		}
		return fmt.Errorf("signal process group %d: %w", p.pid, errdefs.FromOS(err))
	}
	return nil
}

// write sends input to the process's stdin pipe or PTY. It returns when all
// of data is written, ctx is done, or the process stops reading.
func (p *proc) write(ctx context.Context, in *pb.ProcessInput) error {
	var f *os.File
	var data []byte
	switch x := in.GetInput().(type) {
	case *pb.ProcessInput_Stdin:
		if p.ptmx != nil {
			return errdefs.New(errdefs.ErrFailedPrecondition, "process %d has a PTY: send pty input instead of stdin", p.pid)
		}
		if p.stdin == nil {
			return errdefs.New(errdefs.ErrFailedPrecondition, "process %d was started without stdin", p.pid)
		}
		f, data = p.stdin, x.Stdin
	case *pb.ProcessInput_Pty:
		if p.ptmx == nil {
			return errdefs.New(errdefs.ErrFailedPrecondition, "process %d has no PTY", p.pid)
		}
		f, data = p.ptmx, x.Pty
	default:
		return errdefs.New(errdefs.ErrInvalidArgument, "input must set stdin or pty")
	}

	p.inMu.Lock()
	defer p.inMu.Unlock()
	if f == p.stdin && p.stdinClosed.Load() {
		return errdefs.New(errdefs.ErrFailedPrecondition, "stdin of process %d is closed", p.pid)
	}
	// A process that does not read would block the write forever; an
	// expired deadline interrupts it when the caller gives up.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = f.SetWriteDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	_, err := f.Write(data)
	if !stop() {
		<-interrupted
		_ = f.SetWriteDeadline(time.Time{})
		if err != nil {
			return fmt.Errorf("write input of process %d: %w", p.pid, ctx.Err())
		}
	}
	if err != nil {
		if f == p.stdin && p.stdinClosed.Load() {
			return errdefs.New(errdefs.ErrFailedPrecondition, "stdin of process %d is closed", p.pid)
		}
		return errdefs.New(errdefs.ErrFailedPrecondition, "write input of process %d: %v", p.pid, err)
	}
	return nil
}

// closeStdin gives the process EOF on stdin. Closing twice is fine.
func (p *proc) closeStdin() error {
	if p.ptmx != nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "process %d has a PTY: send Ctrl-D (0x04) as pty input instead", p.pid)
	}
	if p.stdin == nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "process %d was started without stdin", p.pid)
	}
	p.stdinClosed.Store(true)
	// Close wakes a write blocked on a full pipe, so it never waits for inMu.
	if err := p.stdin.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close stdin of process %d: %w", p.pid, err)
	}
	return nil
}

// resize changes the PTY's window size; the kernel sends SIGWINCH.
func (p *proc) resize(size *pb.PTY_Size) error {
	if p.ptmx == nil {
		return errdefs.New(errdefs.ErrFailedPrecondition, "process %d has no PTY to resize", p.pid)
	}
	return setWinsize(p.ptmx, size)
}

func (p *proc) info() *pb.ProcessInfo {
	info := &pb.ProcessInfo{Config: p.config, Pid: p.pid}
	if p.tag != "" {
		info.Tag = &p.tag
	}
	return info
}

func dataEvent(k kind, b []byte) *pb.ProcessEvent {
	d := &pb.ProcessEvent_DataEvent{}
	switch k {
	case kindStdout:
		d.Output = &pb.ProcessEvent_DataEvent_Stdout{Stdout: b}
	case kindStderr:
		d.Output = &pb.ProcessEvent_DataEvent_Stderr{Stderr: b}
	case kindPTY:
		d.Output = &pb.ProcessEvent_DataEvent_Pty{Pty: b}
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d}}
}
