package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/buildctx"
)

// tailBytes is how much of a failed step's output its error carries.
const tailBytes = 4096

// runStep runs one step in vm.
func (bd *build) runStep(ctx context.Context, vm VM, n int, s Step) error {
	envd, err := vm.Envd(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Where, err)
	}
	switch {
	case s.Run != nil:
		return bd.runCommand(ctx, envd, n, s)
	case s.Copy != nil:
		return bd.runCopy(ctx, envd, n, s)
	}
	return errdefs.New(errdefs.ErrInvalidArgument, "%s: a step with nothing to do", s.Where)
}

func (bd *build) runCommand(ctx context.Context, envd *envdclient.Client, n int, s Step) error {
	r := s.Run
	if r.Workdir != "" {
		if err := mkdirAll(ctx, envd, r.Workdir); err != nil {
			return &StepError{Where: s.Where, Text: s.Text, Err: err}
		}
	}
	if r.Mkdir {
		return nil
	}
	user := r.User
	if user == "" {
		user = "root"
	}
	args := argv(r.Shell, r.Exec)
	out := bd.output(n, "step")
	res, err := envd.Run(ctx, envdclient.RunRequest{
		Cmd: args[0], Args: args[1:], Env: merged(bd.baseEnv, r.Env), Cwd: r.Workdir, User: user,
		Stdout: out, Stderr: out,
	})
	out.Flush()
	if err != nil {
		return &StepError{Where: s.Where, Text: s.Text, Output: out.Tail(), Err: fmt.Errorf("run: %w", err)}
	}
	if res.ExitCode != 0 || res.Error != "" {
		e := &StepError{Where: s.Where, Text: s.Text, ExitCode: res.ExitCode, Output: out.Tail()}
		if res.Error != "" {
			e.Err = errdefs.New(errdefs.ErrFailedPrecondition, "%s", res.Error)
		}
		return e
	}
	return nil
}

// runCopy streams the sources as a tar into the guest and unpacks it
// there with the image's tar, as root.
func (bd *build) runCopy(ctx context.Context, envd *envdclient.Client, n int, s Step) error {
	c := s.Copy
	fail := func(err error) error { return &StepError{Where: s.Where, Text: s.Text, Err: err} }
	dest := c.Dest
	if !path.IsAbs(dest) {
		wd := c.Workdir
		if wd == "" {
			wd = "/"
		}
		dest = path.Join(wd, dest)
		if strings.HasSuffix(c.Dest, "/") || c.Dest == "." {
			dest += "/"
		}
	}
	if len(c.Sources) == 1 && !strings.HasSuffix(dest, "/") {
		// Docker copies a single file into dest when dest already is a
		// directory in the image; only the guest knows.
		res, err := envd.Run(ctx, envdclient.RunRequest{Cmd: "test", Args: []string{"-d", dest}, User: "root"})
		if err != nil {
			return fail(err)
		}
		if res.ExitCode == 0 {
			dest += "/"
		}
	}
	var chown buildctx.UIDGID
	if c.Chown != "" {
		passwd, err := readGuestFile(ctx, envd, "/etc/passwd")
		if err != nil {
			return fail(err)
		}
		group, err := readGuestFile(ctx, envd, "/etc/group")
		if err != nil {
			return fail(err)
		}
		if chown, err = buildctx.ParseChown(c.Chown, passwd, group); err != nil {
			return fail(err)
		}
	}
	var mode fs.FileMode
	if c.Chmod != "" {
		m, err := strconv.ParseUint(c.Chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return fail(errdefs.New(errdefs.ErrInvalidArgument, "--chmod=%s: not an octal mode", c.Chmod))
		}
		mode = fs.FileMode(m)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(bd.req.Context.WriteTar(ctx, pw, c.Sources, dest, chown, mode))
	}()
	defer pr.Close()
	out := bd.output(n, "step")
	// --no-overwrite-dir: the tar's entries for dest's parents must not
	// change directories the image has (buildctx's package comment).
	res, err := envd.Run(ctx, envdclient.RunRequest{
		Cmd: "tar", Args: []string{"-x", "-p", "--numeric-owner", "--no-overwrite-dir", "--warning=no-timestamp", "-C", "/", "-f", "-"},
		User: "root", Stdin: pr, Stdout: out, Stderr: out,
	})
	out.Flush()
	if err != nil {
		return &StepError{Where: s.Where, Text: s.Text, Output: out.Tail(), Err: fmt.Errorf("copy: %w", err)}
	}
	switch {
	case res.ExitCode == 127 || strings.Contains(res.Error, "executable file not found"):
		return fail(errdefs.New(errdefs.ErrFailedPrecondition, "the image has no tar, which COPY needs"))
	case res.ExitCode != 0 || res.Error != "":
		return &StepError{Where: s.Where, Text: s.Text, ExitCode: res.ExitCode, Output: out.Tail()}
	}
	return nil
}

