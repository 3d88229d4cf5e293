package soak

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// MaxVMs is the most VMs the soak runs at once (a fork needs one more
// than its parent): the box it was written for has 2 cores shared with
// other work.
const MaxVMs = 4

// Call timeouts: a boot or restore under load takes seconds, anything
// else far less; running past them is an unexpected error.
const (
	bootTimeout = 3 * time.Minute
	callTimeout = time.Minute
	// counterWait bounds how long a surviving counter may take to show
	// it still counts: a few reads, each of which takes seconds on a
	// loaded box under TCG.
	counterWait = 30 * time.Second
	// forkSlotWait is how long a fork waits for a VM slot before it is
	// skipped.
	forkSlotWait = 20 * time.Second
)

// Paths in the guest.
const (
	soakDir     = "/tmp/soak"
	markerPath  = soakDir + "/marker"
	counterPath = soakDir + "/counter"
	counterTag  = "soak-counter"
	// counterScript counts five times a second; each value is written
	// by rename, so a reader never sees a truncated file.
	counterScript = `i=0; while :; do i=$((i+1)); echo $i > ` + counterPath + `.tmp && mv ` + counterPath + `.tmp ` + counterPath + `; sleep 0.2; done`
)

// env is what every worker shares.
type env struct {
	c         *wrenn.Client
	base, key string
	hc        *http.Client
	rec       *recorder
	vms       *semaphore.Weighted
	hibernate bool // the API has POST .../hibernate; else the step is a cold pause
	template  string
	logDir    string // the stack's logs, quoted in failures
	memoryMB  int
	mix       Mix
	deadline  time.Time
}

type worker struct {
	*env
	id int
	r  *rand.Rand
}

// stepError is a failed call or check inside a step.
type stepError struct {
	op  string
	err error
}

func (e *stepError) Error() string { return e.op + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func fail(op string, format string, args ...any) error {
	return &stepError{op: op, err: fmt.Errorf(format, args...)}
}

// sandbox is one life's sandbox and what the worker knows must be in it.
type sandbox struct {
	sb      *wrenn.Sandbox
	marker  []byte
	counter bool // the counter process should be running
}

// run lives sandbox lives until the deadline. A life cut by the deadline
// leaves its sandbox as it is, for the agreement check.
func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil && time.Now().Before(w.deadline) {
		if err := w.vms.Acquire(ctx, 1); err != nil {
			return
		}
		done := w.live(ctx, w.mix.Life(w.r))
		if done {
			w.vms.Release(1)
		}
	}
}

// live runs one life and reports whether its sandbox is gone (or never
// came), so its VM slot is free.
func (w *worker) live(ctx context.Context, l Life) bool {
	s, err := w.create(ctx)
	if err != nil {
		w.report(ctx, s, "create", err)
		if s != nil {
			return w.cleanup(ctx, s)
		}
		return true
	}
	for _, step := range l.Steps {
		if ctx.Err() != nil || !time.Now().Before(w.deadline) {
			w.rec.life("left-at-end")
			return false
		}
		if err := w.step(ctx, s, step); err != nil {
			w.report(ctx, s, step, err)
			return w.cleanup(ctx, s)
		}
	}
	if err := w.end(ctx, s, l.End); err != nil {
		w.report(ctx, s, l.End, err)
		return w.cleanup(ctx, s)
	}
	w.rec.life(l.End)
	return true
}

// report records an unexpected failure with the sandbox's state and
// console tail as the API has them now.
func (w *worker) report(ctx context.Context, s *sandbox, step string, err error) {
	f := Failure{Time: time.Now(), Worker: w.id, Step: step, Op: step, Error: err.Error()}
	var se *stepError
	if errors.As(err, &se) {
		f.Op, f.Error = se.op, se.err.Error()
	}
	if s != nil {
		f.SandboxID = s.sb.ID
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if info, err := s.sb.Info(ictx); err == nil {
			f.State = string(info.State)
		} else {
			f.State = "info failed: " + err.Error()
		}
		if logs, err := s.sb.Logs(ictx, 3000); err == nil {
			f.Console = logs
		}
		f.Logs = logLines(w.logDir, s.sb.ID, 20)
	}
	w.rec.fail(f)
}

// logLines returns the last n lines of the stack's control plane and agent
// logs that mention id.
func logLines(dir, id string, n int) []string {
	if dir == "" {
		return nil
	}
	var out []string
	for _, name := range []string{"cp.log", "agent.log"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		var hits []string
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, id) {
				hits = append(hits, name+": "+strings.TrimRight(line, "\n"))
			}
		}
		out = append(out, hits[max(0, len(hits)-n):]...)
	}
	return out
}

