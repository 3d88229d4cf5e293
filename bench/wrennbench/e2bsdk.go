package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/sdkenv"
)

// The E2B compat figure: issue 12's "SDK Sandbox.create → first
// commands.run result, through the compat path, against the same through
// /v1 (same run; the compat layer must add ≤ 5% or ≤ 10 ms at p50)". One
// Python process (e2bsdk.py, in a virtualenv with the pinned SDK) times
// both, interleaved, so that the language, the HTTP stack and the
// machine's drift are common to both and the difference is the compat
// layer: E2B's REST create and the envd data path through wrenn-cp,
// against /v1 create and /v1 exec.

//go:embed e2bsdk.py
var e2bDriver []byte

//go:embed e2bsdk-requirements.txt
var e2bRequirements []byte

// Compat goal: the compat layer adds at most compatMaxFactor of the /v1
// figure or compatMaxAdd, whichever is larger, at p50.
const (
	compatMaxFactor = 0.05
	compatMaxAdd    = 10 * time.Millisecond
)

// e2bSample is one line of e2bsdk.py's output.
type e2bSample struct {
	Variant  string  `json:"variant"`
	I        int     `json:"i"`
	Warmup   bool    `json:"warmup"`
	TotalMS  float64 `json:"total_ms"`
	CreateMS float64 `json:"create_ms"`
	RunMS    float64 `json:"run_ms"`
	Error    string  `json:"error"`
	Info     string  `json:"info"`
	Value    string  `json:"value"`
}

// e2bFigures are the compat figure and its /v1 baseline from Python.
func e2bFigures() (sdk, v1 *Figure) {
	sdk = (&Figure{Key: "create-e2b-sdk", Name: "E2B Python SDK Sandbox.create → first commands.run `true` (compat path)"}).
		against("create-v1-py", 0).also("create-rest")
	v1 = (&Figure{Key: "create-v1-py", Name: "Python POST /v1/sandboxes → first POST /v1 exec `true` (create-e2b-sdk's baseline, same process)"}).
		against("create-rest", 0)
	return sdk, v1
}

// e2bSDK installs the pinned SDK (once per requirements, in the SDK
// cache), runs e2bsdk.py against the stack and fills both figures.
func (b *bench) e2bSDK(ctx context.Context, st *devstack.Stack, sdk, v1 *Figure) {
	both := []*Figure{sdk, v1}
	fail := func(err error) {
		for _, f := range both {
			f.failed(err)
		}
	}
	if b.cfg.SDKCache == "" {
		for _, f := range both {
			f.Result, f.Error = Skip, "--sdk-cache is empty: nowhere to install E2B's SDK"
		}
		return
	}
	if st.Admin.E2BKey == "" {
		fail(errors.New("the stack has no E2B-format key (devstack Admin.E2BKey)"))
		return
	}
	b.progress("stack: installing the pinned E2B Python SDK into %s (once per requirements)", b.cfg.SDKCache)
	t := time.Now()
	python, err := sdkenv.Python(ctx, b.cfg.SDKCache, e2bRequirements)
	if errors.Is(err, sdkenv.ErrNoRuntime) {
		for _, f := range both {
			f.Result, f.Error = Skip, "no Python to run E2B's SDK: "+oneLine(err.Error())
		}
		return
	}
	if err != nil {
		fail(err)
		return
	}
	b.progress("stack: E2B SDK environment ready in %s: %s", time.Since(t).Round(100*time.Millisecond), python)
	script := filepath.Join(b.w.dir, "e2bsdk.py")
	if err := os.WriteFile(script, e2bDriver, 0o644); err != nil {
		fail(err)
		return
	}
	samples, info, failed, err := runE2BDriver(ctx, python, script, b.cfg.E2BSamples, st)
	fillE2BFigures(sdk, v1, samples, info, failed, err)
}

// fillE2BFigures makes the two figures from the driver's samples (warm-ups
// left out), puts the driver's error on the variant that failed (the other
// one stopped with it), and sets the compat goal from the /v1 figure.
func fillE2BFigures(sdk, v1 *Figure, samples []e2bSample, info []string, failed string, err error) {
	byVariant := map[string][]e2bSample{}
	for _, s := range samples {
		if !s.Warmup {
			byVariant[s.Variant] = append(byVariant[s.Variant], s)
		}
	}
	for _, fv := range []struct {
		f                    *Figure
		variant, create, run string
	}{
		{sdk, "e2b", "Sandbox.create returned", "first commands.run(\"true\") answered"},
		{v1, "v1", "POST /v1/sandboxes answered (201)", "first POST /v1 exec `true` answered"},
	} {
		var d []time.Duration
		var ph []phase
		for _, s := range byVariant[fv.variant] {
			d = append(d, msDur(s.TotalMS))
			ph = append(ph, phase{fv.create, msDur(s.CreateMS)}, phase{fv.run, msDur(s.RunMS)})
		}
		f := fv.f
		r := durations(f.Key, f.Name, d)
		r.Group, r.Baseline, r.Compare, r.Notes, r.Breakdown = f.Group, f.Baseline, f.Compare, f.Notes, stepStats(ph)
		switch {
		case err == nil:
		case failed == "" || failed == fv.variant:
			r.Error = err.Error()
		default:
			r.Error = "stopped with the other variant: " + err.Error()
		}
		*f = *r
	}
	if len(info) > 0 {
		v1.note("the same work as create-e2b-sdk through Wrenn's own API, from the same Python process (%s)", strings.Join(info, "; "))
	}
	v1.note("both run `true` as /bin/bash -l -c true (the SDK always does; /v1 exec does for a cmd without args), from template %s", stackTemplate)
	sdk.note("E2B_API_URL = E2B_SANDBOX_URL = the stack's wrenn-cp (plain HTTP, envd reached with the E2b-Sandbox-Id/Port headers), an e2b_ key; e2b %s", pinned(e2bRequirements, "e2b"))
	sdk.note("samples interleaved with create-v1-py in one process (e2b v1, v1 e2b, … after one untimed warm-up of each); sandboxes killed off the clock")
	goal := fmt.Sprintf("≤ create-v1-py + max(%s%%, %s ms)", num(compatMaxFactor*100), num(ms(compatMaxAdd)))
	if sdk.N == 0 || v1.N == 0 || sdk.Error != "" || v1.Error != "" {
		// Judged against a baseline that is missing: an error, not a pass.
		sdk.Goal = goal
		return
	}
	limit := max(v1.P50*(1+compatMaxFactor), v1.P50+ms(compatMaxAdd))
	sdk.Goal, sdk.GoalMax = fmt.Sprintf("%s = %s ms", goal, num(limit)), limit
	diff := sdk.P50 - v1.P50
	sdk.note("compat layer at p50: %s ms (E2B SDK) − %s ms (/v1) = %+.1f ms (%+.1f%%); the goal allows +%s ms",
		num(sdk.P50), num(v1.P50), diff, 100*diff/v1.P50, num(limit-v1.P50))
	if d := pairedDiffs(samples); len(d) > 0 {
		ps := summarize(d)
		sdk.note("paired by round (each round ran both, so drift cancels): median E2B − /v1 %+.1f ms over %d rounds, min %+.1f ms, max %+.1f ms",
			ms(ps.P50), ps.N, ms(ps.Min), ms(ps.Max))
	}
}

