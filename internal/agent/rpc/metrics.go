package rpc

import (
	"context"
	"log/slog"
	"path"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the agent's RPC and proxy traffic. A nil *Metrics records
// nothing.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	proxy    *prometheus.CounterVec
}

// NewMetrics registers the server's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wrenn_agent_rpc_requests_total",
			Help: "HostAgentService requests by method and Connect code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wrenn_agent_rpc_request_duration_seconds",
			Help: "HostAgentService request durations by method.",
			// Reads take milliseconds; creates and forks seconds (TCG boots
			// and memory copies).
			Buckets: []float64{.005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
		proxy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wrenn_agent_proxy_requests_total",
			Help: "Proxied guest requests by route (envd or port) and HTTP status.",
		}, []string{"route", "code"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.proxy} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// interceptor records each unary call and logs those that failed inside the
// agent (Internal/Unknown), which nothing else would report on this host.
func (m *Metrics) interceptor(log *slog.Logger) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			res, err := next(ctx, req)
			method := path.Base(req.Spec().Procedure)
			code := "ok"
			if err != nil {
				c := connect.CodeOf(err)
				code = c.String()
				if c == connect.CodeInternal || c == connect.CodeUnknown {
					log.Warn("rpc failed", "method", method, "err", err)
				} else {
					log.Debug("rpc refused", "method", method, "code", code, "err", err)
				}
			}
			if m != nil {
				m.requests.WithLabelValues(method, code).Inc()
				m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
			}
			return res, err
		}
	})
}

func (m *Metrics) proxied(route string, status int) {
	if m == nil {
		return
	}
	m.proxy.WithLabelValues(route, strconv.Itoa(status)).Inc()
}
