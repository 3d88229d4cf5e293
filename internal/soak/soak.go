// Package soak runs Wrenn under a long random mix of sandbox operations
// and reports every unexpected error, the latencies, whether the control
// plane and the agent agree, and whether anything leaked (make soak,
// cmd/wrenn-soak).
//
// It starts a single-node stack of its own (internal/devstack, the
// binaries built from this checkout, a temporary WRENN_DIR sharing the
// machine's kernels and base image read-only) with its own agent name,
// address ranges, VMM uids and PostgreSQL port, so it runs beside a real
// stack or a test stack. Each worker then lives sandbox lives through the
// Go SDK: create, a random sequence of verified steps (plan.go), a kill.
// Every error is unexpected: no step of a life is one a correct system
// may refuse (the mix never asks for something invalid), so there is no
// class of tolerated errors. At the end every sandbox is destroyed
// through the API and internal/leakcheck must find nothing of the agent's
// but its own per-agent resources and templates.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/devstack/stacktest"
	"github.com/wrenn/wrenn/internal/leakcheck"
	"github.com/wrenn/wrenn/internal/testenv"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// Stack names the soak stack's own resources.
type Stack struct {
	AgentName  string
	HostCIDR   string
	VethCIDR   string
	VMMUIDBase uint32
	PGPort     int
}

// DefaultStack is make soak's: nothing another stack on the machine uses
// (tests/e2e, tests/security, bench and make up have their own).
var DefaultStack = Stack{AgentName: "wsoak", HostCIDR: "10.96.0.0/16", VethCIDR: "10.97.0.0/16", VMMUIDBase: 430000, PGPort: 5436}

// Config is one soak run.
type Config struct {
	// Duration is how long workers start new steps; lives in flight then
	// stop at their next step.
	Duration time.Duration
	// Workers run sandbox lives in parallel (1-MaxVMs).
	Workers int
	// Seed makes the plan of each worker's lives repeatable (the timing,
	// and so the interleaving, is not).
	Seed uint64
	// Keep leaves the stack and its directory up at the end.
	Keep bool
	// Images are the machine's kernels and base image (testenv.Images).
	Images testenv.Images
	// Stack names the stack's resources; zero means DefaultStack.
	Stack Stack
	// Template and MemoryMB size each sandbox; zero: "minimal", 256 MiB.
	Template string
	MemoryMB int
	// Mix is the step mix; nil means DefaultMix.
	Mix Mix
	// Command is recorded in the report.
	Command string
	// Out receives progress; nil means os.Stderr.
	Out io.Writer
}

func (c *Config) defaults() error {
	if c.Duration <= 0 {
		return fmt.Errorf("soak: duration %s: want more than zero", c.Duration)
	}
	if c.Workers < 1 || c.Workers > MaxVMs {
		return fmt.Errorf("soak: %d workers: want 1-%d (at most %d VMs run at once)", c.Workers, MaxVMs, MaxVMs)
	}
	if c.Stack == (Stack{}) {
		c.Stack = DefaultStack
	}
	if c.Template == "" {
		c.Template = "minimal"
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 256
	}
	if c.Mix == nil {
		c.Mix = DefaultMix
	}
	if c.Out == nil {
		c.Out = os.Stderr
	}
	return c.Mix.Validate()
}

