// Package ratelimit holds the control plane's abuse limits: token buckets
// per key (principal or client address), the client address of a request
// behind trusted reverse proxies, and per-account login throttling.
//
// Everything here is in memory, per replica: with several replicas behind
// a load balancer each enforces its own share, which bounds abuse by the
// replica count at worst.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// Buckets holds one token bucket per key. Buckets idle long enough to have
// refilled are dropped, since a fresh bucket behaves the same; so the map
// holds only recently active keys.
type Buckets struct {
	rps   rate.Limit
	burst int
	idle  time.Duration
	clk   Clock

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

// NewBuckets returns buckets of rps tokens per second with bursts of twice
// that (at least 1).
func NewBuckets(rps float64, clk Clock) *Buckets {
	burst := max(1, int(math.Ceil(2*rps)))
	// A bucket is full again after burst/rps; keep at least a minute so
	// sweeps stay rare.
	idle := max(time.Minute, time.Duration(float64(burst)/rps*float64(time.Second)))
	return &Buckets{
		rps: rate.Limit(rps), burst: burst, idle: idle, clk: clk,
		buckets: map[string]*bucket{}, lastSweep: clk.Now(),
	}
}

// Idle is how long an unused bucket is kept.
func (l *Buckets) Idle() time.Duration { return l.idle }

// Allow takes a token for key; when there is none it says how long until
// there will be.
func (l *Buckets) Allow(key string) (bool, time.Duration) {
	now := l.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle {
		for k, b := range l.buckets {
			if now.Sub(b.last) >= l.idle {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rps, l.burst)}
		l.buckets[key] = b
	}
	b.last = now
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	res := b.lim.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	res.CancelAt(now)
	return false, wait
}

// Len is how many buckets are held.
func (l *Buckets) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
