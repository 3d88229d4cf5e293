// Command snapbench measures Wrenn's snapshot-based lifecycle (create from
// a template snapshot, pause, resume, hibernate, fork, many concurrent
// creates, memory of idle sandboxes) beside a bare-QEMU baseline measured
// in the same run on the same kernel and image, and prints them side by
// side with each figure's goal:
//
//	go run ./bench/snapbench [--quick] [--out report.json]
//
// It must run as root. Everything it makes on the host (sandboxes, the
// template, network namespaces, nftables table, cgroups, memory files) is
// named after its process id and removed at the end, also on failure and
// on ctrl-C. A figure that misses its goal is reported as MISS; the exit
// status is 1 only when a figure could not be measured or cleanup left
// something behind. See bench/README.md.
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
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// Config is the benchmark's configuration, from flags only.
type Config struct {
	Quick bool
	Out   string
	// Samples is N for the per-operation figures.
	Samples int
	// Forks sandboxes per Fork call, ForkSamples calls.
	Forks, ForkSamples int
	// Concurrent creates at once, ConcurrentSamples times.
	Concurrent, ConcurrentSamples int
	Accel                         string
	CPUProfile                    string
	LogFile                       string
	ImagesDir                     string
	Image                         string
	MemoryMB, VCPUs, DiskMB       int
	ReadyTimeout                  time.Duration
	// Settle is how long the idle sandboxes sit before their memory is read.
	Settle time.Duration
	// Net picks the benchmark's address ranges (10.200+2n/16, 10.201+2n/16)
	// and network prefix; -1 derives it from the process id.
	Net int
}

// modeCounts are the sample counts of a mode; flags override them.
func modeCounts(quick bool) Config {
	if quick {
		return Config{Samples: 3, Forks: 4, ForkSamples: 1, Concurrent: 4, ConcurrentSamples: 1}
	}
	return Config{Samples: 10, Forks: 10, ForkSamples: 3, Concurrent: 20, ConcurrentSamples: 2}
}

// parseFlags builds the Config from args (without the program name).
func parseFlags(args []string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("snapbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&c.Quick, "quick", false, "fewer samples and smaller counts (finishes in under 3 minutes)")
	fs.StringVar(&c.Out, "out", "", "write the report as JSON to this file")
	fs.IntVar(&c.Samples, "samples", 0, "samples per figure (default 10, quick 3)")
	fs.IntVar(&c.Forks, "forks", 0, "sandboxes per fork (default 10, quick 4)")
	fs.IntVar(&c.ForkSamples, "fork-samples", 0, "fork samples (default 3, quick 1)")
	fs.IntVar(&c.Concurrent, "concurrent", 0, "concurrent creates (default 20, quick 4)")
	fs.IntVar(&c.ConcurrentSamples, "concurrent-samples", 0, "concurrent-create samples (default 2, quick 1)")
	fs.StringVar(&c.Accel, "accel", "auto", "accelerator: auto (probe, as the agent does), tcg or kvm")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the benchmark process to this file")
	fs.StringVar(&c.LogFile, "log", "", "write the agent's and driver's debug log (JSON) to this file")
	fs.StringVar(&c.ImagesDir, "images-dir", "/var/lib/wrenn", "WRENN_DIR holding kernels/ and images/")
	fs.StringVar(&c.Image, "image", "minimal", "image (template) to boot")
	fs.IntVar(&c.MemoryMB, "memory-mb", 512, "guest RAM in MiB")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 90*time.Second, "bound on one guest becoming ready")
	fs.IntVar(&c.Net, "net", -1, "address block 0-24 (10.200+2n.0.0/16 and the next /16); default: the process id mod 25")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "idle time before the memory figure is read")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("snapbench takes no arguments, got %q", fs.Args())
	}
	counts := modeCounts(c.Quick)
	for _, f := range []struct {
		name string
		v    *int
		def  int
		max  int
	}{
		{"samples", &c.Samples, counts.Samples, 1000},
		{"forks", &c.Forks, counts.Forks, 32},
		{"fork-samples", &c.ForkSamples, counts.ForkSamples, 100},
		{"concurrent", &c.Concurrent, counts.Concurrent, 60},
		{"concurrent-samples", &c.ConcurrentSamples, counts.ConcurrentSamples, 100},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 1 || *f.v > f.max {
			return c, fmt.Errorf("--%s %d: want 1-%d", f.name, *f.v, f.max)
		}
	}
	switch c.Accel {
	case "auto", "tcg", "kvm":
	default:
		return c, fmt.Errorf("--accel %q: want auto, tcg or kvm", c.Accel)
	}
	if c.MemoryMB < 128 || c.MemoryMB > 16384 {
		return c, fmt.Errorf("--memory-mb %d: want 128-16384", c.MemoryMB)
	}
	if c.Net < -1 || c.Net > 24 {
		return c, fmt.Errorf("--net %d: want 0-24", c.Net)
	}
	if c.ReadyTimeout <= 0 || c.Settle < 0 {
		return c, errors.New("--ready-timeout must be positive and --settle not negative")
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
	// The first ctrl-C stops the measurements and cleans up; a second one,
	// once cleanup has begun, kills the process the default way.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	rep, err := Run(ctx, cfg, os.Args, stop)
	if rep != nil {
		if werr := rep.WriteText(os.Stdout); werr != nil {
			err = errors.Join(err, werr)
		}
		if cfg.Out != "" {
			err = errors.Join(err, rep.WriteJSON(cfg.Out))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "snapbench:", err)
		os.Exit(1)
	}
}

