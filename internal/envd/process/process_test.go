package process

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/wrenn/wrenn/proto/envd/process"
)

func TestStartOutputAndExit(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name       string
		cfg        *pb.ProcessConfig
		wantStdout string
		wantStderr string
		wantCode   int32
		wantExited bool
		wantStatus string
		noStdin    bool
	}{
		{name: "echo as the SDK sends it", cfg: sdkBash("echo hello"), wantStdout: "hello\n", wantExited: true, wantStatus: "exit status 0"},
		{name: "direct exec with args", cfg: &pb.ProcessConfig{Cmd: "printf", Args: []string{"%s-%s", "a b", "c"}}, wantStdout: "a b-c", wantExited: true, wantStatus: "exit status 0"},
		{name: "exit 1", cfg: bash("exit 1"), wantCode: 1, wantExited: true, wantStatus: "exit status 1"},
		{name: "exit 42", cfg: bash("echo partial; exit 42"), wantStdout: "partial\n", wantCode: 42, wantExited: true, wantStatus: "exit status 42"},
		{name: "stderr", cfg: bash("echo oops >&2"), wantStderr: "oops\n", wantExited: true, wantStatus: "exit status 0"},
		{name: "both streams in order each", cfg: bash("for i in 1 2 3; do echo out$i; echo err$i >&2; done"),
			wantStdout: "out1\nout2\nout3\n", wantStderr: "err1\nerr2\nerr3\n", wantExited: true, wantStatus: "exit status 0"},
		{name: "killed by signal", cfg: bash("kill -KILL $$"), wantCode: -1, wantExited: false, wantStatus: "signal: killed"},
		{name: "stdin is /dev/null without stdin", cfg: bash("cat; echo done"), noStdin: true, wantStdout: "done\n", wantExited: true, wantStatus: "exit status 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &pb.StartRequest{Process: tt.cfg}
			if tt.noStdin {
				req.Stdin = new(false)
			}
			out := h.start(t, testContext(t), req).wait()
			if got := out.stdout.String(); got != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", got, tt.wantStdout)
			}
			if got := out.stderr.String(); got != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", got, tt.wantStderr)
			}
			if out.end.GetExitCode() != tt.wantCode || out.end.GetExited() != tt.wantExited || out.end.GetStatus() != tt.wantStatus {
				t.Errorf("end = %v, want exit_code %d exited %v status %q", out.end, tt.wantCode, tt.wantExited, tt.wantStatus)
			}
			if out.end.Error != nil {
				t.Errorf("end.error = %q, want unset", out.end.GetError())
			}
		})
	}
}

// TestConcurrentStarts runs processes side by side on one service; each
// stream must carry only its own process's output.
func TestConcurrentStarts(t *testing.T) {
	h := newHarness(t)
	t.Run("group", func(t *testing.T) {
		for i := range 16 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				want := fmt.Sprintf("proc-%d\n", i)
				out := h.run(t, &pb.ProcessConfig{Cmd: "echo", Args: []string{strings.TrimSpace(want)}})
				if out.stdout.String() != want {
					t.Fatalf("stdout %q, want %q", out.stdout.String(), want)
				}
			})
		}
	})
}

func TestStartOverHTTP1(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{http1: true})
	out := h.run(t, bash("echo one; echo two >&2"))
	if out.stdout.String() != "one\n" || out.stderr.String() != "two\n" || out.end.GetExitCode() != 0 {
		t.Fatalf("got stdout %q stderr %q end %v", out.stdout.String(), out.stderr.String(), out.end)
	}
}

