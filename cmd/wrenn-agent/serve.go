package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/agent/registration"
	"github.com/wrenn/wrenn/internal/agent/rpc"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
	"github.com/wrenn/wrenn/internal/version"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// shutdownTimeout bounds how long in-flight requests may finish on exit.
const shutdownTimeout = 10 * time.Second

// services are the agent's face to the control plane and to Prometheus.
type services struct {
	cfg  agent.DaemonConfig
	m    *agent.Manager
	host *hostinfo.Collector
	// builds runs template builds.
	builds *hostbuild.Service
	// events sends the manager's sandbox events once registered.
	events *registration.EventSender
	log    *slog.Logger
	reg    *prometheus.Registry
	rpcM   *rpc.Metrics
}

func newServices(cfg agent.DaemonConfig, m *agent.Manager, host *hostinfo.Collector, builds *hostbuild.Service, events *registration.EventSender, log *slog.Logger) (*services, error) {
	reg := prometheus.NewRegistry()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wrenn_agent_build_info", Help: "Always 1; the agent's version in a label.",
		ConstLabels: prometheus.Labels{"version": version.Version},
	})
	build.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		hostinfo.NewSandboxCollector(m),
		build,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	rpcM, err := rpc.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register rpc metrics: %w", err)
	}
	return &services{cfg: cfg, m: m, host: host, builds: builds, events: events, log: log, reg: reg, rpcM: rpcM}, nil
}

// run serves /metrics, and, once the host is registered, the control
// plane's RPC and guest proxy with heartbeats, until ctx ends. Without
// credentials and without --register the agent serves no RPC and says so:
// it still manages (and reaps) the sandboxes it has. A failed
// registration, or saved credentials that do not fit the flags, are
// errors: the operator asked for something that cannot be done.
func (n *services) run(ctx context.Context) error {
	metricsLn, err := net.Listen("tcp", n.cfg.MetricsListenAddr())
	if err != nil {
		return fmt.Errorf("listen for /metrics on %s: %w", n.cfg.MetricsListenAddr(), err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}))
	metricsSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { serveUntil(ctx, metricsSrv, func() error { return metricsSrv.Serve(metricsLn) }, n.log) })
	n.log.Info("serving /metrics", "addr", metricsLn.Addr().String())

	creds, err := n.credentials(ctx)
	if errors.Is(err, errdefs.ErrNotFound) {
		n.log.Warn("not registered with a control plane: serving no RPC; start once with --register <token> --address <host:port> --cp-url <url>",
			"dir", n.cfg.Dir)
		<-ctx.Done()
		return nil
	}
	if err != nil {
		return err
	}
	id := &registration.Identity{}
	if err := id.Set(creds); err != nil {
		return fmt.Errorf("host credentials: %w", err)
	}

	ln, err := net.Listen("tcp", n.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", n.cfg.ListenAddr, err)
	}
	handler := rpc.NewHandler(rpc.Config{Manager: n.m, Host: n.host, Builds: n.builds, Copies: n.m, Logger: n.log, Metrics: n.rpcM})
	srv := rpc.NewServer(handler, rpc.ServerTLSConfig(id), n.log)
	wg.Go(func() { serveUntil(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") }, n.log) })
	n.log.Info("serving the control plane", "addr", ln.Addr().String(), "host_id", creds.HostID, "cp_url", creds.CPURL)

	// Later calls trust the CA saved at registration (pinned then), beside
	// the system roots: a control plane serving WRENN_TLS=self-signed.
	client, err := registration.NewClient(creds.CPURL, capin.Trust{CAPEM: creds.CAPEM})
	if err != nil {
		return err
	}
	wg.Go(func() { n.events.Run(ctx, client, id) })
	hb := registration.NewHeartbeater(registration.HeartbeatConfig{
		Client: client, Store: registration.NewStore(n.cfg.Dir), Identity: id,
		Status: n.host, Interval: n.cfg.HeartbeatEvery(), Logger: n.log.With("host_id", creds.HostID),
		// The host is gone at the control plane: nothing may reach the
		// sandboxes through this agent any more.
		OnRevoked: func(error) { _ = srv.Close() },
		Destroy:   n.m.Destroy,
	})
	if err := hb.Run(ctx); errors.Is(err, registration.ErrRevoked) {
		n.log.Error("the control plane deleted this host: stopped serving RPC and deleted the credentials; register again to serve",
			"host_id", creds.HostID, "reason", err)
		<-ctx.Done()
	}
	return nil
}

// credentials registers or loads the host's credentials.
func (n *services) credentials(ctx context.Context) (registration.Credentials, error) {
	var specs *hostagentv1.HostSpecs
	if n.cfg.RegistrationToken != "" {
		st, err := n.host.Collect(ctx)
		if err != nil {
			return registration.Credentials{}, fmt.Errorf("read host specs for registration: %w", err)
		}
		specs = st.Specs
	}
	return registration.Start(ctx, registration.StartConfig{
		Store: registration.NewStore(n.cfg.Dir), Token: n.cfg.RegistrationToken,
		Address: n.cfg.Address, CPURL: n.cfg.CPURL, Specs: specs, Logger: n.log,
	})
}

// serveUntil runs serve until ctx ends, then shuts srv down gracefully for
// at most shutdownTimeout and closes what is left (streams, WebSockets).
func serveUntil(ctx context.Context, srv *http.Server, serve func() error, log *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- serve() }()
	select {
	case err := <-done:
		// Closed by revocation, or failed on its own.
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("server stopped", "err", err)
		}
		return
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-done
}