// mkdirAll creates dir in the guest as root.
func mkdirAll(ctx context.Context, envd *envdclient.Client, dir string) error {
	var out bytes.Buffer
	res, err := envd.Run(ctx, envdclient.RunRequest{Cmd: "mkdir", Args: []string{"-p", "--", dir}, User: "root", Stdout: &out, Stderr: &out})
	if err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if res.ExitCode != 0 {
		return errdefs.New(errdefs.ErrFailedPrecondition, "create %s: %s", dir, strings.TrimSpace(out.String()))
	}
	return nil
}

func readGuestFile(ctx context.Context, envd *envdclient.Client, p string) ([]byte, error) {
	rc, err := envd.Download(ctx, p, envdclient.AsUser("root"))
	if err != nil {
		return nil, fmt.Errorf("read %s in the image: %w", p, err)
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 4<<20))
}

// finishImage checks the work image's filesystem (replaying the journal
// of a guest that stopped mid-write) and shrinks the file to it, so
// sandboxes of any disk size at least the image's can use it.
func finishImage(ctx context.Context, img string) error {
	// e2fsck exits 1 when it fixed something (the journal replay): fine.
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-y", img).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("check the image's filesystem: %w: %s", err, tail(out))
		}
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", "-M", img).CombinedOutput(); err != nil {
		return fmt.Errorf("shrink the image's filesystem: %w: %s", err, tail(out))
	}
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", img).Output()
	if err != nil {
		return fmt.Errorf("read the image's size: %w", err)
	}
	var blocks, size int64
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		case "Block size":
			size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if blocks <= 0 || size <= 0 {
		return errors.New("read the image's size: no block count in dumpe2fs")
	}
	if err := os.Truncate(img, blocks*size); err != nil {
		return fmt.Errorf("shrink the image file: %w", err)
	}
	return nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 1024 {
		s = "..." + s[len(s)-1024:]
	}
	return s
}

// warmStart boots the new version, starts its start command, waits for
// its readiness check and takes the memory snapshot its sandboxes restore.
func (bd *build) warmStart(ctx context.Context, cfg TemplateConfig, st *Start) error {
	f := bd.req.Plan.Final
	bd.event(Event{Phase: "start", Text: "starting " + strings.Join(cfg.Start, " ")})
	vm, err := bd.b.cfg.VMs.StartBuildVM(ctx, VMSpec{
		ID: vmID(bd.req.Build, 1), TeamID: bd.req.TeamID, Template: bd.req.Name,
		VCPUs: orDefault(f.VCPUs, DefaultVCPUs), MemoryMB: orDefault(f.MemoryMB, DefaultMemoryMB), DiskMB: cfg.DiskMB,
		Env: cfg.Env, User: cfg.User, Workdir: cfg.Workdir, Network: bd.req.Network,
	})
	if err != nil {
		return fmt.Errorf("start the template's VM: %w", err)
	}
	defer func() {
		if err := vm.Discard(context.WithoutCancel(ctx)); err != nil {
			bd.b.log.Warn("discard warm-start vm", "build", bd.req.Build, "err", err)
		}
	}()
	envd, err := vm.Envd(ctx)
	if err != nil {
		return err
	}
	out := bd.output(0, "start")
	defer out.Flush()
	args := cfg.Start
	proc, err := envd.Start(ctx, envdclient.RunRequest{
		Cmd: args[0], Args: args[1:], Tag: "wrenn-start", User: st.User, Cwd: st.Workdir, Stdout: out, Stderr: out,
	})
	if err != nil {
		return &StepError{Where: "start", Text: strings.Join(args, " "), Err: err}
	}
	exited := make(chan envdclient.Result, 1)
	go func() {
		res, _ := proc.Wait(context.WithoutCancel(ctx))
		exited <- res
	}()
	// The stream is ours only until the snapshot: the process runs on.
	defer proc.Close()
	if err := bd.waitReady(ctx, vm, envd, st.Ready, exited, out); err != nil {
		return err
	}
	out.Flush()
	bd.event(Event{Phase: "start", Text: "ready; taking the memory snapshot"})
	if err := vm.SnapshotTemplate(ctx, bd.req.Name); err != nil {
		return fmt.Errorf("snapshot the started template: %w", err)
	}
	return nil
}