func TestEnvironmentPrecedence(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// env prints exactly what the process got; a shell would add its own.
	tests := []struct {
		name     string
		defaults map[string]string
		request  map[string]string
		pty      bool
		want     map[string]string
		absent   []string
	}{
		{
			name: "base",
			want: map[string]string{
				"PATH": basePath, "HOME": me.HomeDir, "USER": me.Username, "LOGNAME": me.Username,
				"SHELL": loginShell(passwdFile, me.Username),
			},
			absent: []string{"TERM", "GOROOT"},
		},
		{
			name:     "request over defaults over base",
			defaults: map[string]string{"FROM_DEFAULTS": "d", "BOTH": "defaults", "PATH": "/usr/bin:/bin"},
			request:  map[string]string{"BOTH": "request", "ONLY_REQ": "r", "HOME": "/tmp"},
			want:     map[string]string{"FROM_DEFAULTS": "d", "BOTH": "request", "ONLY_REQ": "r", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
		},
		{name: "pty sets TERM", pty: true, want: map[string]string{"TERM": "xterm-256color"}},
		{name: "request overrides TERM", pty: true, request: map[string]string{"TERM": "vt100"}, want: map[string]string{"TERM": "vt100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.defs.MergeEnv(tt.defaults)
			req := &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "env", Envs: tt.request}}
			if tt.pty {
				req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 200, Rows: 24}}
			}
			out := h.start(t, testContext(t), req).wait()
			got := map[string]string{}
			text := out.stdout.String() + strings.ReplaceAll(out.pty.String(), "\r\n", "\n")
			for line := range strings.Lines(text) {
				k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
				got[k] = v
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %q, want unset", k, v)
				}
			}
		})
	}
}

func TestWorkingDirectoryPrecedence(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	reqDir, defDir := t.TempDir(), t.TempDir()
	tests := []struct {
		name     string
		reqCwd   *string
		defaults string
		want     string
	}{
		{name: "request wins over defaults", reqCwd: &reqDir, defaults: defDir, want: reqDir},
		{name: "defaults when request unset", defaults: defDir, want: defDir},
		{name: "defaults when request empty", reqCwd: new(""), defaults: defDir, want: defDir},
		{name: "home when neither", want: me.HomeDir},
		{name: "relative request resolves from home", reqCwd: new("."), defaults: defDir, want: me.HomeDir},
		{name: "tilde is home", reqCwd: new("~"), want: me.HomeDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.defs.SetWorkdir(tt.defaults)
			cfg := &pb.ProcessConfig{Cmd: "pwd", Cwd: tt.reqCwd}
			out := h.run(t, cfg)
			if got := strings.TrimSpace(out.stdout.String()); got != tt.want {
				t.Fatalf("cwd = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestManyLinesCompleteAndOrdered is the fast-producer guarantee: nothing is
// dropped or reordered however fast the process writes.
func TestManyLinesCompleteAndOrdered(t *testing.T) {
	h := newHarness(t)
	const n = 100000
	begin := time.Now()
	out := h.run(t, &pb.ProcessConfig{Cmd: "seq", Args: []string{"1", strconv.Itoa(n)}})
	elapsed := time.Since(begin)
	checkSeq(t, out.stdout.Bytes(), n)
	t.Logf("seq 1 %d: %d bytes in %d chunks in %v", n, out.stdout.Len(), out.chunks, elapsed)
}

func checkSeq(t *testing.T, b []byte, n int) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(b))
	i := 0
	for sc.Scan() {
		i++
		if sc.Text() != strconv.Itoa(i) {
			t.Fatalf("line %d = %q, want %d", i, sc.Text(), i)
		}
	}
	if i != n {
		t.Fatalf("got %d lines, want %d", i, n)
	}
}

// TestSlowClientGetsEverything holds the client back until the producer is
// provably blocked writing to its pipe (backpressure instead of dropping),
// then checks every line still arrives in order.
func TestSlowClientGetsEverything(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{smallWindow: true})
	// ~3.9 MB: more than every buffer between the process and this client
	// holds (pipe 64 KiB, fan-out channels under 2 MiB, HTTP/2 window 64 KiB).
	const n = 500000
	e := h.start(t, testContext(t), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "seq", Args: []string{"1", strconv.Itoa(n)}}})
	wchan := fmt.Sprintf("/proc/%d/wchan", e.out.pid)
	poll(t, "seq to block writing its pipe", func() bool {
		b, err := os.ReadFile(wchan)
		return err == nil && strings.HasSuffix(string(b), "pipe_write")
	})
	out := e.wait()
	checkSeq(t, out.stdout.Bytes(), n)
}

