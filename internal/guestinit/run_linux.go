package guestinit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// What wrenn-init starts and where.
const (
	envdPath    = "/usr/local/bin/envd"
	tiniPath    = "/usr/bin/tini"
	chronydPath = "/usr/sbin/chronyd"
	ptpDevice   = "/dev/ptp0"
	runDir      = "/run/wrenn"
	envdLogPath = "/var/log/envd.log"
	chronyLog   = "/var/log/chronyd.log"
	envdLogMax  = 4 << 20
	chronyMax   = 1 << 20
)

// Run is the life of PID 1: it boots the guest, supervises envd (and chronyd
// when the host has a PTP clock) until SIGTERM, SIGINT or SIGPWR arrives or
// ctx ends, then stops everything, syncs and reboots, which ends the VM (the
// VMM runs with -no-reboot, the kernel with reboot=k). A failing step is
// logged and boot goes on; a panic is recovered and leads to the same
// shutdown. Run returns only if reboot(2) itself failed.
func Run(ctx context.Context, log *slog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic, shutting down", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		err = powerOff(log)
	}()
	boot(ctx, log)
	return nil
}

// stray are the signals whose Go default would end the process: exit for
// SIGHUP and its kin, a goroutine dump for SIGQUIT, a crash for a SIGABRT
// sent with kill. For PID 1 any of these would panic the kernel, so they are
// caught and logged. Caught, not ignored: ignored dispositions are inherited
// through exec, caught ones reset to default in envd and its children.
var stray = []os.Signal{
	unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGALRM,
	unix.SIGVTALRM, unix.SIGPROF, unix.SIGXCPU, unix.SIGXFSZ, unix.SIGSTKFLT,
	unix.SIGIO, unix.SIGPIPE, unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS,
}

func boot(ctx context.Context, log *slog.Logger) {
	// Signals first: a SIGTERM that arrived before Notify would take Go's
	// default action, exit, and panic the kernel.
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	power := make(chan os.Signal, 1)
	signal.Notify(power, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	strayCh := make(chan os.Signal, 4)
	signal.Notify(strayCh, stray...)
	strayCtx, stopStray := context.WithCancel(context.Background())
	defer stopStray()
	var strayWG sync.WaitGroup
	goSafe(strayCtx, &strayWG, log, "signals", func() {
		for {
			select {
			case sig := <-strayCh:
				log.Warn("signal ignored", "signal", sig.String())
			case <-strayCtx.Done():
				return
			}
		}
	})

	step(log, "mount", mountAll)
	step(log, "stdio", ensureStdio)
	step(log, "filesystem", prepareFilesystem)
	log.Info("booting", "uptime_ms", readUptimeMillis())

	cfg := DefaultConfig()
	step(log, "cmdline", func() error {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return fmt.Errorf("read kernel command line: %w", err)
		}
		var perr error
		cfg, perr = ParseCmdline(string(b))
		return perr
	})
	step(log, "names", func() error { return configureNames(cfg) })
	step(log, "network", func() error {
		err := configureNetwork(cfg)
		if errors.Is(err, errNoEth0) {
			log.Info("no eth0, network not configured")
			return nil
		}
		return err
	})
	step(log, "grow root", func() error {
		start := time.Now()
		from, to, err := growRoot()
		if err == nil && to != from {
			log.Info("root filesystem grown", "from_mib", from>>20, "to_mib", to>>20, "took_ms", time.Since(start).Milliseconds())
		}
		return err
	})
	step(log, "limits", func() error {
		// The kernel's 1024 open files is too few for language servers and
		// test runners; children inherit this.
		lim := unix.Rlimit{Cur: 1 << 16, Max: 1 << 20}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
		return nil
	})
	step(log, "ctrl-alt-del", func() error {
		// Ctrl-Alt-Del then arrives as SIGINT, a clean shutdown, instead
		// of an immediate reboot.
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
			return fmt.Errorf("disable ctrl-alt-del: %w", err)
		}
		return nil
	})

	// The reaper outlives the supervisors: it must see their exits while
	// they stop, and the orphans killed at shutdown.
	reapCtx, stopReaping := context.WithCancel(context.Background())
	defer stopReaping()
	r := newReaper(log)
	var wg sync.WaitGroup
	goSafe(reapCtx, &wg, log, "reaper", func() { r.run(reapCtx, sigchld) })

	superCtx, stopSupervising := context.WithCancel(ctx)
	defer stopSupervising()
	var supervised sync.WaitGroup
	var logs []*cappedFile

	if _, err := os.Stat(ptpDevice); err != nil {
		log.Info("no PTP clock, chronyd not started", "device", ptpDevice)
	} else if sup, lf, err := chronySupervisor(log, r); err != nil {
		log.Warn("step failed", "step", "chrony", "err", err)
	} else {
		logs = append(logs, lf)
		goSafe(superCtx, &supervised, log, "chronyd", func() { sup.run(superCtx) })
	}

	envdLog, err := openCappedFile(envdLogPath, envdLogMax)
	if err != nil {
		log.Warn("envd log to console only", "err", err)
	} else {
		logs = append(logs, envdLog)
	}
	envd := &supervisor{
		name: "envd",
		// tini -s: a subreaper for envd's descendants, so the processes envd
		// starts are reaped next to envd, not by PID 1.
		argv:      []string{tiniPath, "-s", "--", envdPath},
		out:       teeWriter{os.Stdout, writerOrNil(envdLog)},
		reaper:    r,
		log:       log,
		backoff:   Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Reset: 10 * time.Second},
		stopGrace: 5 * time.Second,
	}
	goSafe(superCtx, &supervised, log, "envd supervisor", func() { envd.run(superCtx) })

	select {
	case sig := <-power:
		log.Info("shutting down", "signal", sig.String(), "uptime_ms", readUptimeMillis())
	case <-ctx.Done():
		log.Info("shutting down", "reason", ctx.Err().Error())
	}
	stopSupervising()
	supervised.Wait()
	terminateAll(log)
	for _, l := range logs {
		_ = l.Close()
	}
}