// pairedDiffs is, for each timed round that has both variants, the SDK's
// total minus /v1's.
func pairedDiffs(samples []e2bSample) []time.Duration {
	type pair struct{ e2b, v1 *e2bSample }
	rounds := map[int]*pair{}
	var order []int
	for i := range samples {
		s := &samples[i]
		if s.Warmup {
			continue
		}
		p, ok := rounds[s.I]
		if !ok {
			p = &pair{}
			rounds[s.I] = p
			order = append(order, s.I)
		}
		switch s.Variant {
		case "e2b":
			p.e2b = s
		case "v1":
			p.v1 = s
		}
	}
	var d []time.Duration
	for _, i := range order {
		if p := rounds[i]; p.e2b != nil && p.v1 != nil {
			d = append(d, msDur(p.e2b.TotalMS)-msDur(p.v1.TotalMS))
		}
	}
	return d
}

// runE2BDriver runs e2bsdk.py and collects its samples and info lines; the
// error says why it stopped early (the samples before it are kept), and
// failed which variant's sample failed ("" when it was not one sample).
func runE2BDriver(ctx context.Context, python, script string, n int, st *devstack.Stack) (samples []e2bSample, info []string, failed string, _ error) {
	cmd := exec.CommandContext(ctx, python, script, "--n", strconv.Itoa(n), "--template", stackTemplate)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(withoutPrefix(os.Environ(), "E2B_", "WRENN_API_"),
		"E2B_API_URL="+st.URL, "E2B_SANDBOX_URL="+st.URL, "E2B_API_KEY="+st.Admin.E2BKey,
		"WRENN_API_URL="+st.URL, "WRENN_API_KEY="+st.Admin.APIKey,
		"PYTHONUNBUFFERED=1")
	// SIGTERM first: the driver kills what it created on the way out.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stderr tailWriter
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, "", fmt.Errorf("start the E2B SDK driver: %w", err)
	}
	var driverErr error
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s e2bSample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			driverErr = errors.Join(driverErr, fmt.Errorf("E2B SDK driver printed %q: %w", sc.Text(), err))
			continue
		}
		switch {
		case s.Error != "":
			failed = s.Variant
			driverErr = errors.Join(driverErr, fmt.Errorf("E2B SDK driver, %s sample %d: %s", s.Variant, s.I, s.Error))
		case s.Info != "":
			info = append(info, s.Info+": "+s.Value)
		default:
			samples = append(samples, s)
		}
	}
	if err := cmd.Wait(); err != nil && driverErr == nil {
		driverErr = fmt.Errorf("E2B SDK driver: %w: %s", err, stderr.String())
	} else if driverErr != nil && stderr.Len() > 0 {
		driverErr = fmt.Errorf("%w (stderr: %s)", driverErr, stderr.String())
	}
	return samples, info, failed, driverErr
}

// withoutPrefix drops the variables whose names start with one of
// prefixes: the caller's own E2B settings must not steer the driver.
func withoutPrefix(env []string, prefixes ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// pinned is the version requirements pins pkg to ("" when it does not).
func pinned(requirements []byte, pkg string) string {
	for line := range strings.SplitSeq(string(requirements), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), pkg+"=="); ok {
			return v
		}
	}
	return ""
}

// msDur converts the driver's milliseconds back to a duration.
func msDur(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Millisecond))) }

// tailWriter keeps the last 4 KiB written to it (a driver's stderr).
type tailWriter struct{ b bytes.Buffer }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b.Write(p)
	if t.b.Len() > 8<<10 {
		keep := append([]byte(nil), t.b.Bytes()[t.b.Len()-4<<10:]...)
		t.b.Reset()
		t.b.Write(keep)
	}
	return len(p), nil
}

func (t *tailWriter) Len() int { return t.b.Len() }

func (t *tailWriter) String() string { return oneLine(t.b.String()) }