func TestDetachAndReconnect(t *testing.T) {
	t.Run("by tag, output drained while detached", func(t *testing.T) {
		h := newHarness(t)
		// seq writes far more than a pipe holds; it only gets to "read" if
		// envd keeps draining output while nobody is attached.
		ctx1, cancel1 := contextWithCancel(t)
		e := h.start(t, ctx1, &pb.StartRequest{
			Process: bash(`seq 1 300000; read x; echo "got $x"; exit 3`),
			Tag:     new("worker"),
		})
		pid := e.out.pid
		cancel1()

		list, err := h.client.List(testContext(t), connect.NewRequest(&pb.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Msg.GetProcesses()) != 1 || list.Msg.GetProcesses()[0].GetTag() != "worker" {
			t.Fatalf("List after disconnect = %v, want the worker", list.Msg)
		}

		cs, err := h.client.Connect(testContext(t), connect.NewRequest(&pb.ConnectRequest{Process: tagSel("worker")}))
		if err != nil {
			t.Fatal(err)
		}
		defer closeStream(cs)
		ce := connectEvents(t, cs)
		if ce.out.pid != pid {
			t.Fatalf("Connect StartEvent pid = %d, want %d", ce.out.pid, pid)
		}
		if _, err := h.client.SendInput(testContext(t), connect.NewRequest(&pb.SendInputRequest{Process: tagSel("worker"), Input: stdinInput("hello\n")})); err != nil {
			t.Fatal(err)
		}
		out := ce.wait()
		if !strings.HasSuffix(out.stdout.String(), "got hello\n") || out.end.GetExitCode() != 3 {
			t.Fatalf("after reconnect stdout ends %q, end %v", tail(out.stdout.String()), out.end)
		}
	})

	t.Run("by pid, two clients see the same output", func(t *testing.T) {
		h := newHarness(t)
		e := h.start(t, testContext(t), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}})
		cs, err := h.client.Connect(testContext(t), connect.NewRequest(&pb.ConnectRequest{Process: pidSel(e.out.pid)}))
		if err != nil {
			t.Fatal(err)
		}
		defer closeStream(cs)
		ce := connectEvents(t, cs)
		if _, err := h.client.SendInput(testContext(t), connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: stdinInput("ping\n")})); err != nil {
			t.Fatal(err)
		}
		ce.waitFor("ping\n", stdout)
		e.waitFor("ping\n", stdout)
		if _, err := h.client.CloseStdin(testContext(t), connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(e.out.pid)})); err != nil {
			t.Fatal(err)
		}
		for _, out := range []*outcome{e.wait(), ce.wait()} {
			if out.stdout.String() != "ping\n" || out.end.GetExitCode() != 0 || !out.end.GetExited() {
				t.Fatalf("stdout %q end %v, want ping and exit 0", out.stdout.String(), out.end)
			}
		}
	})

	t.Run("finished process is not found", func(t *testing.T) {
		h := newHarness(t)
		out := h.run(t, &pb.ProcessConfig{Cmd: "true"})
		err := streamErr(h.client.Connect(testContext(t), connect.NewRequest(&pb.ConnectRequest{Process: pidSel(out.pid)})))
		wantCode(t, err, connect.CodeNotFound)
	})

	t.Run("tag is free again after the process ends", func(t *testing.T) {
		h := newHarness(t)
		for range 2 {
			out := h.start(t, testContext(t), &pb.StartRequest{Process: bash("true"), Tag: new("again")}).wait()
			if out.end.GetExitCode() != 0 {
				t.Fatalf("end = %v", out.end)
			}
		}
	})
}

