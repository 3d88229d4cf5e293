package auth

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// ErrHashBusy is returned when too many password hashes are running or
// waiting: signups and logins beyond what the CPUs can hash are refused
// quickly (503, retry) instead of queueing without bound.
var ErrHashBusy = errdefs.New(errdefs.ErrUnavailable, "too many sign-ins in progress: retry in a second")

// HashGate bounds concurrent argon2id computations. Each costs tens of
// milliseconds of one CPU and DefaultParams.Memory of RAM, so unbounded
// concurrent logins (or an attacker sending many) would starve every other
// request and could exhaust memory.
type HashGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	// maxWaiting is how many callers may wait for a slot; more get
	// ErrHashBusy at once.
	maxWaiting int64
	// maxWait is how long a caller waits for a slot before ErrHashBusy.
	maxWait time.Duration
}

// NewHashGate allows concurrency hashes at once (GOMAXPROCS when <= 0) and
// queue waiters (4 per slot when < 0), each waiting at most maxWait
// (2 s when <= 0).
func NewHashGate(concurrency, queue int, maxWait time.Duration) *HashGate {
	if concurrency <= 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	if queue < 0 {
		queue = 4 * concurrency
	}
	if maxWait <= 0 {
		maxWait = 2 * time.Second
	}
	return &HashGate{slots: make(chan struct{}, concurrency), maxWaiting: int64(queue), maxWait: maxWait}
}

// Do runs fn once a slot is free. It returns ErrHashBusy without running fn
// when the queue is full or no slot frees up within the wait, and ctx's
// error when ctx ends first.
func (g *HashGate) Do(ctx context.Context, fn func()) error {
	select {
	case g.slots <- struct{}{}:
	default:
		if g.waiting.Add(1) > g.maxWaiting {
			g.waiting.Add(-1)
			return ErrHashBusy
		}
		t := time.NewTimer(g.maxWait)
		select {
		case g.slots <- struct{}{}:
			g.waiting.Add(-1)
			t.Stop()
		case <-t.C:
			g.waiting.Add(-1)
			return ErrHashBusy
		case <-ctx.Done():
			g.waiting.Add(-1)
			t.Stop()
			return ctx.Err()
		}
	}
	defer func() { <-g.slots }()
	fn()
	return nil
}

// HashPassword is HashPassword through the gate.
func (g *HashGate) HashPassword(ctx context.Context, password string, p Params) (string, error) {
	var h string
	var herr error
	if err := g.Do(ctx, func() { h, herr = HashPassword(password, p) }); err != nil {
		return "", err
	}
	return h, herr
}

// VerifyPassword is VerifyPassword through the gate.
func (g *HashGate) VerifyPassword(ctx context.Context, password, encoded string) error {
	var verr error
	if err := g.Do(ctx, func() { verr = VerifyPassword(password, encoded) }); err != nil {
		return err
	}
	return verr
}
