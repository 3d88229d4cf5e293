// Command wrenn-agent is the Wrenn host agent: it boots, pauses and
// destroys microVM sandboxes on one host for the control plane.
//
// The daemon starts the sandbox manager (VMM driver chosen by WRENN_VMM,
// network pool, cgroups), re-adopts sandboxes that outlived the previous
// agent, runs the idle reaper and serves Prometheus /metrics on a plain
// loopback listener (WRENN_AGENT_METRICS_ADDR, default 127.0.0.1:50052;
// the RPC listener admits only the control plane's certificate, which a
// scraper does not have).
//
// Registered, it serves the control plane on WRENN_HOST_LISTEN_ADDR
// (default :50051) over mutual TLS: HostAgentService (Connect RPC) and the
// HTTP proxy to each guest's envd and ports, and heartbeats every 30 s.
// Register once with
//
//	wrenn-agent --register <token> --address <host:port> --cp-url <url>
//
// which saves the credentials under WRENN_DIR (host.key, host.crt, ca.crt,
// host-token, host-id, registration.json); later starts need no flags.
// Unregistered, the agent serves no RPC and says so in its log. When the
// control plane deletes the host, the agent stops serving RPC and deletes
// its credentials.
//
// On SIGINT or SIGTERM it lets go of its sandboxes without stopping them,
// for the next agent to re-adopt.
//
// Configuration: wrenn-agent -h lists every flag and the environment
// variable behind it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/cgroup"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/network"
	"github.com/wrenn/wrenn/internal/templates/builder"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
	"github.com/wrenn/wrenn/internal/version"
	"github.com/wrenn/wrenn/internal/vmm/drivers"
)

func main() {
	cfg, err := agent.ParseDaemonConfig(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if cfg.ShowVersion {
		fmt.Println("wrenn-agent", version.Version)
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("wrenn-agent starting", "version", version.Version, "config", cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("wrenn-agent failed", "err", err)
		os.Exit(1)
	}
	log.Info("wrenn-agent stopped")
}

// run wires the manager, serves until ctx ends, then lets go of every
// sandbox without stopping it.
func run(ctx context.Context, cfg agent.DaemonConfig, log *slog.Logger) error {
	// The accelerator probe boots the newest kernel; without one it falls
	// back to TCG and says so, and sandboxes cannot boot anyway.
	kernel, err := kernels.Latest(filepath.Join(cfg.Dir, "kernels"))
	if err != nil {
		log.Warn("no guest kernel to probe KVM with", "err", err)
	}
	driver, choice, err := drivers.New(ctx, drivers.Config{
		VMM: cfg.VMM, ProbeKernel: kernel.Path, Logger: log,
		// A PVM host's probe waits qemu.ProbeTimeout every start otherwise.
		ProbeCache: filepath.Join(cfg.Dir, "accel-probe.json"),
	})
	if err != nil {
		return fmt.Errorf("choose vmm driver: %w", err)
	}
	log.Info("vmm driver chosen", "vmm", choice)

	pool, err := network.NewPool(network.PoolConfig{
		Prefix: cfg.Name + "-", Table: cfg.Name, HostCIDR: cfg.HostCIDR, VethCIDR: cfg.VethCIDR,
		EgressDeny: cfg.EgressDeny,
	}, log)
	if err != nil {
		return fmt.Errorf("network pool: %w", err)
	}
	groups, err := cgroup.Detect("", cfg.Name)
	if err != nil {
		return fmt.Errorf("detect cgroups: %w", err)
	}
	log.Info("cgroups detected", "version", groups.Version())

	// Sandbox state changes queue from recovery on and go to the control
	// plane once the host's credentials are known (services.run).
	events := registration.NewEventSender(registration.EventSenderConfig{Logger: log})
	m, err := agent.New(agent.Config{
		Dir: cfg.Dir, Driver: driver, Network: pool, Cgroups: groups, Logger: log, Events: events,
		VMMUIDBase: cfg.VMMUIDBase, MemoryDir: filepath.Join("/dev/shm", cfg.Name),
		MetricsInterval: cfg.MetricsInterval, MetricsHistory: cfg.MetricsHistory,
		Faults: faultpoint.New(cfg.FaultPointDir, log.With("component", "faultpoint")),
	})
	if err != nil {
		return fmt.Errorf("sandbox manager: %w", err)
	}
	if err := m.Recover(ctx); err != nil {
		// Sandboxes that could not be recovered are logged; the rest are
		// managed, so the agent carries on.
		log.Warn("recovery left errors", "err", err)
	}

	accel := string(choice.Accel)
	if choice.Driver == drivers.Firecracker {
		accel = "kvm" // Firecracker runs on KVM only
	}
	host := hostinfo.New(hostinfo.Config{Dir: cfg.Dir, VMM: choice.Driver, Accelerator: accel, Sandboxes: m, MemoryDir: m.MemoryDir()})
	bld, err := builder.New(builder.Config{Dir: cfg.Dir, VMs: m, Logger: log.With("component", "builder")})
	if err != nil {
		return fmt.Errorf("template builder: %w", err)
	}
	builds, err := hostbuild.New(hostbuild.Config{Dir: cfg.Dir, Builder: bld, Logger: log.With("component", "builds"), Insecure: cfg.InsecureRegistry})
	if err != nil {
		return fmt.Errorf("template builds: %w", err)
	}
	svc, err := newServices(cfg, m, host, builds, events, log)
	if err == nil {
		// The reaper stops with the services, also when they fail.
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { m.RunReaper(ctx, cfg.ReaperInterval) })
		wg.Go(func() { m.RunSampler(ctx) })
		err = svc.run(ctx)
		cancel()
		wg.Wait()
	}
	log.Info("shutting down; sandboxes keep running")
	if cerr := m.Close(); cerr != nil {
		return errors.Join(err, fmt.Errorf("release sandboxes: %w", cerr))
	}
	return err
}
