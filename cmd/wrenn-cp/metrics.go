package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/controlplane/rest"
)

// metricsShutdown bounds the drain of the metrics listener: scrapes are
// short, and nothing is lost if one is cut.
const metricsShutdown = 5 * time.Second

// metricsServer serves Prometheus' /metrics on a listener of its own
// (WRENN_METRICS_ADDR, default loopback), never on the API port: it needs
// no credentials and describes every team's traffic.
type metricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenMetrics listens on addr; an empty addr disables metrics (nil, nil).
func listenMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*metricsServer, error) {
	if addr == "" {
		log.Info("metrics listener disabled (WRENN_METRICS_ADDR is empty)")
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for /metrics on %s (WRENN_METRICS_ADDR): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", rest.MetricsHandler(reg, log))
	return &metricsServer{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// addr is where metrics are served, or "" when disabled.
func (m *metricsServer) addr() string {
	if m == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// run serves until ctx ends.
func (m *metricsServer) run(ctx context.Context) error {
	if m == nil {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdown)
		defer cancel()
		_ = m.srv.Shutdown(sctx)
	})
	defer stop()
	if err := m.srv.Serve(m.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve /metrics on %s: %w", m.addr(), err)
	}
	return nil
}
