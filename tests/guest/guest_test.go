//go:build linux

package guest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/testenv"
)

const accessToken = "guest-test-token"

// TestGuest boots the real image and exercises envd end to end over the
// sandbox network: exec, a large ordered output stream, a 100 MiB file
// round trip, a PTY resize, and access-token enforcement.
func TestGuest(t *testing.T) {
	images := testenv.RequireVM(t)
	accel := testenv.Accel(images.Kernel.Path)
	t.Logf("accelerator %s (%s)", accel.Accel, accel.Reason)
	g := bootGuest(t, images)
	t.Logf("envd ready %s after QEMU start", g.waitReady(t).Round(time.Millisecond))

	ctx := func(t *testing.T, d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		t.Cleanup(cancel)
		return ctx
	}
	c := g.client
	if err := c.Init(ctx(t, time.Minute), envdclient.InitRequest{
		AccessToken: accessToken,
		EnvVars:     map[string]string{"WRENN_GUEST_TEST": "yes"},
	}); err != nil {
		t.Fatalf("init: %v\nconsole:\n%s", err, g.consoleTail())
	}

	t.Run("echo", func(t *testing.T) {
		var out, errOut bytes.Buffer
		res, err := c.Run(ctx(t, time.Minute), envdclient.RunRequest{Cmd: "echo", Args: []string{"hello"}, Stdout: &out, Stderr: &errOut})
		if err != nil {
			t.Fatalf("run echo: %v", err)
		}
		if res.ExitCode != 0 || !res.Exited || out.String() != "hello\n" || errOut.Len() != 0 {
			t.Fatalf("echo hello: result %+v, stdout %q, stderr %q", res, out.String(), errOut.String())
		}
	})

	t.Run("exit code and env", func(t *testing.T) {
		var out bytes.Buffer
		res, err := c.Run(ctx(t, time.Minute), envdclient.RunRequest{Cmd: "sh", Args: []string{"-c", `echo "$WRENN_GUEST_TEST"; exit 7`}, Stdout: &out})
		if err != nil {
			t.Fatalf("run sh: %v", err)
		}
		if res.ExitCode != 7 || out.String() != "yes\n" {
			t.Fatalf("result %+v, stdout %q; want exit 7 and the /init env var", res, out.String())
		}
	})

	t.Run("100k lines in order", func(t *testing.T) {
		const n = 100000
		lc := &lineChecker{}
		res, err := c.Run(ctx(t, 5*time.Minute), envdclient.RunRequest{Cmd: "seq", Args: []string{"1", strconv.Itoa(n)}, Stdout: lc})
		if err != nil {
			t.Fatalf("run seq: %v", err)
		}
		if res.ExitCode != 0 {
			t.Fatalf("seq result %+v", res)
		}
		if err := lc.finish(n); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("100 MiB file round trip", func(t *testing.T) {
		const size = 100 << 20
		const path = "/var/tmp/wrenn-guest-test.bin"
		cctx := ctx(t, 10*time.Minute)
		up := sha256.New()
		start := time.Now()
		if err := c.Upload(cctx, path, io.TeeReader(io.LimitReader(rand.Reader, size), up)); err != nil {
			t.Fatalf("upload: %v", err)
		}
		t.Logf("upload %d MiB in %s", size>>20, time.Since(start).Round(time.Millisecond))
		t.Cleanup(func() {
			_, _ = c.Run(context.Background(), envdclient.RunRequest{Cmd: "rm", Args: []string{"-f", path}})
		})

		start = time.Now()
		rc, err := c.Download(cctx, path)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		down := sha256.New()
		n, err := io.Copy(down, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read download after %d bytes: %v", n, err)
		}
		t.Logf("download %d MiB in %s", n>>20, time.Since(start).Round(time.Millisecond))
		if n != size || !bytes.Equal(up.Sum(nil), down.Sum(nil)) {
			t.Fatalf("downloaded %d bytes sha256 %x, uploaded %d bytes sha256 %x", n, down.Sum(nil), size, up.Sum(nil))
		}
		// The bytes on the guest's disk are the same too, not just a cache.
		var out bytes.Buffer
		if _, err := c.Run(cctx, envdclient.RunRequest{Cmd: "sha256sum", Args: []string{path}, Stdout: &out}); err != nil {
			t.Fatalf("sha256sum in guest: %v", err)
		}
		if got := strings.Fields(out.String()); len(got) == 0 || got[0] != hex.EncodeToString(up.Sum(nil)) {
			t.Fatalf("guest sha256sum %q, want %x", out.String(), up.Sum(nil))
		}
	})

	t.Run("pty resize", func(t *testing.T) {
		cctx := ctx(t, 2*time.Minute)
		term := newWatchBuffer()
		p, err := c.Start(cctx, envdclient.RunRequest{Cmd: "/bin/sh", OpenStdin: true, PTY: &envdclient.PTYSize{Cols: 80, Rows: 24}, Stdout: term})
		if err != nil {
			t.Fatalf("start shell on a pty: %v", err)
		}
		defer p.Close()
		// The marker is assembled by printf so the terminal's echo of the
		// typed command line never contains it.
		ask := func(tag string) string {
			t.Helper()
			cmd := fmt.Sprintf("printf '%%s-size %%s\\n' %s \"$(stty size)\"\n", tag)
			if err := p.SendStdin(cctx, []byte(cmd)); err != nil {
				t.Fatalf("type into pty: %v", err)
			}
			line, err := term.waitLine(cctx, tag+"-size ")
			if err != nil {
				t.Fatalf("no %s-size answer: %v; terminal so far %q", tag, err, term.String())
			}
			return line
		}
		if got := ask("before"); got != "24 80" {
			t.Fatalf("stty size before resize = %q, want \"24 80\"", got)
		}
		if err := p.Resize(cctx, envdclient.PTYSize{Cols: 132, Rows: 43}); err != nil {
			t.Fatalf("resize: %v", err)
		}
		if got := ask("after"); got != "43 132" {
			t.Fatalf("stty size after resize = %q, want \"43 132\"", got)
		}
		if err := p.SendStdin(cctx, []byte("exit\n")); err != nil {
			t.Fatalf("type exit: %v", err)
		}
		if res, err := p.Wait(cctx); err != nil || res.ExitCode != 0 {
			t.Fatalf("shell end: %+v %v", res, err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m, err := c.Metrics(ctx(t, time.Minute))
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		if m.CPUCount != 1 || m.MemTotal < 256<<20 || m.MemTotal > 512<<20 || m.DiskTotal == 0 {
			t.Fatalf("metrics %+v do not describe a 1-vCPU 512 MiB guest", m)
		}
	})

	t.Run("access token enforced", func(t *testing.T) {
		cctx := ctx(t, time.Minute)
		anon := envdclient.New(envdURL, envdclient.WithDialContext(dialIn(g.ns)))
		t.Cleanup(anon.CloseIdleConnections)
		if err := anon.Health(cctx); err != nil {
			t.Fatalf("health must not need the token: %v", err)
		}
		if _, err := anon.Run(cctx, envdclient.RunRequest{Cmd: "true"}); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("process start without token: %v, want unauthenticated", err)
		}
		if _, err := anon.Download(cctx, "/etc/hostname"); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("download without token: %v, want unauthenticated", err)
		}
		wrong := envdclient.New(envdURL, envdclient.WithDialContext(dialIn(g.ns)), envdclient.WithAccessToken("wrong"))
		t.Cleanup(wrong.CloseIdleConnections)
		if _, err := wrong.Envs(cctx); !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("envs with a wrong token: %v, want unauthenticated", err)
		}
		// The raw status, as any HTTP client sees it.
		hc := &http.Client{Transport: &http.Transport{DialContext: dialIn(g.ns)}}
		t.Cleanup(hc.CloseIdleConnections)
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, envdURL+"/envs", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET /envs: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /envs without token: HTTP %d, want 401", resp.StatusCode)
		}
		// And the token still works.
		env, err := c.Envs(cctx)
		if err != nil || env["WRENN_GUEST_TEST"] != "yes" {
			t.Errorf("envs with the token = %v, %v", env, err)
		}
	})
}