// writerOrNil keeps a nil *cappedFile from becoming a non-nil io.Writer.
func writerOrNil(c *cappedFile) interface{ Write([]byte) (int, error) } {
	if c == nil {
		return nil
	}
	return c
}

func chronySupervisor(log *slog.Logger, r *reaper) (*supervisor, *cappedFile, error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", runDir, err)
	}
	conf := runDir + "/chrony.conf"
	if err := writeFileAtomic(conf, ChronyConf(ptpDevice), 0o644); err != nil {
		return nil, nil, err
	}
	lf, err := openCappedFile(chronyLog, chronyMax)
	if err != nil {
		return nil, nil, err
	}
	return &supervisor{
		name: "chronyd",
		// -d: stay in the foreground (so the reaper can match its pid) and
		// log to stderr, which goes to chronyLog.
		argv:      []string{chronydPath, "-d", "-f", conf},
		out:       lf,
		reaper:    r,
		log:       log,
		backoff:   Backoff{Min: time.Second, Max: time.Minute, Reset: time.Minute},
		stopGrace: 2 * time.Second,
	}, lf, nil
}

// step runs one boot step; a failure or a panic is logged and boot goes on.
func step(log *slog.Logger, name string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("step panicked", "step", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	err := fn()
	if err == nil {
		return
	}
	// One line per joined error: the console shows a "\n" inside an
	// attribute as an escape, not as a line break.
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			log.Warn("step failed", "step", name, "err", e)
		}
		return
	}
	log.Warn("step failed", "step", name, "err", err)
}

// goSafe runs fn in a goroutine owned by wg, and runs it again if it panics,
// until ctx ends: an escaped panic in PID 1 would panic the kernel.
func goSafe(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, name string, fn func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			panicked := func() (p bool) {
				defer func() {
					if r := recover(); r != nil {
						log.Error("goroutine panicked, restarting", "goroutine", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
						p = true
					}
				}()
				fn()
				return false
			}()
			if !panicked || ctx.Err() != nil {
				return
			}
			t := time.NewTimer(time.Second)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}()
}

// terminateAll sends SIGTERM to every process left, then SIGKILL to those
// still there after a grace period, so that sync sees no writers.
func terminateAll(log *slog.Logger) {
	for _, s := range []struct {
		sig   unix.Signal
		grace time.Duration
	}{{unix.SIGTERM, 3 * time.Second}, {unix.SIGKILL, time.Second}} {
		if liveProcesses() == 0 {
			return
		}
		// kill(-1) reaches every process but PID 1 (kernel threads ignore it).
		_ = unix.Kill(-1, s.sig)
		deadline := time.Now().Add(s.grace)
		tick := time.NewTicker(20 * time.Millisecond)
		for liveProcesses() > 0 && time.Now().Before(deadline) {
			<-tick.C
		}
		tick.Stop()
	}
	if n := liveProcesses(); n > 0 {
		log.Warn("processes left at shutdown", "count", n)
	}
}

// powerOff syncs the disks and resets the machine. Reset, not power-off:
// without ACPI (microvm,acpi=off) a power-off only halts the CPU and the VMM
// would keep running; with reboot=k and the VMM's -no-reboot a reset exits
// the VMM.
func powerOff(log *slog.Logger) error {
	unix.Sync()
	log.Info("rebooting", "uptime_ms", readUptimeMillis())
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}