// Run measures everything and cleans up. It returns the report (nil only
// if nothing could start) and an error when a figure could not be
// measured or cleanup failed; misses are in the report, not the error.
// stopSignals is called once measuring is over, before cleanup.
func Run(ctx context.Context, cfg Config, argv []string, stopSignals func()) (*Report, error) {
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
		fmt.Fprintf(os.Stderr, "snapbench: "+format+"\n", args...)
	}

	start := time.Now()
	mode := "full"
	if cfg.Quick {
		mode = "quick"
	}
	rep := &Report{Command: strings.Join(argv, " "), Mode: mode, Started: start}
	w, err := newWorld(ctx, cfg, log, ph)
	if w == nil {
		return nil, err
	}
	rep.Machine = hostFacts(ctx, w.qemuBin)
	rep.Machine.Accel, rep.Machine.AccelReason = string(w.accel.Accel), w.accel.Reason
	rep.Machine.GuestKernel, rep.Machine.Image = w.kernel.Version, cfg.Image
	rep.Machine.GuestMemoryMB, rep.Machine.GuestVCPUs = cfg.MemoryMB, cfg.VCPUs

	var runErr error
	if err == nil {
		runErr = measureAll(ctx, w, cfg, rep, progress)
	} else {
		runErr = err
	}
	stopSignals()
	progress("cleaning up")
	cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
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

// measureAll runs the baseline, then the Wrenn figures.
func measureAll(ctx context.Context, w *world, cfg Config, rep *Report, progress func(string, ...any)) error {
	progress("accelerator %s (%s); baseline: bare QEMU, %d samples", w.accel.Accel, w.accel.Reason, cfg.Samples)
	restore, stop, cont, info, err := w.baseline(ctx, cfg)
	rep.add(restore, stop, cont)
	rep.add(info...)
	if err != nil {
		// Wrenn's figures still run; the ones compared with a missing
		// baseline say so.
		restore.failed(fmt.Errorf("baseline: %w", err))
	}
	base := baselines{restore: restore, stop: stop, cont: cont, boot: &Figure{Key: "bare-boot"}, restoreEnvd: &Figure{Key: "bare-restore-envd"}}
	for _, f := range info {
		switch f.Key {
		case "bare-boot":
			base.boot = f
		case "bare-restore-envd":
			base.restoreEnvd = f
		}
	}
	progress("wrenn: %d samples, fork ×%d (%d), %d concurrent creates (%d)", cfg.Samples, cfg.Forks, cfg.ForkSamples, cfg.Concurrent, cfg.ConcurrentSamples)
	return w.wrenn(ctx, cfg, rep, base)
}