func TestList(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t)
	tagged := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat", Envs: map[string]string{"K": "V"}}, Tag: new("t1")})
	plain := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat", Args: []string{"-"}}})

	list, err := h.client.List(ctx, connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[uint32]*pb.ProcessInfo{}
	for _, p := range list.Msg.GetProcesses() {
		byPID[p.GetPid()] = p
	}
	if len(byPID) != 2 {
		t.Fatalf("List = %v, want 2 processes", list.Msg)
	}
	if p := byPID[tagged.out.pid]; p.GetTag() != "t1" || p.GetConfig().GetCmd() != "cat" || p.GetConfig().GetEnvs()["K"] != "V" {
		t.Fatalf("tagged process info = %v", p)
	}
	if p := byPID[plain.out.pid]; p.Tag != nil || !slices.Equal(p.GetConfig().GetArgs(), []string{"-"}) {
		t.Fatalf("untagged process info = %v", p)
	}

	for _, e := range []*events{tagged, plain} {
		if _, err := h.client.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(e.out.pid)})); err != nil {
			t.Fatal(err)
		}
		e.wait()
	}
	list, err = h.client.List(ctx, connect.NewRequest(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.GetProcesses()) != 0 {
		t.Fatalf("List after exit = %v, want empty", list.Msg)
	}
}

func TestPTY(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t)
	e := h.start(t, ctx, &pb.StartRequest{
		Process: bash(`test -t 0 && test -t 1 && echo "tty:$TERM"; stty size; read x; stty size; read y; echo "y=$y"`),
		Pty:     &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}},
	})
	e.waitFor("tty:xterm-256color", ptyOut)
	e.waitFor("24 80", ptyOut)

	if _, err := h.client.Update(ctx, connect.NewRequest(&pb.UpdateRequest{
		Process: pidSel(e.out.pid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 132, Rows: 50}},
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: ptyInput("\n")})); err != nil {
		t.Fatal(err)
	}
	e.waitFor("50 132", ptyOut)
	if _, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: ptyInput("abc\n")})); err != nil {
		t.Fatal(err)
	}
	out := e.wait()
	if !strings.Contains(out.pty.String(), "y=abc") || out.stdout.Len() != 0 || out.stderr.Len() != 0 {
		t.Fatalf("pty %q stdout %q stderr %q", out.pty.String(), out.stdout.String(), out.stderr.String())
	}
	if out.end.GetExitCode() != 0 {
		t.Fatalf("end = %v", out.end)
	}
}

func TestPTYCtrlDEndsCat(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t)
	e := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}, Pty: &pb.PTY{}})
	if _, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: ptyInput("hi\n\x04")})); err != nil {
		t.Fatal(err)
	}
	out := e.wait()
	// "hi" twice: the terminal's echo and cat's copy.
	if strings.Count(out.pty.String(), "hi") != 2 || out.end.GetExitCode() != 0 {
		t.Fatalf("pty %q end %v", out.pty.String(), out.end)
	}
}