// cleanup destroys a sandbox whose life failed; a failure to do so is
// reported too, and keeps the VM slot taken.
func (w *worker) cleanup(ctx context.Context, s *sandbox) bool {
	w.rec.life("failed")
	if err := w.kill(context.WithoutCancel(ctx), s.sb); err != nil {
		w.report(ctx, s, "cleanup", err)
		return false
	}
	return true
}

// call times f under timeout and records it as kind.
func (w *worker) call(ctx context.Context, kind string, timeout time.Duration, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := f(cctx)
	w.rec.op(kind, time.Since(start), err)
	if err != nil {
		var se *stepError
		if errors.As(err, &se) {
			return err
		}
		return &stepError{op: kind, err: err}
	}
	return nil
}

func (w *worker) create(ctx context.Context) (*sandbox, error) {
	var sb *wrenn.Sandbox
	err := w.call(ctx, "create", bootTimeout, func(ctx context.Context) error {
		var err error
		sb, err = w.c.Sandboxes.Create(ctx, wrenn.CreateOptions{
			Template: w.template, MemoryMB: w.memoryMB, Timeout: 15 * time.Minute,
			Metadata: map[string]string{"soak": "worker-" + strconv.Itoa(w.id)},
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &sandbox{sb: sb}
	if sb.Details.State != api.SandboxStateRunning {
		return s, fail("create", "answered state %q, want running", sb.Details.State)
	}
	s.marker = []byte(fmt.Sprintf("soak marker %d %x\n", w.id, w.r.Uint64()))
	if err := w.write(ctx, sb, markerPath, s.marker); err != nil {
		return s, err
	}
	return s, w.startCounter(ctx, s)
}

func (w *worker) step(ctx context.Context, s *sandbox, step string) error {
	switch step {
	case StepExec:
		return w.exec(ctx, s.sb)
	case StepFile:
		return w.file(ctx, s.sb)
	case StepPause:
		return w.pauseResume(ctx, s)
	case StepFork:
		return w.fork(ctx, s)
	case StepHibernate:
		if w.hibernate {
			return w.hibernateResume(ctx, s)
		}
		return w.coldPauseResume(ctx, s)
	case StepColdPause:
		return w.coldPauseResume(ctx, s)
	}
	return fmt.Errorf("unknown step %q", step)
}

func (w *worker) end(ctx context.Context, s *sandbox, end string) error {
	switch end {
	case EndKillPaused:
		if err := w.pause(ctx, s.sb, "pause", nil, api.SandboxStatePaused); err != nil {
			return err
		}
	case EndKillBusy:
		var h *wrenn.CommandHandle
		if err := w.call(ctx, "exec-start", callTimeout, func(ctx context.Context) error {
			var err error
			h, err = s.sb.Commands.Start(ctx, "sleep 600", wrenn.RunOptions{})
			return err
		}); err != nil {
			return err
		}
		defer h.Disconnect()
	}
	return w.kill(ctx, s.sb)
}

// kill destroys sb and checks that the API no longer has it running: it
// answers not found or stopped.
func (w *worker) kill(ctx context.Context, sb *wrenn.Sandbox) error {
	if err := w.call(ctx, "kill", callTimeout, sb.Kill); err != nil {
		return err
	}
	return w.call(ctx, "info", callTimeout, func(ctx context.Context) error {
		info, err := sb.Info(ctx)
		if wrenn.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if info.State != api.SandboxStateStopped {
			return fail("info", "after kill the sandbox is %q, want stopped or not found", info.State)
		}
		return nil
	})
}

func (w *worker) exec(ctx context.Context, sb *wrenn.Sandbox) error {
	a, b := w.r.IntN(1_000_000), w.r.IntN(1_000_000)
	return w.call(ctx, "exec", callTimeout, func(ctx context.Context) error {
		res, err := sb.Commands.Run(ctx, fmt.Sprintf("echo $((%d + %d)); echo soak >&2", a, b), wrenn.RunOptions{})
		if err != nil {
			return err
		}
		if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != strconv.Itoa(a+b) || strings.TrimSpace(res.Stderr) != "soak" {
			return fail("exec", "echo $((%d + %d)): exit %d, stdout %q, stderr %q; want 0, %d, soak", a, b, res.ExitCode, res.Stdout, res.Stderr, a+b)
		}
		return nil
	})
}

// sh runs a shell line that must exit 0 and returns its standard output.
func (w *worker) sh(ctx context.Context, sb *wrenn.Sandbox, cmd string) (string, error) {
	var out string
	err := w.call(ctx, "exec", callTimeout, func(ctx context.Context) error {
		res, err := sb.Commands.Run(ctx, cmd, wrenn.RunOptions{})
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fail("exec", "%s: exit %d, stderr %q", cmd, res.ExitCode, res.Stderr)
		}
		out = res.Stdout
		return nil
	})
	return out, err
}

func (w *worker) write(ctx context.Context, sb *wrenn.Sandbox, path string, data []byte) error {
	return w.call(ctx, "file-write", callTimeout, func(ctx context.Context) error {
		fi, err := sb.Files.Write(ctx, path, bytes.NewReader(data))
		if err != nil {
			return err
		}
		if fi.Size != nil && *fi.Size != int64(len(data)) {
			return fail("file-write", "%s: answered size %d, wrote %d", path, *fi.Size, len(data))
		}
		return nil
	})
}

func (w *worker) readBack(ctx context.Context, sb *wrenn.Sandbox, path string, want []byte) error {
	return w.call(ctx, "file-read", callTimeout, func(ctx context.Context) error {
		rc, err := sb.Files.Read(ctx, path)
		if err != nil {
			return err
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fail("file-read", "%s: read %d bytes (sha256 %s), wrote %d (sha256 %s)", path, len(got), sum(got), len(want), sum(want))
		}
		return nil
	})
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// file writes random bytes, reads them back, and every other time has
// the guest hash them too.
func (w *worker) file(ctx context.Context, sb *wrenn.Sandbox) error {
	data := make([]byte, 1+w.r.IntN(256<<10))
	for i := range data {
		data[i] = byte(w.r.Uint32())
	}
	path := fmt.Sprintf("%s/f%d", soakDir, w.r.IntN(8))
	if err := w.write(ctx, sb, path, data); err != nil {
		return err
	}
	if err := w.readBack(ctx, sb, path, data); err != nil {
		return err
	}
	if w.r.IntN(2) == 0 {
		out, err := w.sh(ctx, sb, "sha256sum "+path)
		if err != nil {
			return err
		}
		full := sha256.Sum256(data)
		if got, _, _ := strings.Cut(out, " "); got != hex.EncodeToString(full[:]) {
			return fail("exec", "sha256sum %s in the guest: %q, want %x", path, out, full)
		}
	}
	return nil
}

func (w *worker) startCounter(ctx context.Context, s *sandbox) error {
	err := w.call(ctx, "exec-start", callTimeout, func(ctx context.Context) error {
		h, err := s.sb.Commands.Start(ctx, counterScript, wrenn.RunOptions{Tag: counterTag})
		if err != nil {
			return err
		}
		h.Disconnect()
		return nil
	})
	if err != nil {
		return err
	}
	s.counter = true
	_, err = w.counterAbove(ctx, s.sb, 0)
	return err
}

// readCounter reads the counter file; ok is false when it is not there yet.
func (w *worker) readCounter(ctx context.Context, sb *wrenn.Sandbox) (n int, ok bool, err error) {
	out, err := w.sh(ctx, sb, "cat "+counterPath+" 2>/dev/null || true")
	if err != nil {
		return 0, false, err
	}
	out = strings.TrimSpace(out)
	if out == "" {
		return 0, false, nil
	}
	n, err = strconv.Atoi(out)
	if err != nil {
		return 0, false, fail("exec", "counter file holds %q", out)
	}
	return n, true, nil
}

// counterAbove waits until the counter exceeds n: the counting process
// is alive.
func (w *worker) counterAbove(ctx context.Context, sb *wrenn.Sandbox, n int) (int, error) {
	deadline := time.Now().Add(counterWait)
	last := -1
	for {
		c, ok, err := w.readCounter(ctx, sb)
		if err != nil {
			return 0, err
		}
		if ok && c > n {
			return c, nil
		}
		if ok {
			last = c
		}
		if time.Now().After(deadline) {
			return 0, fail("counter", "the background counter did not pass %d within %s (last read %d): its process is gone or frozen", n, counterWait, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// pause pauses sb (body nil: with memory) through the API and checks the
// state it answers.
func (w *worker) pause(ctx context.Context, sb *wrenn.Sandbox, kind string, body any, want api.SandboxState) error {
	return w.call(ctx, kind, callTimeout, func(ctx context.Context) error {
		var got *api.Sandbox
		var err error
		if body == nil {
			got, err = sb.Pause(ctx)
		} else {
			got, err = w.post(ctx, sb.ID, "pause", body)
		}
		if err != nil {
			return err
		}
		if got.State != want {
			return fail(kind, "answered state %q, want %q", got.State, want)
		}
		return nil
	})
}

func (w *worker) resume(ctx context.Context, sb *wrenn.Sandbox, kind string) error {
	return w.call(ctx, kind, bootTimeout, func(ctx context.Context) error {
		got, err := sb.Resume(ctx)
		if err != nil {
			return err
		}
		if got.State != api.SandboxStateRunning {
			return fail(kind, "answered state %q, want running", got.State)
		}
		return nil
	})
}

// survived checks the marker file and, when the counter should run, that
// it still counts past before.
func (w *worker) survived(ctx context.Context, s *sandbox, before int) error {
	if err := w.readBack(ctx, s.sb, markerPath, s.marker); err != nil {
		return err
	}
	if s.counter {
		if _, err := w.counterAbove(ctx, s.sb, before); err != nil {
			return err
		}
	}
	return nil
}

func (w *worker) pauseResume(ctx context.Context, s *sandbox) error {
	before, _, err := w.readCounter(ctx, s.sb)
	if err != nil {
		return err
	}
	if err := w.pause(ctx, s.sb, "pause", nil, api.SandboxStatePaused); err != nil {
		return err
	}
	if err := w.resume(ctx, s.sb, "resume"); err != nil {
		return err
	}
	return w.survived(ctx, s, before)
}

func (w *worker) hibernateResume(ctx context.Context, s *sandbox) error {
	before, _, err := w.readCounter(ctx, s.sb)
	if err != nil {
		return err
	}
	if err := w.call(ctx, "hibernate", bootTimeout, func(ctx context.Context) error {
		got, err := w.post(ctx, s.sb.ID, "hibernate", struct{}{})
		if err != nil {
			return err
		}
		if got.State != api.SandboxStateHibernated {
			return fail("hibernate", "answered state %q, want hibernated", got.State)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := w.resume(ctx, s.sb, "resume-hibernated"); err != nil {
		return err
	}
	return w.survived(ctx, s, before)
}

// coldPauseResume pauses without memory: the disk survives (the marker
// is checked), processes do not (the counter must be gone; it is started
// again).
func (w *worker) coldPauseResume(ctx context.Context, s *sandbox) error {
	if err := w.pause(ctx, s.sb, "pause-cold", map[string]any{"keep_memory": false}, api.SandboxStatePaused); err != nil {
		return err
	}
	if err := w.resume(ctx, s.sb, "resume-cold"); err != nil {
		return err
	}
	if err := w.readBack(ctx, s.sb, markerPath, s.marker); err != nil {
		return err
	}
	if err := w.call(ctx, "exec-list", callTimeout, func(ctx context.Context) error {
		ps, err := s.sb.Commands.List(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Tag != nil && *p.Tag == counterTag {
				return fail("exec-list", "the counter (pid %d) still runs after a cold pause, which promises a cold boot", p.Pid)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// The old counter's last value may still be on disk: remove it, so
	// that the new counter proves itself from zero (comparing it with the
	// old value would wait for it to count that far).
	s.counter = false
	if _, err := w.sh(ctx, s.sb, "rm -f "+counterPath); err != nil {
		return err
	}
	return w.startCounter(ctx, s)
}

// fork forks once when a VM slot is free within forkSlotWait (else the
// step is skipped and counted), checks the fork sees the parent's marker
// and runs commands, then kills it.
func (w *worker) fork(ctx context.Context, s *sandbox) error {
	sctx, cancel := context.WithTimeout(ctx, forkSlotWait)
	err := w.vms.Acquire(sctx, 1)
	cancel()
	if err != nil {
		w.rec.skip("fork: no VM slot free within " + forkSlotWait.String())
		return nil
	}
	defer w.vms.Release(1)
	var forks []*wrenn.Sandbox
	if err := w.call(ctx, "fork", bootTimeout, func(ctx context.Context) error {
		var err error
		forks, err = s.sb.Fork(ctx, 1)
		if err != nil {
			return err
		}
		if len(forks) != 1 {
			return fail("fork", "asked for 1 fork, got %d", len(forks))
		}
		return nil
	}); err != nil {
		return err
	}
	f := forks[0]
	verr := func() error {
		if f.Details.State != api.SandboxStateRunning {
			return fail("fork", "fork %s answered state %q, want running", f.ID, f.Details.State)
		}
		if err := w.readBack(ctx, f, markerPath, s.marker); err != nil {
			return fmt.Errorf("fork %s: %w", f.ID, err)
		}
		return w.exec(ctx, f)
	}()
	kerr := w.kill(ctx, f)
	if kerr != nil {
		kerr = fmt.Errorf("fork %s: %w", f.ID, kerr)
	}
	return errors.Join(verr, kerr)
}

// post calls POST /v1/sandboxes/{id}/{action} with a JSON body, for what
// the Go SDK does not offer (pause without memory, hibernate).
func (e *env) post(ctx context.Context, id, action string, body any) (*api.Sandbox, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/v1/sandboxes/"+id+"/"+action, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s sandbox %s: %w", action, id, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s sandbox %s: read answer: %w", action, id, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
			eb.Error.Code, eb.Error.Message = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(raw))
		}
		return nil, fmt.Errorf("%s sandbox %s: %w", action, id, &wrenn.Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message})
	}
	var out api.Sandbox
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s sandbox %s: decode %q: %w", action, id, raw, err)
	}
	return &out, nil
}
