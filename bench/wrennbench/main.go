// Command wrennbench is Wrenn's performance report. It measures the
// sandbox lifecycle (cold create, create from a template snapshot, pause,
// resume, hibernate, fork, concurrent creates), exec and file transfer
// round trips, density, and the control plane's request rates, beside
// baselines taken in the same run on the same kernel and image (bare
// QEMU boot and restore, gVisor's `runsc do`), and writes
// bench/results/<date>-<host>.json and docs/benchmarks.md with plots:
//
//	sudo go run ./bench/wrennbench [--quick] [--only REGEXP] [--cpuprofile f] [--trace f]
//
// Every figure is one measurement in measurements(); --only picks some.
// It must run as root. Everything it makes on the host (sandboxes, the
// template, network namespaces, nftables table, cgroups, memory files, a
// control-plane stack) is named after its process id and removed at the
// end, also on failure and on ctrl-C. A figure that misses its goal is a
// MISS, one that cannot be taken here a SKIP with its reason; the exit
// status is 1 only when a figure failed or cleanup left something behind.
// See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is the benchmark's configuration, from flags only.
type Config struct {
	Quick bool
	// OutDir receives <date>-<host>.json; ReportPath the Markdown report,
	// with its plots in a directory of the same name without ".md".
	OutDir, ReportPath string
	// Analysis is a hand-written Markdown file about the profiles, copied
	// into the report ("" or missing: no such section).
	Analysis string
	// Render, when set, is a JSON report to render again as Markdown
	// (after editing the analysis, say) instead of measuring.
	Render string
	Only   *regexp.Regexp
	// Samples is N for the per-operation figures, BootSamples for cold
	// boots (bare and Wrenn).
	Samples, BootSamples int
	// Forks sandboxes per Fork call, ForkSamples calls (also of fork ×1).
	Forks, ForkSamples int
	// Concurrency is the counts of concurrent creates, each taken
	// ConcurrentSamples times.
	Concurrency       []int
	ConcurrentSamples int
	ExecSamples       int
	// E2BSamples is rounds of the E2B SDK figure and its /v1 baseline
	// (one of each per round): a 5% goal needs more than Samples.
	E2BSamples int
	// FileSamples transfers of 1 MiB, LargeSamples of LargeFileMB.
	FileSamples, LargeSamples, LargeFileMB int
	// DensityBudgetMB of Σ VMM PSS stops the density figure, or
	// DensityMax sandboxes, whichever comes first.
	DensityBudgetMB, DensityMax int
	// RPSDuration is how long each request-rate figure runs; ListRows the
	// sandbox rows GET /v1/sandboxes lists.
	RPSDuration time.Duration
	ListRows    int
	// Stack starts PostgreSQL + wrenn-cp + wrenn-agent for the control
	// plane figures, from binaries in BinDir (built when empty).
	Stack  bool
	BinDir string
	// SDKCache holds the pinned E2B SDK environments (internal/sdkenv),
	// kept between runs.
	SDKCache string

	Accel                   string
	CPUProfile, Trace       string
	LogFile                 string
	ImagesDir               string
	Image                   string
	MemoryMB, VCPUs, DiskMB int
	ReadyTimeout            time.Duration
	// Settle is how long idle sandboxes sit before their memory is read.
	Settle time.Duration
	// Net picks the benchmark's address ranges (10.200+2n/16, 10.201+2n/16)
	// and network prefix; -1 derives it from the process id.
	Net int
}

// modeCounts are the sample counts of a mode; flags override them.
func modeCounts(quick bool) Config {
	if quick {
		return Config{Samples: 3, BootSamples: 1, Forks: 3, ForkSamples: 1, Concurrency: []int{1, 4}, ConcurrentSamples: 1,
			ExecSamples: 10, E2BSamples: 5, FileSamples: 2, LargeSamples: 1, DensityMax: 2, RPSDuration: 2 * time.Second}
	}
	return Config{Samples: 10, BootSamples: 3, Forks: 10, ForkSamples: 3, Concurrency: []int{1, 5, 20}, ConcurrentSamples: 2,
		ExecSamples: 50, E2BSamples: 30, FileSamples: 5, LargeSamples: 3, DensityMax: 64, RPSDuration: 10 * time.Second}
}