func TestInput(t *testing.T) {
	t.Run("SendInput then CloseStdin makes cat exit", func(t *testing.T) {
		h := newHarness(t)
		ctx := testContext(t)
		e := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}})
		for _, s := range []string{"a", "b\n", "c\n"} {
			if _, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: stdinInput(s)})); err != nil {
				t.Fatal(err)
			}
		}
		e.waitFor("ab\nc\n", stdout)
		if _, err := h.client.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(e.out.pid)})); err != nil {
			t.Fatal(err)
		}
		out := e.wait()
		if out.stdout.String() != "ab\nc\n" || out.end.GetExitCode() != 0 {
			t.Fatalf("stdout %q end %v", out.stdout.String(), out.end)
		}
	})

	t.Run("StreamInput to head -n1", func(t *testing.T) {
		h := newHarness(t)
		ctx := testContext(t)
		e := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "head", Args: []string{"-n1"}}, Tag: new("head")})
		in := h.client.StreamInput(ctx)
		msgs := []*pb.StreamInputRequest{
			{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: tagSel("head")}}},
			{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: stdinInput("fir")}}},
			{Event: &pb.StreamInputRequest_Keepalive{Keepalive: &pb.StreamInputRequest_KeepAlive{}}},
			{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: stdinInput("st\nsecond\n")}}},
		}
		for _, m := range msgs {
			if err := in.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := in.CloseAndReceive(); err != nil {
			t.Fatal(err)
		}
		out := e.wait()
		if out.stdout.String() != "first\n" || out.end.GetExitCode() != 0 {
			t.Fatalf("stdout %q end %v", out.stdout.String(), out.end)
		}
	})

	t.Run("StreamInput keeps order over many chunks", func(t *testing.T) {
		h := newHarness(t)
		ctx := testContext(t)
		e := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}})
		in := h.client.StreamInput(ctx)
		if err := in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: pidSel(e.out.pid)}}}); err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		for i := 1; i <= 2000; i++ {
			line := strconv.Itoa(i) + "\n"
			want.WriteString(line)
			if err := in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: stdinInput(line)}}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := in.CloseAndReceive(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(e.out.pid)})); err != nil {
			t.Fatal(err)
		}
		out := e.wait()
		if out.stdout.String() != want.String() {
			t.Fatalf("cat echoed %d bytes, want %d in order", out.stdout.Len(), want.Len())
		}
	})

	t.Run("SendInput gives up when its context ends", func(t *testing.T) {
		h := newHarness(t)
		// sleep never reads: 1 MiB cannot fit in the pipe, so the write
		// blocks until the caller's deadline.
		e := h.start(t, testContext(t), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"60"}}})
		ctx, cancel := contextWithTimeout(t, 300*time.Millisecond)
		defer cancel()
		_, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: pidSel(e.out.pid), Input: stdinInput(strings.Repeat("x", 1<<20))}))
		if err == nil {
			t.Fatal("SendInput to a process that never reads succeeded")
		}
		// The process is still usable afterwards.
		if _, err := h.client.SendSignal(testContext(t), connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(e.out.pid), Signal: pb.Signal_SIGNAL_SIGKILL})); err != nil {
			t.Fatal(err)
		}
		e.wait()
	})
}

func TestSignals(t *testing.T) {
	tests := []struct {
		name       string
		signal     pb.Signal
		wantStatus string
	}{
		{name: "SIGTERM", signal: pb.Signal_SIGNAL_SIGTERM, wantStatus: "signal: terminated"},
		{name: "SIGKILL", signal: pb.Signal_SIGNAL_SIGKILL, wantStatus: "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := testContext(t)
			// The background sleep proves the whole group is signalled.
			e := h.start(t, ctx, &pb.StartRequest{Process: bash(`sleep 60 & echo "child $!"; wait`)})
			e.waitFor("\n", stdout)
			child, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(e.out.stdout.String(), "child ")))
			if err != nil {
				t.Fatalf("parse child pid from %q: %v", e.out.stdout.String(), err)
			}
			if _, err := h.client.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: pidSel(e.out.pid), Signal: tt.signal})); err != nil {
				t.Fatal(err)
			}
			out := e.wait()
			if out.end.GetStatus() != tt.wantStatus || out.end.GetExited() || out.end.GetExitCode() != -1 {
				t.Fatalf("end = %v, want %q", out.end, tt.wantStatus)
			}
			poll(t, "background child to die with its group", func() bool { return gone(child) })
		})
	}
}

func TestKeepAlive(t *testing.T) {
	h := newHarness(t)
	h.svc.KeepAliveInterval = 20 * time.Millisecond
	ctx := testContext(t)
	e := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}})
	for e.out.keepalives < 2 {
		if !e.step() {
			t.Fatal("cat ended on its own")
		}
	}
	if _, err := h.client.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: pidSel(e.out.pid)})); err != nil {
		t.Fatal(err)
	}
	if out := e.wait(); out.end.GetExitCode() != 0 {
		t.Fatalf("end = %v", out.end)
	}
}

