package process

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	pb "github.com/wrenn/wrenn/proto/envd/process"
	"github.com/wrenn/wrenn/proto/envd/process/processconnect"
)

// testTimeout bounds every test's RPCs, so a hang fails instead of stalling.
const testTimeout = 60 * time.Second

type harness struct {
	svc    *Service
	defs   *defaults.Defaults
	client processconnect.ProcessClient
}

// newHarness serves a fresh Service over h2c and returns a Connect client.
// Cleanup closes the service first (killing its processes, ending streams),
// then the server.
func newHarness(t *testing.T) *harness {
	return newHarnessWith(t, harnessOptions{})
}

type harnessOptions struct {
	http1 bool // HTTP/1.1 instead of h2c
	// smallWindow shrinks the client's HTTP/2 receive buffers, so a client
	// that does not read holds the server back after little data.
	smallWindow bool
}

func newHarnessWith(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	defs := defaults.New("", "")
	svc := NewService(slog.New(slog.NewTextHandler(t.Output(), nil)), defs)
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(svc))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(svc.Close)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	if o.http1 {
		tr.Protocols.SetHTTP1(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	if o.smallWindow {
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &harness{
		svc:    svc,
		defs:   defs,
		client: processconnect.NewProcessClient(&http.Client{Transport: tr}, srv.URL),
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// outcome is what a client saw on one output stream.
type outcome struct {
	pid        uint32
	stdout     bytes.Buffer
	stderr     bytes.Buffer
	pty        bytes.Buffer
	chunks     int
	keepalives int
	end        *pb.ProcessEvent_EndEvent
}

// events reads a Start or Connect stream, checking that StartEvent comes
// first and nothing follows EndEvent.
type events struct {
	t   *testing.T
	rcv func() bool
	msg func() *pb.ProcessEvent
	err func() error
	out outcome
}

func startEvents(t *testing.T, s *connect.ServerStreamForClient[pb.StartResponse]) *events {
	t.Helper()
	e := &events{t: t, rcv: s.Receive, msg: func() *pb.ProcessEvent { return s.Msg().GetEvent() }, err: s.Err}
	e.first()
	return e
}

func connectEvents(t *testing.T, s *connect.ServerStreamForClient[pb.ConnectResponse]) *events {
	t.Helper()
	e := &events{t: t, rcv: s.Receive, msg: func() *pb.ProcessEvent { return s.Msg().GetEvent() }, err: s.Err}
	e.first()
	return e
}

func (e *events) first() {
	e.t.Helper()
	if !e.rcv() {
		e.t.Fatalf("stream ended before StartEvent: %v", e.err())
	}
	start := e.msg().GetStart()
	if start == nil || start.GetPid() == 0 {
		e.t.Fatalf("first event = %v, want StartEvent with a pid", e.msg())
	}
	e.out.pid = start.GetPid()
}

// step folds one event into out; false once EndEvent arrived.
func (e *events) step() bool {
	e.t.Helper()
	if e.out.end != nil {
		e.t.Fatal("read past EndEvent")
	}
	if !e.rcv() {
		e.t.Fatalf("stream ended before EndEvent: %v", e.err())
	}
	ev := e.msg()
	switch {
	case ev.GetData() != nil:
		e.out.chunks++
		d := ev.GetData()
		e.out.stdout.Write(d.GetStdout())
		e.out.stderr.Write(d.GetStderr())
		e.out.pty.Write(d.GetPty())
	case ev.GetKeepalive() != nil:
		e.out.keepalives++
	case ev.GetEnd() != nil:
		e.out.end = ev.GetEnd()
		return false
	default:
		e.t.Fatalf("unexpected event %v", ev)
	}
	return true
}

// waitFor reads until pick(out) contains want.
func (e *events) waitFor(want string, pick func(*outcome) *bytes.Buffer) {
	e.t.Helper()
	for !strings.Contains(pick(&e.out).String(), want) {
		if !e.step() {
			e.t.Fatalf("process ended before %q appeared; got %q", want, pick(&e.out).String())
		}
	}
}

// wait reads to EndEvent and checks the stream then closes.
func (e *events) wait() *outcome {
	e.t.Helper()
	for e.step() {
	}
	if e.rcv() {
		e.t.Fatalf("event after EndEvent: %v", e.msg())
	}
	if err := e.err(); err != nil {
		e.t.Fatalf("stream error after EndEvent: %v", err)
	}
	return &e.out
}

func stdout(o *outcome) *bytes.Buffer { return &o.stdout }
func ptyOut(o *outcome) *bytes.Buffer { return &o.pty }

// bash runs a script. E2B's SDKs add -l; tests leave it out because the
// login dotfiles of whoever runs the tests can take seconds (sdkBash keeps it).
func bash(script string) *pb.ProcessConfig {
	return &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-c", script}}
}

// sdkBash is exactly what E2B's SDKs send for commands.run(script).
func sdkBash(script string) *pb.ProcessConfig {
	return &pb.ProcessConfig{Cmd: "/bin/bash", Args: []string{"-l", "-c", script}}
}

func startReq(cfg *pb.ProcessConfig) *connect.Request[pb.StartRequest] {
	return connect.NewRequest(&pb.StartRequest{Process: cfg})
}

func (h *harness) start(t *testing.T, ctx context.Context, req *pb.StartRequest) *events {
	t.Helper()
	s, err := h.client.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return startEvents(t, s)
}

func (h *harness) run(t *testing.T, cfg *pb.ProcessConfig) *outcome {
	t.Helper()
	return h.start(t, testContext(t), &pb.StartRequest{Process: cfg}).wait()
}

func pidSel(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

func tagSel(tag string) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}}
}

func stdinInput(s string) *pb.ProcessInput {
	return &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(s)}}
}

func ptyInput(s string) *pb.ProcessInput {
	return &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(s)}}
}

func basicAuth(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// wantCode checks err is a Connect error with code want.
func wantCode(t *testing.T, err error, want connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

// streamErr returns the error a server stream ends with, reading at most
// the events before it.
func streamErr[T any](s *connect.ServerStreamForClient[T], err error) error {
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

// poll calls cond until it is true or the test times out.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether pid no longer runs (absent, or a zombie nobody reaps).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func closeStream(c io.Closer) { _ = c.Close() }

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(testContext(t))
	t.Cleanup(cancel)
	return ctx, cancel
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(testContext(t), d)
	t.Cleanup(cancel)
	return ctx, cancel
}

// tail shortens long output in failure messages.
func tail(s string) string {
	if len(s) > 200 {
		return "…" + s[len(s)-200:]
	}
	return s
}
