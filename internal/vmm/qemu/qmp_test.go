package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeQMP is an in-process QMP server. handle decides the reply to each
// command; it may also push events with send.
type fakeQMP struct {
	t        *testing.T
	path     string
	ln       *net.UnixListener
	greeting string
	handle   func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (ret any, class, desc string)

	mu   sync.Mutex
	conn *net.UnixConn
	wg   sync.WaitGroup
}

const qemuGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`

func newFakeQMP(t *testing.T, handle func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string)) *fakeQMP {
	return newFakeQMPGreeting(t, qemuGreeting, handle)
}

// newFakeQMPGreeting starts a fake that greets with greeting; "" accepts and
// stays silent.
func newFakeQMPGreeting(t *testing.T, greeting string, handle func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string)) *fakeQMP {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{t: t, path: path, ln: ln, handle: handle, greeting: greeting}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeQMP) serve() {
	defer f.wg.Done()
	conn, err := f.ln.AcceptUnix()
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conn = conn
	f.mu.Unlock()
	if f.greeting == "" {
		return // accept and say nothing
	}
	f.send(f.greeting)
	var pending []byte
	for {
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		fd := -1
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil && len(fds) > 0 {
					fd = fds[0]
				}
			}
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := pending[:i]
			pending = pending[i+1:]
			f.answer(line, fd)
			if fd >= 0 {
				unix.Close(fd)
				fd = -1
			}
		}
	}
}

func (f *fakeQMP) answer(line []byte, fd int) {
	var req struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
		ID        json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		f.send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
		return
	}
	var ret any = struct{}{}
	class, desc := "", ""
	if req.Execute != "qmp_capabilities" {
		ret, class, desc = f.handle(f, req.Execute, req.Arguments, fd)
	}
	if ret == nil && class == "" {
		return // never answer
	}
	var out []byte
	if class != "" {
		out, _ = json.Marshal(map[string]any{"error": map[string]string{"class": class, "desc": desc}, "id": req.ID})
	} else {
		out, _ = json.Marshal(map[string]any{"return": ret, "id": req.ID})
	}
	f.send(string(out))
}

func (f *fakeQMP) send(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = f.conn.Write([]byte(line + "\r\n"))
}

func (f *fakeQMP) event(name string, data any) {
	b, _ := json.Marshal(map[string]any{"event": name, "data": data,
		"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 5}})
	f.send(string(b))
}

func dialFake(t *testing.T, f *fakeQMP) *QMP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, f.path)
	if err != nil {
		t.Fatalf("DialQMP: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestQMPExecute(t *testing.T) {
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		switch cmd {
		case "query-status":
			return map[string]any{"status": "running", "running": true}, "", ""
		case "echo":
			var a map[string]string
			_ = json.Unmarshal(args, &a)
			return a, "", ""
		case "migrate":
			return nil, "GenericError", "There's a migration process in progress"
		}
		return nil, "CommandNotFound", "The command " + cmd + " has not been found"
	})
	q := dialFake(t, f)
	ctx := context.Background()

	tests := []struct {
		name      string
		cmd       string
		args      any
		wantClass string
		check     func(t *testing.T, raw json.RawMessage)
	}{
		{name: "decodes return", cmd: "query-status", check: func(t *testing.T, raw json.RawMessage) {
			var st struct {
				Status  string `json:"status"`
				Running bool   `json:"running"`
			}
			if err := json.Unmarshal(raw, &st); err != nil || st.Status != "running" || !st.Running {
				t.Fatalf("got %s (%v)", raw, err)
			}
		}},
		{name: "sends arguments", cmd: "echo", args: map[string]string{"k": "v"}, check: func(t *testing.T, raw json.RawMessage) {
			if string(raw) != `{"k":"v"}` {
				t.Fatalf("echo returned %s", raw)
			}
		}},
		{name: "generic error", cmd: "migrate", wantClass: "GenericError"},
		{name: "unknown command", cmd: "nope", wantClass: "CommandNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			err := q.Execute(ctx, tt.cmd, tt.args, &raw)
			if tt.wantClass != "" {
				var qe *QMPError
				if !errors.As(err, &qe) {
					t.Fatalf("err = %v, want *QMPError", err)
				}
				if qe.Class != tt.wantClass || qe.Command != tt.cmd || qe.Desc == "" {
					t.Fatalf("QMPError = %+v", qe)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, raw)
		})
	}
}

func TestQMPConcurrent(t *testing.T) {
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		var a struct{ N int }
		_ = json.Unmarshal(args, &a)
		return a, "", ""
	})
	q := dialFake(t, f)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			var out struct{ N int }
			if err := q.Execute(context.Background(), "echo", map[string]int{"N": i}, &out); err != nil {
				errs <- err
				return
			}
			if out.N != i {
				errs <- errors.New("reply routed to the wrong caller")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestQMPEvents(t *testing.T) {
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		f.event("STOP", map[string]any{})
		return struct{}{}, "", ""
	})
	q := dialFake(t, f)
	if err := q.Execute(context.Background(), "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-q.Events():
		if ev.Name != "STOP" || ev.Time.Unix() != 1700000000 {
			t.Fatalf("event = %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no STOP event delivered")
	}

	// Flooding events without a reader must not block replies.
	for range eventBuffer + 10 {
		f.event("RTC_CHANGE", map[string]int{"offset": 1})
	}
	if err := q.Execute(context.Background(), "stop", nil, nil); err != nil {
		t.Fatalf("reply blocked behind full event queue: %v", err)
	}
	if q.DroppedEvents() == 0 {
		t.Fatal("overflowing the event queue dropped nothing")
	}
}

func TestQMPContextCancel(t *testing.T) {
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		if cmd == "hang" {
			return nil, "", "" // never answered
		}
		return struct{}{}, "", ""
	})
	q := dialFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Execute(ctx, "hang", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The connection stays usable after an abandoned command.
	if err := q.Execute(context.Background(), "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestQMPServerGone(t *testing.T) {
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		f.mu.Lock()
		f.conn.Close()
		f.mu.Unlock()
		return nil, "", ""
	})
	q := dialFake(t, f)
	err := q.Execute(context.Background(), "quit", nil, nil)
	if !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("err = %v, want ErrQMPClosed", err)
	}
	select {
	case <-q.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server hung up")
	}
	if _, ok := <-q.Events(); ok {
		t.Fatal("Events not closed after the server hung up")
	}
	if err := q.Execute(context.Background(), "stop", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("after close err = %v, want ErrQMPClosed", err)
	}
}

func TestQMPPassesFD(t *testing.T) {
	got := make(chan string, 1)
	f := newFakeQMP(t, func(f *fakeQMP, cmd string, args json.RawMessage, fd int) (any, string, string) {
		if fd < 0 {
			return nil, "GenericError", "No file descriptor supplied via SCM_RIGHTS"
		}
		b := make([]byte, 16)
		n, _ := unix.Pread(fd, b, 0)
		got <- string(b[:n])
		return struct{}{}, "", ""
	})
	q := dialFake(t, f)
	p := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := q.ExecuteWithFD(context.Background(), "getfd", map[string]string{"fdname": "x"}, nil, int(file.Fd())); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "hello" {
		t.Fatalf("server read %q through the passed fd", s)
	}
	// Without an fd the same command fails with QEMU's error, wrapped.
	var qe *QMPError
	if err := q.Execute(context.Background(), "getfd", map[string]string{"fdname": "x"}, nil); !errors.As(err, &qe) {
		t.Fatalf("err = %v, want *QMPError", err)
	}
}

func TestDialQMPErrors(t *testing.T) {
	t.Run("no socket", func(t *testing.T) {
		_, err := DialQMP(context.Background(), filepath.Join(t.TempDir(), "missing.sock"))
		if err == nil {
			t.Fatal("dial of a missing socket succeeded")
		}
	})
	t.Run("silent server honours ctx", func(t *testing.T) {
		f := newFakeQMPGreeting(t, "", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := DialQMP(ctx, f.path)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("not qmp", func(t *testing.T) {
		f := newFakeQMPGreeting(t, `{"hello": 1}`, nil)
		_, err := DialQMP(context.Background(), f.path)
		if err == nil {
			t.Fatal("accepted a non-QMP greeting")
		}
	})
}

// A QEMU taken over by its guest must not make the agent buffer an endless
// QMP message: greeting or reply, the connection fails past maxQMPLine.
func TestQMPLineCap(t *testing.T) {
	t.Run("greeting", func(t *testing.T) {
		// Past the cap by more than one read, so the line's end cannot come
		// in the read that crosses it.
		f := newFakeQMPGreeting(t, `{"QMP": "`+strings.Repeat("x", maxQMPLine+64<<10)+`"}`, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := DialQMP(ctx, f.path); !errors.Is(err, errQMPLineTooLong) {
			t.Fatalf("DialQMP with an over-long greeting: %v; want errQMPLineTooLong", err)
		}
	})
	t.Run("reply", func(t *testing.T) {
		var wrote atomic.Int64
		f := newFakeQMP(t, func(f *fakeQMP, cmd string, _ json.RawMessage, _ int) (any, string, string) {
			chunk := bytes.Repeat([]byte("a"), 64<<10)
			f.mu.Lock()
			_, _ = f.conn.Write([]byte(`{"return": "`)) // a string that never ends
			f.mu.Unlock()
			for wrote.Load() < 256<<20 {
				f.mu.Lock()
				n, err := f.conn.Write(chunk)
				f.mu.Unlock()
				wrote.Add(int64(n))
				if err != nil {
					break
				}
			}
			return nil, "", "" // never answer
		})
		q := dialFake(t, f)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := q.Execute(ctx, "flood", nil, nil)
		if !errors.Is(err, errQMPLineTooLong) {
			t.Fatalf("Execute against an endless reply: %v; want errQMPLineTooLong", err)
		}
	})
}
