package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/pgcluster"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// The control-plane figures run against a real single-node stack
// (internal/devstack: a private PostgreSQL, wrenn-cp and wrenn-agent as
// child processes, the host registered, an admin API key), in a WRENN_DIR
// of the benchmark's own that shares the kernels and the base image. They
// go through the Go SDK (sdk/go), as a user's program would, except the
// list rate, which sends the one raw request it counts (the SDK's List
// follows cursors).

// stackTemplate is the template the REST create figures (Go SDK, E2B SDK
// and /v1 from Python) restore from.
const stackTemplate = "wrennbench-rest"

// rpsWorkers is how many requests the request-rate figures keep in flight.
const rpsWorkers = 4

// stackFigures are the control-plane figures, made up front so that a
// stack that does not start skips every one of them with the reason.
type stackFigures struct {
	create, exec, upload, download, list, execRPS *Figure
	// e2bSDK and v1Py: the E2B SDK through the compat layer and its
	// baseline through /v1, from one Python process (e2bsdk.go).
	e2bSDK, v1Py *Figure
	// template says restFigures made stackTemplate.
	template bool
}

func (s *stackFigures) all() []*Figure {
	return []*Figure{s.create, s.exec, s.upload, s.download, s.list, s.execRPS, s.e2bSDK, s.v1Py}
}

func (b *bench) stack(ctx context.Context) {
	figs := &stackFigures{
		create:   (&Figure{Key: "create-rest", Name: "REST create from template snapshot → first REST exec `true`"}).against("create", 0).also("bare-restore"),
		exec:     (&Figure{Key: "exec-rest", Name: "exec `true` round trip via REST (wrenn-cp → agent → envd)"}).against("exec-envd", 0),
		upload:   (&Figure{Key: "upload-1m-rest", Name: "upload 1 MiB via REST", Bytes: 1 << 20}).against("upload-1m", 0),
		download: (&Figure{Key: "download-1m-rest", Name: "download 1 MiB via REST", Bytes: 1 << 20}).against("download-1m", 0),
		list:     &Figure{Key: "cp-list-rps", Name: fmt.Sprintf("GET /v1/sandboxes (%d rows) requests per second, %d in flight", b.cfg.ListRows, rpsWorkers), Unit: "req/s"},
		execRPS:  (&Figure{Key: "cp-exec-rps", Name: fmt.Sprintf("POST /v1/sandboxes/{id}/exec `true` requests per second, %d in flight", rpsWorkers), Unit: "req/s"}).against("exec-envd-rps", 0),
	}
	figs.e2bSDK, figs.v1Py = e2bFigures()
	defer func() { b.add(GroupCP, figs.all()...) }()
	skipAll := func(why string) {
		for _, f := range figs.all() {
			f.Result, f.Error = Skip, why
		}
	}
	if !b.cfg.Stack {
		skipAll("--stack=false")
		return
	}
	st, dsn, err := b.startStack(ctx)
	if err != nil {
		skipAll("the control-plane stack did not start (wrenn-cp may not serve yet): " + oneLine(err.Error()))
		return
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * rpsWorkers}}
	c, err := wrenn.NewClient(wrenn.WithBaseURL(st.URL), wrenn.WithAPIKey(st.Admin.APIKey), wrenn.WithHTTPClient(hc),
		wrenn.WithEnv(func(string) string { return "" }), wrenn.WithUserAgent("wrennbench"))
	if err != nil {
		skipAll("Go SDK client: " + err.Error())
		return
	}
	b.restFigures(ctx, c, figs)
	if figs.template {
		b.e2bSDK(ctx, st, figs.e2bSDK, figs.v1Py)
	} else {
		figs.e2bSDK.failed(fmt.Errorf("template %s was not made: %s", stackTemplate, figs.create.Error))
		figs.v1Py.failed(fmt.Errorf("template %s was not made: %s", stackTemplate, figs.create.Error))
	}
	b.rateFigures(ctx, &restClient{base: st.URL, key: st.Admin.APIKey, hc: hc}, dsn, st.Admin.TeamID, figs)
}

