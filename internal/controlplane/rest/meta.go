package rest

// Routes about the API itself: the OpenAPI document and its HTML
// rendering and the health check. Also the request metrics every route
// reports, which wrenn-cp serves on a listener of their own
// (MetricsHandler), never on the API port: /metrics is unauthenticated
// and describes every team's traffic.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/apidocs"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// healthTimeout bounds the database ping of /healthz.
const healthTimeout = 3 * time.Second

// mountMeta mounts /openapi.yaml, /docs and /healthz, and the
// request-metrics middleware. It must run before any other route is
// mounted on r (chi takes middleware only before routes).
func (s *Server) mountMeta(r chi.Router) {
	r.Use(newHTTPMetrics(s.deps.Metrics).middleware)

	r.Get("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(api.OpenAPI)
	})

	docs, err := apidocs.Render(api.OpenAPI)
	r.Get("/docs", func(w http.ResponseWriter, r *http.Request) {
		if err != nil {
			writeError(w, r, fmt.Errorf("render API docs: %w", err))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(docs)
	})

	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := s.deps.Pool.Ping(ctx); err != nil {
			s.log.Warn("health check: database ping failed", "err", err)
			writeError(w, r, errdefs.New(errdefs.ErrUnavailable, "database unreachable"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// MetricsHandler serves reg (Deps.Metrics) in Prometheus' text format. It
// is for a separate, private listener (WRENN_METRICS_ADDR): the API's own
// router answers /metrics with 404.
func MetricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	opts := promhttp.HandlerOpts{Registry: reg}
	if log != nil {
		opts.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	return promhttp.HandlerFor(reg, opts)
}

// registerCollector registers c on reg, or returns the equal collector
// already there (a second Handler() on one Server registers again).
func registerCollector[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// Two different metrics with one name: a programming error that
		// every test run of the server catches.
		panic(fmt.Sprintf("register metric: %v", err))
	}
	return c
}

// httpMetrics counts requests and times them by route pattern (never the
// raw path, whose ids would explode the label set).
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	return &httpMetrics{
		requests: registerCollector(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wrenn_api_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"})),
		duration: registerCollector(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wrenn_api_request_duration_seconds",
			Help:    "Time to serve an HTTP request (WebSockets: the whole session), by route pattern and method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route", "method"})),
	}
}

func (m *httpMetrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil {
			if p := rc.RoutePattern(); p != "" {
				route = p
			}
		}
		status := ww.Status()
		if status == 0 {
			// Hijacked (WebSocket upgrade) or nothing written.
			status = http.StatusSwitchingProtocols
			if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				status = http.StatusOK
			}
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		default:
			method = "OTHER"
		}
		m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
	})
}
