package ratelimit

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limiter is Buckets served as HTTP middleware and exported as metrics:
// the number of buckets held (a gauge) and the requests refused (a
// counter), both labelled with the limiter's kind.
type Limiter struct {
	*Buckets
	desc     *prometheus.Desc
	rejected prometheus.Counter
}

// NewLimiter returns a limiter of rps requests per second (bursts of
// twice that) per key, counting refusals in rejected (RejectedCounter,
// registered once by the caller).
func NewLimiter(kind string, rps float64, clk Clock, rejected *prometheus.CounterVec) *Limiter {
	return &Limiter{
		Buckets: NewBuckets(rps, clk),
		desc: prometheus.NewDesc("wrenn_api_rate_limit_buckets",
			"Token buckets the rate limiter holds (recently active principals or client addresses).",
			nil, prometheus.Labels{"kind": kind}),
		rejected: rejected.WithLabelValues(kind),
	}
}

// RejectedCounter is the counter vector NewLimiter counts refusals in
// (one per registry, labelled by kind).
func RejectedCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wrenn_api_rate_limited_total",
		Help: "Requests refused with 429, by what was limited (principal or client address).",
	}, []string{"kind"})
}

// Describe and Collect export the number of buckets held.
func (l *Limiter) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect reports the number of buckets held now.
func (l *Limiter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(l.Len()))
}

// Middleware lets a request through when its key (keyOf) has a token;
// otherwise it counts the refusal and calls refuse with how long to wait.
func (l *Limiter) Middleware(keyOf func(*http.Request) string, refuse func(http.ResponseWriter, *http.Request, time.Duration)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok, wait := l.Allow(keyOf(r))
			if !ok {
				l.rejected.Inc()
				refuse(w, r, wait)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
