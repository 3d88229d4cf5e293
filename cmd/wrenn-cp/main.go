// Command wrenn-cp is the Wrenn control plane: REST and WebSocket API, auth,
// scheduling across hosts, the sandbox proxy, the registry agents register
// and heartbeat with, and the host monitor.
//
// Configuration comes from flags, the environment and an optional .env file
// (see .env.example and internal/controlplane/config). Several replicas may
// share one database.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/wrenn/wrenn/internal/controlplane/agentpool"
	"github.com/wrenn/wrenn/internal/controlplane/config"
	"github.com/wrenn/wrenn/internal/controlplane/hostmon"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/controlplane/platformadmin"
	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/rest"
	"github.com/wrenn/wrenn/internal/controlplane/servetls"
	"github.com/wrenn/wrenn/internal/controlplane/webui"
	"github.com/wrenn/wrenn/internal/dbmigrate"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/internal/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "admin" {
		os.Exit(adminMain(os.Args[2:]))
	}
	cfg, err := config.Parse(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if cfg.ShowVersion {
		fmt.Println("wrenn-cp", version.Version)
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("wrenn-cp failed", "err", err)
		os.Exit(1)
	}
}

// adminMain is `wrenn-cp admin` (internal/controlplane/platformadmin): it
// makes platform admins, the only way anyone gets platform rights.
func adminMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := platformadmin.Main(ctx, args, os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// Bounds on start-up and shutdown.
const (
	// dbWait is how long start-up waits for PostgreSQL to accept
	// connections (it may be starting next to us).
	dbWait = time.Minute
	// drainTimeout is how long in-flight requests get after SIGTERM.
	drainTimeout = 30 * time.Second
)

// run serves until ctx ends, then drains. ready, if set, is told the
// address the API listens on once it does.
func run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	log.Info("wrenn-cp starting", "version", version.Version, "config", cfg)

	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer pool.Close()
	if err := waitForDB(ctx, pool, log); err != nil {
		return err
	}
	if err := dbmigrate.Up(ctx, pool); err != nil {
		return err
	}

	ca, err := hostreg.LoadOrCreateCA(ctx, store.New(pool), time.Now())
	if err != nil {
		return err
	}
	// Registration tokens carry this fingerprint; agents pin it.
	log.Info("cluster CA", "ca_cert_hash", ca.Fingerprint())
	tlsOpts := servetls.Options{Mode: cfg.TLSMode, CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, Names: cfg.TLSNames}.
		WithDefaultNames(cfg.PublicURL, cfg.ListenAddr)
	tlsConfig, err := servetls.Config(tlsOpts, ca, nil, log.With("component", "tls"))
	if err != nil {
		return err
	}
	for _, w := range servetls.Warnings(tlsOpts, cfg.PublicURL, cfg.ListenAddr) {
		log.Warn(w)
	}
	logPlatformAdmins(ctx, pool, log)
	registrySvc := hostreg.New(pool, ca, nil, log.With("component", "hostreg"))
	if !cfg.AllowPrivateHostAddresses {
		registrySvc.RefusePrivateBYOC(nil)
	}
	registryPath, registry := registrySvc.Handler()
	identity := hostreg.NewClientIdentity(ca, nil)
	if _, err := identity.Certificate(); err != nil {
		return err
	}
	agents := agentpool.New(pool, identity, log.With("component", "agentpool"))
	if !cfg.AllowPrivateHostAddresses {
		agents.RefusePrivateBYOC()
	}
	defer agents.Close()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	monitor, err := hostmon.New(pool, hostmon.Options{
		Timeout: cfg.HostTimeout, Logger: log.With("component", "hostmon"), Metrics: metrics,
	})
	if err != nil {
		return err
	}
	// The dashboard, embedded at build time (the placeholder page without
	// `make build`'s -tags webui).
	ui, err := webui.New()
	if err != nil {
		return err
	}
	api := rest.New(rest.Deps{
		UI:             ui,
		Pool:           pool,
		Logger:         log.With("component", "api"),
		Metrics:        metrics,
		Agents:         agents,
		JWTSecret:      cfg.JWTSecret,
		Domain:         cfg.Domain,
		AllowedOrigins: cfg.AllowedOrigins,
		RateLimit:      cfg.RateLimit,
		Registry:       registry,
		RegistryPath:   registryPath,
		Signup:         rest.SignupMode(cfg.Signup),
		TeamLimits: quota.Limits{
			MaxSandboxes: cfg.TeamLimits.MaxSandboxes, MaxVCPUs: cfg.TeamLimits.MaxVCPUs,
			MaxMemoryMB: cfg.TeamLimits.MaxMemoryMB, MaxDiskMB: cfg.TeamLimits.MaxDiskMB,
			MaxTemplates: cfg.TeamLimits.MaxTemplates,
		},
		CACertHash: ca.Fingerprint(),
		// Per-address limits behind a reverse proxy.
		TrustedProxies: cfg.Edge.TrustedProxies,
		ClientIPHeader: cfg.Edge.ClientIPHeader,
		Faults:         faultpoint.New(cfg.FaultPointDir, log.With("component", "faultpoint")),
	})

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	// Metrics have a listener of their own, never the API port.
	metricsSrv, err := listenMetrics(cfg.MetricsAddr, metrics, log)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// Handlers that outlive Shutdown (hijacked WebSockets) see their base
	// context cancelled once draining is over.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	// h2c: agents and SDKs behind a TLS-terminating proxy multiplex streams.
	protocols.SetUnencryptedHTTP2(true)
	// No ReadTimeout or WriteTimeout: they bound a whole request and
	// would cut exec and file streams, PTYs, proxied ports and large
	// uploads. The API sets per-request progress deadlines instead
	// (rest.Deps.BodyWindow, WriteTimeout): a body must keep arriving,
	// each write must complete.
	srv := &http.Server{
		Handler:           api.Handler(),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return metricsSrv.run(gctx) })
	g.Go(func() error {
		monitor.Run(gctx)
		return nil
	})
	// Absolute deadlines (E2B's timeouts) and creates a dead replica left
	// starting: every second, one guarded update per sandbox.
	g.Go(func() error {
		api.Sandboxes().RunSweeper(gctx, time.Second)
		return nil
	})
	g.Go(func() error {
		serve := srv.Serve
		if tlsConfig != nil {
			srv.TLSConfig = tlsConfig
			srv.Protocols.SetHTTP2(true)
			serve = func(l net.Listener) error { return srv.ServeTLS(l, "", "") }
		}
		if err := serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", cfg.ListenAddr, err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("wrenn-cp shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		cancelBase()
		// Template builds this replica runs end with it (recorded failed).
		api.Sandboxes().Close()
		if err != nil {
			return fmt.Errorf("drain requests: %w", err)
		}
		return nil
	})
	log.Info("wrenn-cp serving", "addr", ln.Addr().String(), "metrics_addr", metricsSrv.addr(), "registry_path", registryPath, "tls", tlsConfig != nil, "tls_names", tlsOpts.Names)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return g.Wait()
}

// logPlatformAdmins tells the operator who has platform rights: before
// `wrenn-cp admin` existed the first user to sign up got them, and an
// upgraded installation keeps that user's flag.
func logPlatformAdmins(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) {
	us, err := platformadmin.List(ctx, pool)
	if err != nil {
		log.Warn("list platform admins", "err", err)
		return
	}
	emails := make([]string, 0, len(us))
	for _, u := range us {
		emails = append(emails, u.Email)
	}
	if len(emails) == 0 {
		log.Info("no platform admin: make one with `wrenn-cp admin --email EMAIL --password-file FILE` to add regular hosts")
		return
	}
	log.Info("platform admins (manage with `wrenn-cp admin --list/--demote`)", "emails", emails)
}

// waitForDB retries until PostgreSQL answers, for at most dbWait.
func waitForDB(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, dbWait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		if attempt == 1 {
			log.Warn("database not answering yet; retrying", "err", err, "for", dbWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("database did not answer within %v: %w", dbWait, err)
		case <-time.After(time.Second):
		}
	}
}