// startStack builds (or finds) the daemons and starts them; the world's
// cleanup destroys the stack's sandboxes and stops it.
func (b *bench) startStack(ctx context.Context) (*devstack.Stack, string, error) {
	root := filepath.Join(b.w.dir, "stack")
	dir := filepath.Join(root, "wrenn")
	bin := b.cfg.BinDir
	if bin == "" {
		bin = filepath.Join(root, "bin")
	}
	for _, d := range []string{bin, filepath.Join(dir, "images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, "", err
		}
	}
	// PostgreSQL (as postgres) and the VMMs (their own uids) pass through.
	for _, d := range []string{root, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, "", err
		}
	}
	for link, target := range map[string]string{
		filepath.Join(dir, "kernels"):             filepath.Dir(b.w.kernel.Path),
		filepath.Join(dir, "images", b.cfg.Image): filepath.Dir(b.w.rootfs),
	} {
		if err := os.Symlink(target, link); err != nil {
			return nil, "", err
		}
	}
	if b.cfg.BinDir == "" {
		for _, c := range []string{"wrenn-cp", "wrenn-agent"} {
			out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, c), "./cmd/"+c).CombinedOutput()
			if err != nil {
				return nil, "", fmt.Errorf("build %s (run from the repository root): %v: %s", c, err, out)
			}
		}
	}
	pgPort := 5450 + b.w.run%500
	var log bytes.Buffer
	st, err := devstack.Up(ctx, devstack.Config{
		Dir: dir, BinDir: bin, CPAddr: freeAddr(), AgentAddr: freeAddr(), PGPort: pgPort, Out: &log,
		// The request-rate figures measure the server, not its per-key
		// rate limiter (50 requests per second by default).
		// Metrics off: the default port may be taken by a stack beside it.
		// Team quotas off: density and the list's filler rows (counted
		// as hibernated sandboxes) go far past a shared service's share.
		CPEnv: []string{"WRENN_DOMAIN=wrenn.test", "WRENN_RATE_LIMIT=1000000", "WRENN_METRICS_ADDR=",
			"WRENN_TEAM_MAX_SANDBOXES=0", "WRENN_TEAM_MAX_VCPUS=0", "WRENN_TEAM_MAX_MEMORY_MB=0",
			"WRENN_TEAM_MAX_DISK_MB=0", "WRENN_TEAM_MAX_TEMPLATES=0"},
	})
	if err != nil {
		return nil, "", err
	}
	cluster := pgcluster.Cluster{Dir: filepath.Join(dir, "pg"), Port: pgPort}
	dsn := cluster.DSN("wrenn")
	b.w.onClose("control-plane stack", func(ctx context.Context) error {
		// Filler rows have no VM: they go straight from the database, so
		// that destroying the real sandboxes is a few calls, not ListRows.
		ferr := removeFiller(ctx, dsn)
		_, derr := st.DestroySandboxes(ctx)
		return errors.Join(ferr, derr, st.Close(ctx))
	})
	return st, dsn, nil
}

// freeAddr is a loopback address nobody listens on (the daemons bind it
// right after; a race with another process is possible but harmless here:
// the stack then fails to start and its figures are skipped).
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// restFigures, through the Go SDK as a user would: a sandbox from the
// base image, snapshotted as a template; then create-from-template →
// first exec, exec round trips, 1 MiB transfers and the exec rate.
func (b *bench) restFigures(ctx context.Context, c *wrenn.Client, figs *stackFigures) {
	failAll := func(err error) {
		for _, f := range []*Figure{figs.create, figs.exec, figs.upload, figs.download, figs.execRPS} {
			f.failed(err)
		}
	}
	sb, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{Template: b.cfg.Image})
	if err != nil {
		failAll(err)
		return
	}
	if _, err := sb.Snapshot(ctx, stackTemplate); err != nil {
		failAll(err)
		return
	}
	figs.template = true
	b.measure(ctx, figs.create, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		nsb, err := c.Sandboxes.Create(ctx, wrenn.CreateOptions{Template: stackTemplate})
		if err != nil {
			return 0, err
		}
		err = sdkTrue(ctx, nsb)
		d := time.Since(t)
		return d, errors.Join(err, nsb.Kill(context.WithoutCancel(ctx)))
	})
	// Untimed: the warm-up exec on the snapshotted source. A failure is
	// reported and retried once, so that one transient error does not
	// hide the figures after it.
	if err := sdkTrue(ctx, sb); err != nil {
		figs.exec.note("the first exec on the source sandbox after its snapshot failed (untimed, retried once): %v", err)
		if err := sdkTrue(ctx, sb); err != nil {
			for _, f := range []*Figure{figs.exec, figs.upload, figs.download, figs.execRPS} {
				f.failed(err)
			}
			return
		}
	}
	b.measure(ctx, figs.exec, b.cfg.ExecSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		err := sdkTrue(ctx, sb)
		return time.Since(t), err
	})
	const path = "wrennbench-rest-transfer"
	b.measure(ctx, figs.upload, b.cfg.FileSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		_, err := sb.Files.Write(ctx, path, &pattern{left: 1 << 20})
		return time.Since(t), err
	})
	b.measure(ctx, figs.download, b.cfg.FileSamples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		rc, err := sb.Files.Read(ctx, path)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		d := time.Since(t)
		if err == nil && n != 1<<20 {
			err = fmt.Errorf("download via REST: got %d bytes, want %d", n, 1<<20)
		}
		return d, err
	})
	b.rate(ctx, figs.execRPS, func(ctx context.Context) error { return sdkTrue(ctx, sb) })
}

