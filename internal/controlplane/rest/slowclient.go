package rest

// Slow clients. http.Server's ReadTimeout and WriteTimeout bound a whole
// request, which would cut exec and process streams, file watches, PTY
// WebSockets, proxied ports and large uploads. Instead each request gets
// progress deadlines: its body must keep arriving at a minimum rate while
// the handler waits for it (else 408 request_timeout and the connection is
// closed), and every response write must complete within a bound. A
// stream that is merely quiet, or a handler that is busy elsewhere, is
// never timed out: only time spent blocked on the client counts.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Default progress bounds (Deps.BodyTimeout etc. override them in tests).
const (
	// defaultBodyWindow is how long reads may wait on the client, in
	// total, to receive defaultBodyMinBytes more of the body.
	defaultBodyWindow = 10 * time.Second
	// defaultBodyMinBytes is the minimum progress per window: 1 KiB per
	// 10 s (100 B/s) is far below any real link, and far above a
	// slow-loris trickle.
	defaultBodyMinBytes = 1024
	// defaultWriteTimeout bounds each write of a response to the client.
	defaultWriteTimeout = 30 * time.Second
	// drainTimeout bounds the server's read of a body the handler left
	// unread (it drains it to reuse the connection).
	bodyDrainTimeout = 5 * time.Second
)

// errBodyTooSlow answers a request whose body did not arrive in time.
var errBodyTooSlow = errdefs.New(errdefs.ErrInvalidArgument, "request body arrived too slowly: send at least %d bytes every %v", defaultBodyMinBytes, defaultBodyWindow)

type bodyStateKey struct{}

// bodyState records, for writeError, that the request's body timed out.
type bodyState struct {
	mu       sync.Mutex
	timedOut bool
}

func (b *bodyState) set() {
	b.mu.Lock()
	b.timedOut = true
	b.mu.Unlock()
}

// bodyTimedOut reports whether r's body read failed for slowness: whatever
// error the handler then reports, the answer is 408.
func bodyTimedOut(r *http.Request) bool {
	b, ok := r.Context().Value(bodyStateKey{}).(*bodyState)
	if !ok {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.timedOut
}

// progressLimits are the slow-client bounds.
type progressLimits struct {
	window   time.Duration
	minBytes int
	write    time.Duration
}

func (s *Server) progressLimits() progressLimits {
	l := progressLimits{window: s.deps.BodyWindow, minBytes: s.deps.BodyMinBytes, write: s.deps.WriteTimeout}
	if l.window <= 0 {
		l.window = defaultBodyWindow
	}
	if l.minBytes <= 0 {
		l.minBytes = defaultBodyMinBytes
	}
	if l.write <= 0 {
		l.write = defaultWriteTimeout
	}
	return l
}

// slowClients applies the progress deadlines to every request.
//
// Bodies sent to a sandbox's port (the port proxy) are exempt: they belong
// to the guest's protocol, which may legitimately idle (a gRPC or other
// bidirectional stream), and reach no handler of ours.
func (s *Server) slowClients(next http.Handler) http.Handler {
	lim := s.progressLimits()
	suffix := "." + strings.ToLower(strings.Trim(s.deps.Domain, "."))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		state := &bodyState{}
		var pb *progressBody
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && !isPortProxy(r, suffix) {
			pb = &progressBody{rc: rc, body: r.Body, lim: lim, state: state}
			r.Body = pb
		}
		r = r.WithContext(context.WithValue(r.Context(), bodyStateKey{}, state))
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, timeout: lim.write}
		next.ServeHTTP(dw, r)
		if dw.hijacked {
			return
		}
		// The server flushes buffered output and may drain an unread
		// body after we return: bound both. (Errors: the connection may
		// be gone, or the protocol may not support deadlines; either way
		// there is nothing to bound.)
		_ = rc.SetWriteDeadline(time.Now().Add(lim.write))
		if pb != nil && !pb.done() {
			_ = rc.SetReadDeadline(time.Now().Add(bodyDrainTimeout))
		}
	})
}

// isPortProxy reports whether r is for the port proxy: on a sandbox host
// name, or at /v1/sandboxes/{id}/ports/....
func isPortProxy(r *http.Request, hostSuffix string) bool {
	if _, _, ok := sandboxHost(r.Host, hostSuffix); ok && hostSuffix != "." {
		return true
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/sandboxes/")
	if !ok {
		return false
	}
	_, after, ok := strings.Cut(rest, "/")
	return ok && (after == "ports" || strings.HasPrefix(after, "ports/"))
}

// progressBody is a request body that must deliver lim.minBytes within
// lim.window of time spent waiting in Read; time the handler spends not
// reading does not count. A read deadline is armed only during Read, so a
// handler that is slow to consume (an upload waiting on the guest) is
// never blamed on the client, and a long response stream after the body
// is unaffected.
type progressBody struct {
	rc    *http.ResponseController
	body  io.ReadCloser
	lim   progressLimits
	state *bodyState

	// mu serialises Reads; eof is apart so that done never waits on a
	// Read a handler left blocked.
	mu      sync.Mutex
	waited  time.Duration // time blocked in Read this window
	got     int           // bytes received this window
	noDeadl bool          // the connection does not support deadlines
	eof     atomic.Bool
}

func (p *progressBody) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.eof.Load() {
		return 0, io.EOF
	}
	if p.waited >= p.lim.window {
		return 0, errBodyTooSlow
	}
	start := time.Now()
	armed := false
	if !p.noDeadl {
		if err := p.rc.SetReadDeadline(start.Add(p.lim.window - p.waited)); err != nil {
			p.noDeadl = true
		} else {
			armed = true
		}
	}
	n, err := p.body.Read(b)
	if armed {
		_ = p.rc.SetReadDeadline(time.Time{})
	}
	p.waited += time.Since(start)
	p.got += n
	if p.got >= p.lim.minBytes {
		p.got, p.waited = 0, 0
	}
	switch {
	case err == io.EOF:
		p.eof.Store(true)
	case err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err)):
		p.state.set()
		return n, errBodyTooSlow
	case err == nil && p.waited >= p.lim.window:
		// Bytes trickle in just often enough to dodge the deadline of
		// each read, but not at the minimum rate.
		p.state.set()
		return n, errBodyTooSlow
	}
	return n, err
}

func (p *progressBody) done() bool { return p.eof.Load() }

func (p *progressBody) Close() error { return p.body.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// deadlineWriter arms a write deadline before each write and flush, so a
// client that stops reading cannot hold a handler forever, while a stream
// may stay quiet for as long as it likes between writes.
type deadlineWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	timeout  time.Duration
	noDeadl  bool
	hijacked bool
}

func (d *deadlineWriter) arm() {
	if d.noDeadl {
		return
	}
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		d.noDeadl = true
	}
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.arm()
	return d.ResponseWriter.Write(b)
}

// Flush implements http.Flusher (streams flush after every frame).
func (d *deadlineWriter) Flush() {
	d.arm()
	_ = d.rc.Flush()
}

// FlushError is Flush for http.ResponseController.
func (d *deadlineWriter) FlushError() error {
	d.arm()
	return d.rc.Flush()
}

// Hijack implements http.Hijacker (WebSockets); the server clears the
// connection's deadlines when it is taken over.
func (d *deadlineWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := d.rc.Hijack()
	if err == nil {
		d.hijacked = true
	}
	return c, rw, err
}

// Unwrap lets http.ResponseController reach the connection.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