// parseFlags builds the Config from args (without the program name).
func parseFlags(args []string, out io.Writer) (Config, error) {
	var c Config
	var only, concurrency string
	fs := flag.NewFlagSet("wrennbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&c.Quick, "quick", false, "fewer samples and smaller counts (under 3 minutes; what CI runs)")
	fs.StringVar(&c.OutDir, "out-dir", "bench/results", "directory for the JSON report <date>-<host>.json (empty: none)")
	fs.StringVar(&c.ReportPath, "report", "docs/benchmarks.md", "Markdown report; plots go to the same path without .md (empty: none)")
	fs.StringVar(&c.Analysis, "analysis", "bench/analysis.md", "hand-written notes on the profiles, copied into the report")
	fs.StringVar(&c.Render, "render", "", "measure nothing: render this JSON report (bench/results/…) to --report again")
	fs.StringVar(&only, "only", "", "run only the measurements whose name matches this regexp (-h lists them)")
	fs.IntVar(&c.Samples, "samples", 0, "samples per lifecycle figure (default 10, quick 3)")
	fs.IntVar(&c.BootSamples, "boot-samples", 0, "cold boots, bare and Wrenn (default 3, quick 1)")
	fs.IntVar(&c.Forks, "forks", 0, "sandboxes per fork (default 10, quick 3)")
	fs.IntVar(&c.ForkSamples, "fork-samples", 0, "fork samples (default 3, quick 1)")
	fs.StringVar(&concurrency, "concurrent", "", "comma-separated concurrent-create counts (default 1,5,20, quick 1,4)")
	fs.IntVar(&c.ConcurrentSamples, "concurrent-samples", 0, "samples per concurrent count (default 2, quick 1)")
	fs.IntVar(&c.ExecSamples, "exec-samples", 0, "exec round trips per path (default 50, quick 10)")
	fs.IntVar(&c.E2BSamples, "e2b-samples", 0, "rounds of the E2B SDK figure, each one SDK and one /v1 create → first command (default 30, quick 5)")
	fs.IntVar(&c.FileSamples, "file-samples", 0, "1 MiB transfers each way (default 5, quick 2)")
	fs.IntVar(&c.LargeSamples, "large-samples", 0, "large transfers each way (default 3, quick 1)")
	fs.IntVar(&c.LargeFileMB, "large-file-mb", 100, "size of the large transfer in MiB")
	fs.IntVar(&c.DensityBudgetMB, "density-budget-mb", 8192, "density: start idle sandboxes until their Σ PSS reaches this")
	fs.IntVar(&c.DensityMax, "density-max", 0, "density: at most this many sandboxes (default 64, quick 2)")
	fs.DurationVar(&c.RPSDuration, "rps-duration", 0, "duration of each request-rate figure (default 10s, quick 2s)")
	fs.IntVar(&c.ListRows, "list-rows", 1000, "sandbox rows behind GET /v1/sandboxes")
	fs.BoolVar(&c.Stack, "stack", true, "start PostgreSQL, wrenn-cp and wrenn-agent for the control-plane figures")
	fs.StringVar(&c.BinDir, "bin-dir", "", "directory with wrenn-cp and wrenn-agent (default: build them)")
	fs.StringVar(&c.SDKCache, "sdk-cache", "/var/cache/wrenn/sdkenv", "cache of the pinned E2B SDK environments (installed on first use)")
	fs.StringVar(&c.Accel, "accel", "auto", "accelerator: auto (probe, as the agent does), tcg or kvm")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the benchmark process (the in-process agent) to this file")
	fs.StringVar(&c.Trace, "trace", "", "write an execution trace of the benchmark process to this file")
	fs.StringVar(&c.LogFile, "log", "", "write the agent's and driver's debug log (JSON) to this file")
	fs.StringVar(&c.ImagesDir, "images-dir", "/var/lib/wrenn", "WRENN_DIR holding kernels/ and images/")
	fs.StringVar(&c.Image, "image", "minimal", "image (template) to boot")
	fs.IntVar(&c.MemoryMB, "memory-mb", 512, "guest RAM in MiB")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 90*time.Second, "bound on one guest becoming ready")
	fs.IntVar(&c.Net, "net", -1, "address block 0-24 (10.200+2n.0.0/16 and the next /16); default: the process id mod 25")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "idle time before memory is read")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: wrennbench [flags]   (as root, from the repository root)")
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nmeasurements (for --only):")
		for _, m := range measurements() {
			fmt.Fprintf(fs.Output(), "  %-14s %s\n", m.name, m.about)
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("wrennbench takes no arguments, got %q", fs.Args())
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return c, fmt.Errorf("--only: %w", err)
		}
		c.Only = re
	}
	counts := modeCounts(c.Quick)
	for _, f := range []struct {
		name string
		v    *int
		def  int
		max  int
	}{
		{"samples", &c.Samples, counts.Samples, 1000},
		{"boot-samples", &c.BootSamples, counts.BootSamples, 100},
		{"forks", &c.Forks, counts.Forks, 32},
		{"fork-samples", &c.ForkSamples, counts.ForkSamples, 100},
		{"concurrent-samples", &c.ConcurrentSamples, counts.ConcurrentSamples, 100},
		{"exec-samples", &c.ExecSamples, counts.ExecSamples, 100000},
		{"e2b-samples", &c.E2BSamples, counts.E2BSamples, 1000},
		{"file-samples", &c.FileSamples, counts.FileSamples, 1000},
		{"large-samples", &c.LargeSamples, counts.LargeSamples, 100},
		{"density-max", &c.DensityMax, counts.DensityMax, 500},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 1 || *f.v > f.max {
			return c, fmt.Errorf("--%s %d: want 1-%d", f.name, *f.v, f.max)
		}
	}
	c.Concurrency = counts.Concurrency
	if concurrency != "" {
		c.Concurrency = nil
		for p := range strings.SplitSeq(concurrency, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n < 1 || n > 60 {
				return c, fmt.Errorf("--concurrent %q: want counts 1-60 separated by commas", concurrency)
			}
			c.Concurrency = append(c.Concurrency, n)
		}
	}
	if c.RPSDuration == 0 {
		c.RPSDuration = counts.RPSDuration
	}
	switch c.Accel {
	case "auto", "tcg", "kvm":
	default:
		return c, fmt.Errorf("--accel %q: want auto, tcg or kvm", c.Accel)
	}
	switch {
	case c.MemoryMB < 128 || c.MemoryMB > 16384:
		return c, fmt.Errorf("--memory-mb %d: want 128-16384", c.MemoryMB)
	case c.Net < -1 || c.Net > 24:
		return c, fmt.Errorf("--net %d: want 0-24", c.Net)
	case c.ReadyTimeout <= 0 || c.Settle < 0 || c.RPSDuration < 0:
		return c, errors.New("--ready-timeout and --rps-duration must be positive and --settle not negative")
	case c.LargeFileMB < 1 || c.LargeFileMB > 4096:
		return c, fmt.Errorf("--large-file-mb %d: want 1-4096", c.LargeFileMB)
	case c.DensityBudgetMB < 1:
		return c, fmt.Errorf("--density-budget-mb %d: want a positive size", c.DensityBudgetMB)
	case c.ListRows < 0 || c.ListRows > 100000:
		return c, fmt.Errorf("--list-rows %d: want 0-100000", c.ListRows)
	}
	c.VCPUs, c.DiskMB = 1, 2048 // the agent's defaults
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if cfg.Render != "" {
		if err := render(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "wrennbench:", err)
			os.Exit(1)
		}
		return
	}
	// The first ctrl-C stops the measurements and cleans up; a second one,
	// once cleanup has begun, kills the process the default way.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	rep, err := Run(ctx, cfg, os.Args, stop)
	if rep != nil {
		err = errors.Join(err, writeOutputs(rep, cfg, os.Stdout))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wrennbench:", err)
		os.Exit(1)
	}
}

