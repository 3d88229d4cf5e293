package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// QMPError is an error QEMU returned for a command. Class is QMP's error
// class ("GenericError", "CommandNotFound", "DeviceNotFound", ...), Desc its
// human text.
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event (STOP, RESUME, SHUTDOWN, MIGRATION, ...).
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// ErrQMPClosed is returned by Execute once the connection is closed, by
// Close or because QEMU went away.
var ErrQMPClosed = errors.New("qmp connection closed")

// eventBuffer bounds the events kept for a slow reader; older readers lose
// the newest events (counted in DroppedEvents) rather than stall QMP replies.
const eventBuffer = 64

// QMP is a client for one QEMU Machine Protocol connection. It is safe for
// concurrent use: each command carries its own id, and one reader goroutine
// (owned by the client, stopped by Close) routes replies and events.
type QMP struct {
	conn *net.UnixConn

	writeMu sync.Mutex // one command on the wire at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpReply
	readErr error // why the reader stopped; set before done closes

	events  chan Event
	dropped atomic.Uint64

	done      chan struct{} // closed when the reader exits
	closeOnce sync.Once
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// qmpMessage is any line QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP       json.RawMessage `json:"QMP"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	qmpReply
}

// maxQMPLine caps one QMP message (QMP sends one per line). QEMU runs the
// guest's devices, so a guest that escapes into it speaks QMP to the agent:
// without a cap it could make the agent buffer one endless message. The
// largest honest reply (query-qmp-schema) is well under 1 MiB.
const maxQMPLine = 16 << 20

// errQMPLineTooLong ends a QMP connection whose peer sent an over-long line.
var errQMPLineTooLong = fmt.Errorf("qmp message over %d bytes", maxQMPLine)

// capLines fails a read once the current line has run past max bytes.
type capLines struct {
	r   io.Reader
	max int
	cur int // bytes of the current line so far
}

func (c *capLines) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if i := bytes.LastIndexByte(p[:n], '\n'); i >= 0 {
		c.cur = n - 1 - i
	} else {
		c.cur += n
	}
	if c.cur > c.max {
		return 0, errQMPLineTooLong
	}
	return n, err
}

// DialQMP connects to QEMU's QMP unix socket at path, reads the greeting and
// leaves capability negotiation mode. ctx bounds the whole handshake.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	conn := c.(*net.UnixConn)
	// The greeting is read before the reader goroutine exists; a deadline
	// derived from ctx stops a QEMU that accepted but never speaks (for
	// example while another client holds the monitor).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	r := bufio.NewReader(&capLines{r: conn, max: maxQMPLine})
	line, err := r.ReadBytes('\n')
	stopped := stop()
	if err != nil {
		conn.Close()
		if !stopped {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("read qmp greeting from %s: %w", path, err)
	}
	var greet qmpMessage
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("read qmp greeting from %s: not a QMP greeting: %.80q", path, line)
	}
	_ = conn.SetReadDeadline(time.Time{})

	q := &QMP{
		conn:    conn,
		pending: make(map[string]chan qmpReply),
		events:  make(chan Event, eventBuffer),
		done:    make(chan struct{}),
	}
	go q.readLoop(r)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Events delivers asynchronous events. The channel is closed when the
// connection ends. Events that arrive while it is full are dropped.
func (q *QMP) Events() <-chan Event { return q.events }

// DroppedEvents counts events lost because nobody drained Events.
func (q *QMP) DroppedEvents() uint64 { return q.dropped.Load() }

// Done is closed when the connection has ended.
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close ends the connection and waits for the reader goroutine. Commands in
// flight fail with ErrQMPClosed.
func (q *QMP) Close() error {
	var err error
	q.closeOnce.Do(func() { err = q.conn.Close() })
	<-q.done
	if err != nil {
		return fmt.Errorf("close qmp: %w", err)
	}
	return nil
}

// Execute runs one QMP command. args (may be nil) is marshalled as the
// command's "arguments"; the "return" value is unmarshalled into out when out
// is non-nil. A QEMU-side failure is a *QMPError. When ctx ends first,
// Execute returns ctx's error; QEMU may still carry the command out.
func (q *QMP) Execute(ctx context.Context, cmd string, args any, out any) error {
	return q.execute(ctx, cmd, args, out, -1)
}

// ExecuteWithFD is Execute with fd passed to QEMU alongside the command
// (SCM_RIGHTS), as "getfd" and "add-fd" expect.
func (q *QMP) ExecuteWithFD(ctx context.Context, cmd string, args any, out any, fd int) error {
	if fd < 0 {
		return fmt.Errorf("qmp %s: invalid fd %d", cmd, fd)
	}
	return q.execute(ctx, cmd, args, out, fd)
}

func (q *QMP) execute(ctx context.Context, cmd string, args any, out any, fd int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	q.mu.Lock()
	if q.readErr != nil {
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
	}
	q.nextID++
	id := fmt.Sprintf("w%d", q.nextID)
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
	}()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
	}
	b = append(b, '\n')
	if err := q.write(ctx, b, fd); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}

	select {
	case rep := <-ch:
		if rep.Error != nil {
			return &QMPError{Command: cmd, Class: rep.Error.Class, Desc: rep.Error.Desc}
		}
		if out != nil && rep.Return != nil {
			if err := json.Unmarshal(rep.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-q.done:
		return fmt.Errorf("qmp %s: %w", cmd, q.closedErr())
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (q *QMP) write(ctx context.Context, b []byte, fd int) error {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	// A blocked write (QEMU not reading) must still honour ctx.
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			_ = q.conn.SetWriteDeadline(time.Time{})
		}
	}()
	var err error
	if fd >= 0 {
		// The descriptor rides with the command bytes, so QEMU has it in
		// hand when it parses the command.
		var n int
		n, _, err = q.conn.WriteMsgUnix(b, unix.UnixRights(fd), nil)
		if err == nil && n < len(b) {
			_, err = q.conn.Write(b[n:])
		}
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (q *QMP) closedErr() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.readErr != nil && !errors.Is(q.readErr, net.ErrClosed) {
		return fmt.Errorf("%w: %w", ErrQMPClosed, q.readErr)
	}
	return ErrQMPClosed
}

func (q *QMP) readLoop(r *bufio.Reader) {
	dec := json.NewDecoder(r)
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			select {
			case q.events <- ev:
			default:
				q.dropped.Add(1)
			}
		case m.ID != nil:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				continue // not one of ours
			}
			q.mu.Lock()
			ch := q.pending[id]
			q.mu.Unlock()
			if ch != nil {
				ch <- m.qmpReply // buffered 1; each id is answered once
			}
		}
	}
	q.mu.Lock()
	q.readErr = err
	q.mu.Unlock()
	q.closeOnce.Do(func() { q.conn.Close() })
	close(q.events)
	close(q.done)
}