// TestBackgroundChildDoesNotDelayEnd: a child that inherited stdout keeps
// the pipe open; the EndEvent must still come soon after the shell exits.
func TestBackgroundChildDoesNotDelayEnd(t *testing.T) {
	h := newHarness(t)
	begin := time.Now()
	out := h.run(t, bash(`sleep 60 & echo $!`))
	elapsed := time.Since(begin)
	child, err := strconv.Atoi(strings.TrimSpace(out.stdout.String()))
	if err != nil {
		t.Fatalf("parse child pid from %q: %v", out.stdout.String(), err)
	}
	_ = syscall.Kill(child, syscall.SIGKILL)
	if out.end.GetExitCode() != 0 || elapsed > 10*time.Second {
		t.Fatalf("end %v after %v", out.end, elapsed)
	}
	t.Logf("end arrived %v after start with a background child holding stdout", elapsed)
}

func TestCloseKillsAndRefuses(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, testContext(t), &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"60"}}})
	h.svc.Close()
	if !gone(int(e.out.pid)) {
		t.Fatalf("process %d still runs after Close", e.out.pid)
	}
	out := e.wait()
	if out.end.GetStatus() != "signal: killed" {
		t.Fatalf("end = %v, want killed", out.end)
	}
	err := streamErr(h.client.Start(testContext(t), startReq(bash("true"))))
	wantCode(t, err, connect.CodeUnavailable)
	h.svc.Close() // twice is fine
}