// sdkTrue runs /bin/true through the SDK. Without Args a command is a
// shell line for `bash -l -c`, a login shell that costs hundreds of ms
// under TCG; with Args it is the program itself. There is no way to say
// "this program, no arguments", so /bin/true gets one it ignores.
func sdkTrue(ctx context.Context, sb *wrenn.Sandbox) error {
	res, err := sb.Commands.Run(ctx, "/bin/true", wrenn.RunOptions{Args: []string{"wrennbench"}})
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("exec true via REST: exit %d %s", res.ExitCode, res.Error)
	}
	return nil
}

// rateFigures fills the sandboxes table to ListRows rows (filler rows,
// hibernated, on no host) and measures GET /v1/sandboxes?limit=1000.
func (b *bench) rateFigures(ctx context.Context, c *restClient, dsn, teamID string, figs *stackFigures) {
	if err := fillSandboxes(ctx, dsn, teamID, b.cfg.ListRows); err != nil {
		figs.list.failed(err)
		return
	}
	figs.list.note("%d rows in the team's sandboxes (filler rows written straight into PostgreSQL), page size 1000", b.cfg.ListRows)
	b.rate(ctx, figs.list, func(ctx context.Context) error {
		return c.json(ctx, http.MethodGet, "/v1/sandboxes?limit=1000", nil, http.StatusOK, nil)
	})
}

// rate runs call from rpsWorkers goroutines for RPSDuration and records
// the requests completed in each whole second as one sample.
func (b *bench) rate(ctx context.Context, f *Figure, call func(context.Context) error) {
	seconds := max(1, int(b.cfg.RPSDuration/time.Second))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range rpsWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rctx.Err() == nil {
				t := time.Now()
				err := call(rctx)
				if err == nil {
					latMu.Lock()
					lat = append(lat, time.Since(t))
					latMu.Unlock()
				}
				if err != nil {
					if rctx.Err() == nil {
						once.Do(func() { firstErr = err })
						cancel()
					}
					return
				}
				done.Add(1)
			}
		}()
	}
	var per []float64
	start, last := time.Now(), int64(0)
	for i := 1; i <= seconds && rctx.Err() == nil; i++ {
		t := time.NewTimer(time.Until(start.Add(time.Duration(i) * time.Second)))
		select {
		case <-rctx.Done(): // a request failed, or the run is interrupted
		case <-t.C:
			n := done.Load()
			per = append(per, float64(n-last))
			last = n
		}
		t.Stop()
	}
	cancel()
	wg.Wait()
	r := values(f.Key, f.Name, f.Unit, per)
	r.Group, r.Baseline, r.Compare, r.Notes = f.Group, f.Baseline, f.Compare, f.Notes
	*f = *r
	f.note("closed loop: %d clients each send the next request when the last one answers; one sample per second", rpsWorkers)
	latMu.Lock()
	ls := summarize(lat)
	latMu.Unlock()
	f.note("latency of the %d requests that completed: p50 %s ms, p95 %s ms, max %s ms", ls.N, num(ms(ls.P50)), num(ms(ls.P95)), num(ms(ls.Max)))
	if firstErr != nil {
		f.failed(firstErr)
	}
}

// fillSandboxes inserts filler rows until the team has n sandboxes.
func fillSandboxes(ctx context.Context, dsn, teamID string, n int) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to the stack's database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `
INSERT INTO sandboxes (id, team_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout, metadata)
SELECT 'wrennbench-filler-' || g, $1::uuid, 'minimal', 'hibernated', 1, 512, 2048, 300, 'pause', '{"wrennbench": "filler"}'
FROM generate_series(1, GREATEST(0, $2::int - (SELECT count(*) FROM sandboxes WHERE team_id = $1::uuid))) AS g`, teamID, n)
	if err != nil {
		return fmt.Errorf("insert filler sandboxes: %w", err)
	}
	return nil
}

// removeFiller deletes the rows fillSandboxes inserted.
func removeFiller(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to the stack's database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `DELETE FROM sandboxes WHERE metadata->>'wrennbench' = 'filler'`); err != nil {
		return fmt.Errorf("delete filler sandboxes: %w", err)
	}
	return nil
}

// restClient is a minimal REST client: JSON in and out, API key auth.
type restClient struct {
	base, key string
	hc        *http.Client
}

// json sends in as JSON (nil: no body), wants status, decodes into out.
func (c *restClient) json(ctx context.Context, method, path string, in any, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	var w io.Writer
	var buf bytes.Buffer
	if out != nil {
		w = &buf
	}
	if err := c.stream(ctx, method, path, body, want, w); err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// stream sends body (JSON when it is a *bytes.Reader, else octet-stream),
// wants status and copies the response into out (nil: discarded).
func (c *restClient) stream(ctx context.Context, method, path string, body io.Reader, want int, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	switch body.(type) {
	case nil:
	case *bytes.Reader:
		req.Header.Set("Content-Type", "application/json")
	default:
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", method, strings.Split(path, "?")[0], resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		out = io.Discard
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	return nil
}
