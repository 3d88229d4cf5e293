package envdclient_test

// A hostile envd: a tenant is root in its guest and can replace envd with
// a server that answers with a huge message, an endless stream, a gigantic
// listing, an endless JSON body or huge headers. The client must fail with
// errdefs.ErrResourceExhausted (or a transport error for headers) after
// reading about its cap, never read on. Every test counts the bytes the
// client read off the connection; the connection also fails on its own
// past hostileCeiling so that a client without limits fails the test
// instead of exhausting the machine.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/proto/envd/filesystem"
	"github.com/wrenn/wrenn/proto/envd/process"
)

// hostileCeiling is where the test's connection gives up by itself: far
// past any cap of the client, far below what would hurt the machine.
const hostileCeiling = 256 << 20

var errCeiling = errors.New("test ceiling: the client kept reading")

// countingConn counts what the client reads and fails past the ceiling.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	if c.n.Load() > hostileCeiling {
		return 0, errCeiling
	}
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// hostile serves h as envd and returns a client for it (HTTP/1.1, so the
// test's handler controls every byte) and the byte counter.
func hostile(t *testing.T, h http.HandlerFunc) (*envdclient.Client, *atomic.Int64) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var read atomic.Int64
	var d net.Dialer
	c := envdclient.New(srv.URL, envdclient.WithHTTP1(),
		envdclient.WithDialContext(func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, n: &read}, nil
		}))
	t.Cleanup(c.CloseIdleConnections)
	return c, &read
}

// endless writes chunk until the client goes away.
func endless(w http.ResponseWriter, r *http.Request, chunk []byte) {
	for r.Context().Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// wantExhausted checks that err says the reply was over a limit and that
// the client stopped reading about where the limit is.
func wantExhausted(t *testing.T, err error, read *atomic.Int64, limit int64) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("error = %v; want a resource-exhausted error (reply over a limit)", err)
	}
	if !strings.Contains(err.Error(), "limit") {
		t.Errorf("error %q does not name the limit", err)
	}
	// Slack: buffers of the transport and the socket.
	if got := read.Load(); got > limit+(1<<20) {
		t.Errorf("client read %d bytes; want at most about %d", got, limit)
	}
}

func TestHostileEndlessUnaryReply(t *testing.T) {
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		endless(w, r, make([]byte, 64<<10))
	})
	_, err := c.Filesystem().ListDir(testCtx(t), connect.NewRequest(&filesystem.ListDirRequest{Path: "/"}))
	wantExhausted(t, errdefs.FromConnect(err), read, envdclient.MaxMessageBytes)
}

func TestHostileGiganticListing(t *testing.T) {
	// 200,000 empty entries: 400 KB on the wire (well under the message
	// cap), ~40 MB decoded and far more as JSON.
	const entries = 200_000
	body := make([]byte, 0, 2*entries)
	for range entries {
		body = append(body, 0x0a, 0x00) // field 1 (entries), length 0
	}
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(body)
	})
	_, err := c.Filesystem().ListDir(testCtx(t), connect.NewRequest(&filesystem.ListDirRequest{Path: "/"}))
	err = errdefs.FromConnect(err)
	wantExhausted(t, err, read, int64(len(body)))
	if !strings.Contains(err.Error(), "entries") {
		t.Errorf("error %q does not say the listing had too many entries", err)
	}

	// The process list is bounded the same way.
	c, read = hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(body)
	})
	_, err = c.List(testCtx(t))
	wantExhausted(t, err, read, int64(len(body)))
}

// envelope frames msg as one message of a Connect stream.
func envelope(t *testing.T, msg proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

func TestHostileEndlessStreamMessage(t *testing.T) {
	start := envelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: 7}}}})
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+proto")
		_, _ = w.Write(start)
		// A message that declares almost 4 GiB, then never ends.
		_, _ = w.Write([]byte{0, 0xff, 0xff, 0xff, 0xf0})
		w.(http.Flusher).Flush()
		endless(w, r, make([]byte, 64<<10))
	})
	_, err := c.Run(testCtx(t), envdclient.RunRequest{Cmd: "yes"})
	wantExhausted(t, err, read, envdclient.MaxMessageBytes)
}

func TestHostileOversizedStreamMessage(t *testing.T) {
	// One output chunk over the cap, honestly sized: refused on its prefix.
	start := envelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: 7}}}})
	big := envelope(t, &process.StartResponse{Event: &process.ProcessEvent{
		Event: &process.ProcessEvent_Data{Data: &process.ProcessEvent_DataEvent{
			Output: &process.ProcessEvent_DataEvent_Stdout{Stdout: make([]byte, envdclient.MaxMessageBytes+1)}}}}})
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/connect+proto")
		_, _ = w.Write(start)
		_, _ = w.Write(big)
	})
	_, err := c.Run(testCtx(t), envdclient.RunRequest{Cmd: "yes"})
	wantExhausted(t, err, read, envdclient.MaxMessageBytes)
}

func TestHostileEndlessJSON(t *testing.T) {
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"A":"`))
		endless(w, r, []byte(strings.Repeat("a", 64<<10)))
	})
	_, err := c.Envs(testCtx(t))
	wantExhausted(t, err, read, envdclient.MaxJSONReplyBytes)
	_, err = c.Metrics(testCtx(t))
	wantExhausted(t, err, read, 2*envdclient.MaxJSONReplyBytes)
}

func TestHostileHeaders(t *testing.T) {
	c, read := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 64 {
			w.Header().Set("X-Junk-"+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("j", 16<<10))
		}
		w.WriteHeader(http.StatusNoContent)
	})
	err := c.Health(testCtx(t))
	if err == nil {
		t.Fatal("Health accepted 1 MiB of response headers")
	}
	if got := read.Load(); got > 2*envdclient.MaxResponseHeaderBytes+(64<<10) {
		t.Errorf("client read %d bytes of headers; want about %d at most", got, envdclient.MaxResponseHeaderBytes)
	}
}

// A reply that is not protobuf, or a stream cut off mid-message, is the
// guest's fault: Unavailable, not InvalidArgument (the caller's fault) or
// an untyped error (a 500 upstream).
func TestHostileMalformedReplies(t *testing.T) {
	c, _ := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/process.Process/Start":
			w.Header().Set("Content-Type", "application/connect+proto")
			_, _ = w.Write(envelope(t, &process.StartResponse{Event: &process.ProcessEvent{
				Event: &process.ProcessEvent_Start{Start: &process.ProcessEvent_StartEvent{Pid: 7}}}}))
			_, _ = w.Write([]byte{0, 0, 0, 1, 0, 1, 2}) // declares 256 bytes, sends 2
		default:
			w.Header().Set("Content-Type", "application/proto")
			_, _ = w.Write([]byte{0xff, 0xff, 0xff})
		}
	})
	_, err := c.Filesystem().ListDir(testCtx(t), connect.NewRequest(&filesystem.ListDirRequest{Path: "/"}))
	if err = errdefs.FromConnect(err); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "envd sent a reply that cannot be read") {
		t.Errorf("garbage unary reply: %v; want unavailable, saying envd's reply cannot be read", err)
	}
	_, err = c.Run(testCtx(t), envdclient.RunRequest{Cmd: "yes"})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("stream cut mid-message: %v; want unavailable", err)
	}
}
