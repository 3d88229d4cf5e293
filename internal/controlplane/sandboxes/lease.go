package sandboxes

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/store"
)

// OpLease is how long a create, fork or snapshot-as-template stays its
// replica's without a sign of life. The replica renews the rows' lease
// (updated_at) every leaseRenewal while it waits for the host; once a
// lease has run out the sweeper takes the operation as abandoned (its
// replica died) and rolls it back or, for a template its host finished,
// completes it. Short enough that a user does not see a sandbox stuck in
// starting for minutes; long enough to ride out a PostgreSQL restart.
const (
	OpLease      = 30 * time.Second
	leaseRenewal = OpLease / 5
)

// storeRetry bounds how long an operation's last store write waits for
// PostgreSQL to come back (a restart takes seconds) before it gives up
// and leaves the row to the sweeper.
const storeRetry = OpLease

// holdLease renews a lease every leaseRenewal until the returned stop is
// called. Failures are logged: a lease that lapses only hands the
// operation to the sweeper, which checks the outcome with the host.
func (s *Service) holdLease(ctx context.Context, what string, renew func(ctx context.Context, now time.Time) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(leaseRenewal)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := renew(ctx, s.clk.Now()); err != nil && ctx.Err() == nil {
				s.log.Warn("renew operation lease", "operation", what, "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// leaseSandboxes holds the lease of starting rows.
func (s *Service) leaseSandboxes(ctx context.Context, what string, ids []string) (stop func()) {
	return s.holdLease(ctx, what, func(ctx context.Context, now time.Time) error {
		return s.q.RenewStartLeases(ctx, store.RenewStartLeasesParams{Ids: ids, Now: now})
	})
}

// leaseTemplate holds the lease of a pending template row.
func (s *Service) leaseTemplate(ctx context.Context, id uuid.UUID) (stop func()) {
	return s.holdLease(ctx, "snapshot template "+id.String(), func(ctx context.Context, now time.Time) error {
		return s.q.RenewTemplateLeases(ctx, store.RenewTemplateLeasesParams{Ids: []uuid.UUID{id}, Now: now})
	})
}

// retryStore runs a closing store write, waiting out a PostgreSQL restart
// (store.RetryUnavailable) so that an operation the host finished is
// recorded rather than left to the sweeper.
func (s *Service) retryStore(ctx context.Context, fn func(context.Context) error) error {
	return store.RetryUnavailable(context.WithoutCancel(ctx), storeRetry, fn)
}