// writeOutputs prints the report and writes its JSON and Markdown files.
func writeOutputs(rep *Report, cfg Config, stdout io.Writer) error {
	errs := []error{rep.WriteText(stdout)}
	if cfg.OutDir != "" {
		host, _ := os.Hostname()
		path := filepath.Join(cfg.OutDir, rep.Started.UTC().Format("2006-01-02T1504")+"-"+sanitize(host)+".json")
		if err := rep.WriteJSON(path); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintln(stdout, "\nwrote", path)
		}
	}
	if cfg.ReportPath != "" {
		errs = append(errs, writeMarkdownFile(rep, cfg.ReportPath, cfg.Analysis))
		fmt.Fprintln(stdout, "wrote", cfg.ReportPath)
	}
	return errors.Join(errs...)
}

// render writes the Markdown report of a saved run.
func render(cfg Config) error {
	if cfg.ReportPath == "" {
		return errors.New("--render needs --report")
	}
	rep, err := ReadJSON(cfg.Render)
	if err != nil {
		return err
	}
	rep.judge()
	return writeMarkdownFile(rep, cfg.ReportPath, cfg.Analysis)
}

// writeMarkdownFile writes the report and its plots (in path without .md).
func writeMarkdownFile(rep *Report, path, analysisPath string) error {
	plotDir := strings.TrimSuffix(path, ".md")
	if plotDir == path {
		plotDir += ".plots"
	}
	// Plots of an earlier run must not linger beside this one's.
	if err := os.RemoveAll(plotDir); err != nil {
		return fmt.Errorf("clear plots: %w", err)
	}
	plots, err := rep.WritePlots(plotDir)
	if err != nil {
		return err
	}
	var analysis string
	if analysisPath != "" {
		b, err := os.ReadFile(analysisPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read analysis: %w", err)
		}
		analysis = string(b)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteMarkdown(f, filepath.Base(plotDir), plots, analysis); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	return f.Close()
}

// sanitize keeps a host name fit for a file name.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
	if s == "" {
		return "host"
	}
	return s
}