// lineChecker checks, as output streams in, that it is exactly the lines
// 1, 2, 3, ... without keeping it all.
type lineChecker struct {
	partial []byte
	next    int
	err     error
}

func (l *lineChecker) Write(p []byte) (int, error) {
	data := append(l.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := string(data[:i])
		data = data[i+1:]
		if l.err == nil {
			if want := strconv.Itoa(l.next + 1); line != want {
				l.err = fmt.Errorf("line %d is %q, want %q", l.next+1, line, want)
			}
		}
		l.next++
	}
	l.partial = append(l.partial[:0], data...)
	return len(p), nil
}

func (l *lineChecker) finish(want int) error {
	switch {
	case l.err != nil:
		return l.err
	case len(l.partial) != 0:
		return fmt.Errorf("output ends with an unterminated line %q", l.partial)
	case l.next != want:
		return fmt.Errorf("got %d lines, want %d", l.next, want)
	}
	return nil
}

// watchBuffer collects terminal output and lets a test wait for a line.
type watchBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{changed: make(chan struct{})} }

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitLine waits for a complete line containing marker and returns what
// follows it.
func (w *watchBuffer) waitLine(ctx context.Context, marker string) (string, error) {
	for {
		w.mu.Lock()
		s, changed := w.b.String(), w.changed
		w.mu.Unlock()
		lines := strings.Split(s, "\n")
		for _, line := range lines[:len(lines)-1] { // the last one is unfinished
			// Anywhere in the line: a shell prompt may precede the output.
			if i := strings.Index(line, marker); i >= 0 {
				return strings.TrimSpace(line[i+len(marker):]), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-changed:
		}
	}
}