// waitReady polls the readiness check until it passes, the start command
// exits, or the check's timeout ends.
func (bd *build) waitReady(ctx context.Context, vm VM, envd *envdclient.Client, r Ready, exited <-chan envdclient.Result, out *lineWriter) error {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	what := "the start command to run"
	switch {
	case r.Port != 0:
		what = fmt.Sprintf("port %d to accept connections", r.Port)
	case r.HTTP != "":
		what = r.HTTP + " to answer 200"
	case r.Command != "":
		what = "`" + r.Command + "` to exit 0"
	}
	bd.event(Event{Phase: "start", Text: "waiting up to " + timeout.String() + " for " + what})
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := bd.checkReady(ctx, vm, envd, r)
		if ok {
			return nil
		}
		last = err
		select {
		case res := <-exited:
			out.Flush()
			return &StepError{Where: "start", Text: "the start command", ExitCode: res.ExitCode, Output: out.Tail(),
				Err: errdefs.New(errdefs.ErrFailedPrecondition, "it exited (%s) before it was ready", res.Status)}
		case <-deadline.C:
			out.Flush()
			msg := fmt.Sprintf("not ready after %s waiting for %s", timeout, what)
			if last != nil {
				msg += " (last check: " + last.Error() + ")"
			}
			return &StepError{Where: "start", Text: "the readiness check", Output: out.Tail(), Err: errdefs.New(errdefs.ErrFailedPrecondition, "%s", msg)}
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (bd *build) checkReady(ctx context.Context, vm VM, envd *envdclient.Client, r Ready) (bool, error) {
	switch {
	case r.Port != 0 || r.HTTP != "":
		addr, err := vm.Address(ctx)
		if err != nil {
			return false, err
		}
		if r.Port != 0 {
			c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(r.Port)))
			if err != nil {
				return false, err
			}
			c.Close()
			return true, nil
		}
		u, err := url.Parse(r.HTTP)
		if err != nil {
			return false, err
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		u.Host = net.JoinHostPort(addr, port)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return true, nil
	case r.Command != "":
		res, err := envd.Run(ctx, envdclient.RunRequest{Cmd: "/bin/sh", Args: []string{"-c", r.Command}})
		if err != nil {
			return false, err
		}
		if res.ExitCode != 0 {
			return false, fmt.Errorf("exit code %d", res.ExitCode)
		}
		return true, nil
	}
	return true, nil // no check: started is ready
}

// lineWriter turns process output into log events, a line at a time, and
// keeps the output's tail for errors.
type lineWriter struct {
	bd    *build
	step  int
	phase string
	mu    sync.Mutex
	buf   []byte
	tail  []byte
}

func (bd *build) output(step int, phase string) *lineWriter {
	return &lineWriter{bd: bd, step: step, phase: phase}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, p...)
	if len(w.tail) > 2*tailBytes {
		w.tail = append([]byte(nil), w.tail[len(w.tail)-tailBytes:]...)
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.bd.logf(w.step, w.phase, "%s", strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 4096 { // a line without end: cut it
		w.bd.logf(w.step, w.phase, "%s", string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// Flush emits a last unfinished line.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.bd.logf(w.step, w.phase, "%s", string(w.buf))
		w.buf = w.buf[:0]
	}
}

// Tail is the end of the output.
func (w *lineWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.tail
	if len(t) > tailBytes {
		t = t[len(t)-tailBytes:]
	}
	return strings.TrimSpace(string(t))
}