func TestErrors(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t)
	plain := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}, Tag: new("plain")})
	noStdin := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "sleep", Args: []string{"60"}}, Stdin: new(false)})
	tty := h.start(t, ctx, &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "cat"}, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}})
	const unknownPID = 1<<31 - 1
	missingDir := filepath.Join(t.TempDir(), "missing")
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	start := func(req *pb.StartRequest, auth string) error {
		r := connect.NewRequest(req)
		if auth != "" {
			r.Header().Set("Authorization", auth)
		}
		return streamErr(h.client.Start(ctx, r))
	}
	sendInput := func(sel *pb.ProcessSelector, in *pb.ProcessInput) error {
		_, err := h.client.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{Process: sel, Input: in}))
		return err
	}
	streamInput := func(msgs ...*pb.StreamInputRequest) error {
		s := h.client.StreamInput(ctx)
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				break // the server answered early; the error comes below
			}
		}
		_, err := s.CloseAndReceive()
		return err
	}
	update := func(sel *pb.ProcessSelector, size *pb.PTY_Size) error {
		_, err := h.client.Update(ctx, connect.NewRequest(&pb.UpdateRequest{Process: sel, Pty: &pb.PTY{Size: size}}))
		return err
	}
	signal := func(sel *pb.ProcessSelector, sig pb.Signal) error {
		_, err := h.client.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: sel, Signal: sig}))
		return err
	}
	closeStdin := func(sel *pb.ProcessSelector) error {
		_, err := h.client.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: sel}))
		return err
	}
	streamStart := func(sel *pb.ProcessSelector) *pb.StreamInputRequest {
		return &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: sel}}}
	}
	streamData := func(in *pb.ProcessInput) *pb.StreamInputRequest {
		return &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: in}}}
	}

	tests := []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"Start without process", func() error { return start(&pb.StartRequest{}, "") }, connect.CodeInvalidArgument},
		{"Start empty cmd", func() error { return start(&pb.StartRequest{Process: &pb.ProcessConfig{}}, "") }, connect.CodeInvalidArgument},
		{"Start unknown executable", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "no-such-command-wrenn"}}, "")
		}, connect.CodeNotFound},
		{"Start missing absolute executable", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "/nonexistent/bin/x"}}, "")
		}, connect.CodeNotFound},
		{"Start missing cwd", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &missingDir}}, "")
		}, connect.CodeInvalidArgument},
		{"Start cwd is a file", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &aFile}}, "")
		}, connect.CodeInvalidArgument},
		{"Start unknown user", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}}, basicAuth("no-such-user-wrenn"))
		}, connect.CodeInvalidArgument},
		{"Start malformed Authorization", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}}, "Bearer x")
		}, connect.CodeInvalidArgument},
		{"Start zero PTY size", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}, Pty: &pb.PTY{Size: &pb.PTY_Size{}}}, "")
		}, connect.CodeInvalidArgument},
		{"Start duplicate tag", func() error {
			return start(&pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true"}, Tag: new("plain")}, "")
		}, connect.CodeAlreadyExists},

		{"Connect unknown pid", func() error {
			return streamErr(h.client.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: pidSel(unknownPID)})))
		}, connect.CodeNotFound},
		{"Connect unknown tag", func() error {
			return streamErr(h.client.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: tagSel("nope")})))
		}, connect.CodeNotFound},
		{"Connect without selector", func() error {
			return streamErr(h.client.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{})))
		}, connect.CodeInvalidArgument},
		{"Connect empty tag", func() error {
			return streamErr(h.client.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: tagSel("")})))
		}, connect.CodeInvalidArgument},

		{"SendInput unknown pid", func() error { return sendInput(pidSel(unknownPID), stdinInput("x")) }, connect.CodeNotFound},
		{"SendInput without input", func() error { return sendInput(pidSel(plain.out.pid), nil) }, connect.CodeInvalidArgument},
		{"SendInput stdin to process without stdin", func() error { return sendInput(pidSel(noStdin.out.pid), stdinInput("x")) }, connect.CodeFailedPrecondition},
		{"SendInput pty to process without PTY", func() error { return sendInput(pidSel(plain.out.pid), ptyInput("x")) }, connect.CodeFailedPrecondition},
		{"SendInput stdin to PTY process", func() error { return sendInput(pidSel(tty.out.pid), stdinInput("x")) }, connect.CodeFailedPrecondition},

		{"StreamInput empty", func() error { return streamInput() }, connect.CodeInvalidArgument},
		{"StreamInput data before start", func() error { return streamInput(streamData(stdinInput("x"))) }, connect.CodeInvalidArgument},
		{"StreamInput unknown tag", func() error { return streamInput(streamStart(tagSel("nope"))) }, connect.CodeNotFound},
		{"StreamInput start twice", func() error {
			return streamInput(streamStart(pidSel(plain.out.pid)), streamStart(pidSel(plain.out.pid)))
		}, connect.CodeInvalidArgument},
		{"StreamInput pty to process without PTY", func() error {
			return streamInput(streamStart(pidSel(plain.out.pid)), streamData(ptyInput("x")))
		}, connect.CodeFailedPrecondition},

		{"Update unknown pid", func() error { return update(pidSel(unknownPID), &pb.PTY_Size{Cols: 10, Rows: 10}) }, connect.CodeNotFound},
		{"Update process without PTY", func() error { return update(pidSel(plain.out.pid), &pb.PTY_Size{Cols: 10, Rows: 10}) }, connect.CodeFailedPrecondition},
		{"Update zero size", func() error { return update(pidSel(tty.out.pid), &pb.PTY_Size{Cols: 0, Rows: 10}) }, connect.CodeInvalidArgument},

		{"SendSignal unspecified", func() error { return signal(pidSel(plain.out.pid), pb.Signal_SIGNAL_UNSPECIFIED) }, connect.CodeInvalidArgument},
		{"SendSignal unknown value", func() error { return signal(pidSel(plain.out.pid), pb.Signal(2)) }, connect.CodeInvalidArgument},
		{"SendSignal unknown pid", func() error { return signal(pidSel(unknownPID), pb.Signal_SIGNAL_SIGTERM) }, connect.CodeNotFound},
		{"SendSignal unknown tag", func() error { return signal(tagSel("nope"), pb.Signal_SIGNAL_SIGTERM) }, connect.CodeNotFound},

		{"CloseStdin unknown pid", func() error { return closeStdin(pidSel(unknownPID)) }, connect.CodeNotFound},
		{"CloseStdin on PTY", func() error { return closeStdin(pidSel(tty.out.pid)) }, connect.CodeFailedPrecondition},
		{"CloseStdin without stdin", func() error { return closeStdin(pidSel(noStdin.out.pid)) }, connect.CodeFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), tt.want)
		})
	}

	t.Run("SendInput after CloseStdin", func(t *testing.T) {
		e := h.start(t, ctx, &pb.StartRequest{Process: bash("read x; sleep 60")})
		if err := closeStdin(pidSel(e.out.pid)); err != nil {
			t.Fatal(err)
		}
		if err := closeStdin(pidSel(e.out.pid)); err != nil {
			t.Fatalf("second CloseStdin: %v", err)
		}
		wantCode(t, sendInput(pidSel(e.out.pid), stdinInput("x")), connect.CodeFailedPrecondition)
	})

	// The processes above are still running and usable: errors left no damage.
	if err := sendInput(tagSel("plain"), stdinInput("still here\n")); err != nil {
		t.Fatal(err)
	}
	plain.waitFor("still here\n", stdout)
}

func TestOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starting a process as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("needs a nobody account: %v", err)
	}
	h := newHarness(t)
	r := startReq(bash(`id -u; id -un; echo "$HOME|$USER"; pwd`))
	r.Header().Set("Authorization", basicAuth("nobody"))
	s, err := h.client.Start(testContext(t), r)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStream(s)
	out := startEvents(t, s).wait()
	// nobody's home does not exist, so the process starts in /.
	want := fmt.Sprintf("%s\nnobody\n%s|nobody\n/\n", nobody.Uid, nobody.HomeDir)
	if out.stdout.String() != want {
		t.Fatalf("stdout %q stderr %q, want stdout %q", out.stdout.String(), out.stderr.String(), want)
	}

	// The /init default user applies when the request names nobody.
	h.defs.SetUser("nobody")
	out = h.run(t, &pb.ProcessConfig{Cmd: "id", Args: []string{"-un"}})
	if out.stdout.String() != "nobody\n" {
		t.Fatalf("default user: stdout %q", out.stdout.String())
	}
}

// TestPermissionDenied checks an unprivileged envd refuses to act as anyone
// else. As root it re-runs itself as nobody to get an unprivileged envd.
func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t, "TestPermissionDenied")
		return
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	other := "root"
	if me.Uid == "0" {
		t.Fatal("unreachable: euid is not root")
	}
	h := newHarness(t)
	r := startReq(&pb.ProcessConfig{Cmd: "true"})
	r.Header().Set("Authorization", basicAuth(other))
	wantCode(t, streamErr(h.client.Start(testContext(t), r)), connect.CodePermissionDenied)

	// Acting as itself needs no privilege.
	r = startReq(&pb.ProcessConfig{Cmd: "id", Args: []string{"-un"}})
	r.Header().Set("Authorization", basicAuth(me.Username))
	s, err := h.client.Start(testContext(t), r)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStream(s)
	if out := startEvents(t, s).wait(); out.stdout.String() != me.Username+"\n" {
		t.Fatalf("as self: stdout %q", out.stdout.String())
	}
}

// runAsNobody runs one test of this test binary as the nobody user and
// fails unless it passed there.
func runAsNobody(t *testing.T, name string) {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("needs a nobody account to test an unprivileged envd: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// The go test binary lives in a private build directory; copy it where
	// nobody can run it.
	dir, err := os.MkdirTemp("", "wrenn-process-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "process.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testContext(t), exe, "-test.run", "^"+name+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + basePath, "HOME=" + dir, "TMPDIR=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	// The temp dir must be writable by nobody for t.TempDir and logs.
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+name)) {
		t.Fatalf("%s as nobody: %v\n%s", name, err, out)
	}
	t.Logf("ran %s as nobody (uid %d): passed", name, uid)
}