// Run measures everything selected and cleans up. It returns the report
// (nil only if nothing could start) and an error when a figure failed or
// cleanup did; misses and skips are in the report, not the error.
// stopSignals is called once measuring is over, before cleanup.
func Run(ctx context.Context, cfg Config, argv []string, stopSignals func()) (*Report, error) {
	var profiles []string
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
		profiles = append(profiles, "cpu: "+cfg.CPUProfile)
	}
	if cfg.Trace != "" {
		f, err := os.Create(cfg.Trace)
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		defer trace.Stop()
		profiles = append(profiles, "trace: "+cfg.Trace)
	}
	next := slog.Handler(slog.DiscardHandler)
	if cfg.LogFile != "" {
		f, err := os.Create(cfg.LogFile)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		defer f.Close()
		next = slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	ph := &phases{}
	log := slog.New(&phaseHandler{next: next, p: ph})
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "wrennbench: "+format+"\n", args...)
	}

	start := time.Now()
	mode := "full"
	if cfg.Quick {
		mode = "quick"
	}
	rep := &Report{Command: commandLine(argv), Mode: mode, Started: start, Profiles: profiles}
	w, err := newWorld(ctx, cfg, log, ph)
	if w == nil {
		return nil, err
	}
	rep.Machine = hostFacts(ctx, w.qemuBin)
	rep.Machine.Accel, rep.Machine.AccelReason = string(w.accel.Accel), w.accel.Reason
	rep.Machine.GuestKernel, rep.Machine.Image = w.kernel.Version, cfg.Image
	rep.Machine.GuestMemoryMB, rep.Machine.GuestVCPUs = cfg.MemoryMB, cfg.VCPUs

	if err == nil {
		b := &bench{w: w, cfg: cfg, rep: rep, progress: progress}
		for _, m := range measurements() {
			if cfg.Only != nil && !cfg.Only.MatchString(m.name) {
				continue
			}
			if ctx.Err() != nil {
				rep.Warnings = append(rep.Warnings, "interrupted before "+m.name)
				break
			}
			t := time.Now()
			progress("%s: %s", m.name, m.about)
			// Labels and a trace task per measurement, so that one profile
			// of the whole run splits by figure: go tool pprof
			// -tagfocus measurement=create, or the trace viewer's tasks.
			tctx, task := trace.NewTask(ctx, m.name)
			pprof.Do(tctx, pprof.Labels("measurement", m.name), func(ctx context.Context) { m.run(ctx, b) })
			task.End()
			progress("%s done in %s", m.name, time.Since(t).Round(100*time.Millisecond))
		}
	} else {
		rep.Warnings = append(rep.Warnings, "set up: "+err.Error())
	}
	stopSignals()
	progress("cleaning up")
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var runErr error
	if err != nil {
		runErr = err
	}
	if err := w.Close(cctx); err != nil {
		runErr = errors.Join(runErr, err)
		rep.Warnings = append(rep.Warnings, "cleanup: "+err.Error())
	}
	rep.judge()
	rep.Seconds = time.Since(start).Seconds()
	for _, f := range rep.Figures {
		if f.Result == Failed {
			runErr = errors.Join(runErr, fmt.Errorf("%s not measured: %s", f.Key, f.Error))
		}
	}
	return rep, runErr
}

// commandLine is how the run was started, with the program shown as the
// command that builds it when it ran through go run (a temporary path).
func commandLine(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	prog := argv[0]
	if strings.Contains(prog, "go-build") || strings.HasPrefix(prog, os.TempDir()) {
		prog = "go run ./bench/wrennbench"
	}
	return strings.TrimSpace("sudo " + prog + " " + strings.Join(argv[1:], " "))
}