// Run starts the stack, soaks it and returns the report. The error is for
// a run that could not happen (the stack did not start); what the soak
// found is in the report (Report.OK).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rep := &Report{Command: cfg.Command, Start: time.Now(), Duration: cfg.Duration.String(), Workers: cfg.Workers, Seed: cfg.Seed,
		Machine: Machine{CPUs: runtime.NumCPU(), LoadStart: loadavg()}}
	say := func(format string, args ...any) {
		fmt.Fprintf(cfg.Out, "soak: "+format+"\n", args...)
	}

	ws, err := stacktest.New(ctx, cfg.Images, "wrenn-soak-", "wrenn-cp", "wrenn-agent")
	if err != nil {
		return nil, fmt.Errorf("soak: prepare stack: %w", err)
	}
	say("built binaries in %s; stack in %s", ws.BuildTime.Round(time.Millisecond), ws.Root)
	metricsAddr := stacktest.FreeAddr()
	st, err := devstack.Up(ctx, devstack.Config{
		Dir: ws.Dir, BinDir: ws.Bin, CPAddr: stacktest.FreeAddr(), AgentAddr: stacktest.FreeAddr(),
		PGPort: cfg.Stack.PGPort, Out: prefixed(cfg.Out, "soak: stack: "),
		CPEnv: []string{"WRENN_DOMAIN=wrenn.test", "WRENN_METRICS_ADDR="},
		AgentEnv: []string{"WRENN_AGENT_NAME=" + cfg.Stack.AgentName,
			"WRENN_AGENT_HOST_CIDR=" + cfg.Stack.HostCIDR, "WRENN_AGENT_VETH_CIDR=" + cfg.Stack.VethCIDR,
			"WRENN_AGENT_VMM_UID_BASE=" + strconv.FormatUint(uint64(cfg.Stack.VMMUIDBase), 10),
			"WRENN_AGENT_METRICS_ADDR=" + metricsAddr},
	})
	if err != nil {
		os.RemoveAll(ws.Root)
		return nil, fmt.Errorf("soak: start stack: %w", err)
	}
	defer func() {
		if cfg.Keep {
			say("kept the stack up: %s (API %s, key in %s)", ws.Root, st.URL, filepath.Join(ws.Dir, "admin.json"))
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if _, err := st.DestroySandboxes(cctx); err != nil {
			say("destroy leftovers: %v", err)
		}
		if err := st.Close(cctx); err != nil {
			say("stop stack: %v", err)
		}
		os.RemoveAll(ws.Root)
	}()

	hc := &http.Client{}
	c, err := wrenn.NewClient(wrenn.WithBaseURL(st.URL), wrenn.WithAPIKey(st.Admin.APIKey), wrenn.WithHTTPClient(hc),
		wrenn.WithEnv(func(string) string { return "" }))
	if err != nil {
		return nil, fmt.Errorf("soak: client: %w", err)
	}
	if hosts, err := c.Hosts.List(ctx); err == nil && len(hosts) > 0 && hosts[0].Accelerator != nil {
		rep.Machine.Accel = *hosts[0].Accelerator
	}
	hib, err := hasHibernate(ctx, hc, st.URL)
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	rep.HibernateMode = "cold-pause"
	if hib {
		rep.HibernateMode = "hibernate"
	}

	rec := newRecorder()
	e := &env{c: c, base: st.URL, key: st.Admin.APIKey, hc: hc, rec: rec, vms: semaphore.NewWeighted(MaxVMs),
		hibernate: hib, template: cfg.Template, logDir: filepath.Join(ws.Dir, "logs"), memoryMB: cfg.MemoryMB, mix: cfg.Mix, deadline: time.Now().Add(cfg.Duration)}
	say("%d workers for %s (seed %d, hibernate step: %s)", cfg.Workers, cfg.Duration, cfg.Seed, rep.HibernateMode)

	// Load and progress every 30 s while the workers run.
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			if l, err := load1(); err == nil {
				rep.Machine.Load1 = append(rep.Machine.Load1, l)
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
				var tmp Report
				rec.fill(&tmp)
				n := 0
				for _, s := range tmp.Ops {
					n += s.Count
				}
				say("%s: %d calls, %d unexpected errors, load %s", time.Since(start).Round(time.Second), n, len(tmp.Unexpected), loadavg())
			}
		}
	})
	var workers sync.WaitGroup
	for i := range cfg.Workers {
		w := &worker{env: e, id: i + 1, r: rand.New(rand.NewPCG(cfg.Seed, uint64(i+1)))}
		workers.Go(func() { w.run(ctx) })
	}
	workers.Wait()
	close(stopSampling)
	sampling.Wait()
	say("workers done; comparing the control plane with the agent")

	actx := context.WithoutCancel(ctx)
	rep.Agreement = append(rep.Agreement, agree(actx, c, ws.Dir, metricsAddr, "workers stopped, their last sandboxes alive", time.Minute))
	destroyAll(actx, c, rec)
	rep.Agreement = append(rep.Agreement, agree(actx, c, ws.Dir, metricsAddr, "after destroying every sandbox", 2*time.Minute))

	scope := leakcheck.Scope{Dir: ws.Dir, AgentName: cfg.Stack.AgentName, VMMUIDBase: cfg.Stack.VMMUIDBase}
	rep.Resources, rep.Leaks, err = settleLeaks(actx, scope, time.Minute)
	if err != nil {
		rep.LeakCheckError = err.Error()
	}
	var restarts []string
	for _, d := range []string{devstack.CP, devstack.Agent, devstack.Postgres} {
		if n := st.Restarts(d); n > 0 {
			restarts = append(restarts, fmt.Sprintf("%s restarted %d times", d, n))
			rec.fail(Failure{Time: time.Now(), Step: "stack", Op: "supervise", Error: fmt.Sprintf("%s crashed and was restarted %d times (see %s)", d, n, filepath.Join(ws.Dir, "logs"))})
		}
	}
	rep.StackError = strings.Join(restarts, "; ")
	rec.fill(rep)
	rep.End = time.Now()
	rep.Elapsed = rep.End.Sub(rep.Start).Round(time.Second).String()
	rep.Machine.LoadEnd = loadavg()
	return rep, nil
}

// destroyAll kills every sandbox the control plane lists; each failure is
// unexpected.
func destroyAll(ctx context.Context, c *wrenn.Client, rec *recorder) {
	cp, err := controlPlaneView(ctx, c)
	if err != nil {
		rec.fail(Failure{Time: time.Now(), Step: "destroy-all", Op: "list", Error: err.Error()})
		return
	}
	for id := range cp {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		start := time.Now()
		err := c.Sandboxes.Handle(id).Kill(cctx)
		cancel()
		rec.op("destroy-all", time.Since(start), err)
		if err != nil {
			rec.fail(Failure{Time: time.Now(), SandboxID: id, Step: "destroy-all", Op: "kill", Error: err.Error()})
		}
	}
}

// settleLeaks runs the leak check until it finds no leak or wait runs
// out: a used snapshot's files are deleted in the background, a moment
// after the call that retired it answered.
func settleLeaks(ctx context.Context, s leakcheck.Scope, wait time.Duration) (all, leaks []leakcheck.Resource, err error) {
	deadline := time.Now().Add(wait)
	for {
		all, err = leakcheck.List(ctx, s)
		leaks = leakcheck.Leaks(all, true)
		if (len(leaks) == 0 && err == nil) || time.Now().After(deadline) {
			return all, leaks, err
		}
		time.Sleep(2 * time.Second)
	}
}

// hasHibernate reads the API document the control plane serves: the
// hibernate step uses POST /v1/sandboxes/{id}/hibernate when it is there.
func hasHibernate(ctx context.Context, hc *http.Client, base string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/openapi.yaml", nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("read the API document: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("read the API document: status %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, fmt.Errorf("read the API document: %w", err)
	}
	return strings.Contains(string(b), "/v1/sandboxes/{sandboxID}/hibernate:"), nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func load1() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty /proc/loadavg")
	}
	return strconv.ParseFloat(f[0], 64)
}

// prefixed writes each line to w with prefix.
func prefixed(w io.Writer, prefix string) io.Writer {
	return &prefixWriter{w: w, prefix: prefix}
}

type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
}
