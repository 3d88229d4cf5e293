package sandboxes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wrenn/wrenn/internal/store"
)

// sweepBatch bounds the rows one sweep handles of each kind; the next
// sweep takes the rest.
const sweepBatch = 100

// staleStart is how long after its last attempt began a create still
// starting is taken to be abandoned: one attempt's agent timeout plus a
// margin (each attempt refreshes updated_at).
const staleStart = agentCreateTimeout + time.Minute

// Swept says what one sweep did.
type Swept struct {
	// Expired are sandboxes whose absolute deadline passed: paused or
	// killed as their on_timeout says.
	Expired []string
	// Abandoned are creates nobody finished, now in error.
	Abandoned []string
	// ExpiredKeys is how many idempotency keys past their 24 h were
	// deleted.
	ExpiredKeys int64
}

// Sweep applies on_timeout to running sandboxes past their deadline and
// fails creates left starting by a control plane that died, and deletes
// a batch of expired idempotency keys. Every change
// is a guarded update, so replicas sweeping at once do each thing once.
func (s *Service) Sweep(ctx context.Context) (Swept, error) {
	var out Swept
	now := s.clk.Now()
	expired, err := s.q.ExpiredSandboxes(ctx, store.ExpiredSandboxesParams{Now: now, MaxRows: sweepBatch})
	if err != nil {
		return out, fmt.Errorf("list expired sandboxes: %w", err)
	}
	var errs error
	for _, sb := range expired {
		if err := s.expire(ctx, sb); err != nil {
			errs = errors.Join(errs, fmt.Errorf("apply timeout to sandbox %s: %w", sb.ID, err))
			continue
		}
		out.Expired = append(out.Expired, sb.ID)
	}
	stale, err := s.q.StaleStartingSandboxes(ctx, store.StaleStartingSandboxesParams{Before: now.Add(-staleStart), MaxRows: sweepBatch})
	if err != nil {
		return out, errors.Join(errs, fmt.Errorf("list abandoned creates: %w", err))
	}
	for _, sb := range stale {
		_ = s.failCreate(ctx, sb.ID, errors.New("abandoned: the create was not finished (control plane restarted?)"))
		if sb.HostID != nil {
			// The VM may exist on its host; it has no owner now.
			dctx, cancel := detached(ctx, agentDestroyTimeout)
			if err := s.destroyOnHost(dctx, *sb.HostID, sb.ID); err != nil {
				s.log.Warn("destroy abandoned create", "sandbox_id", sb.ID, "host_id", *sb.HostID, "err", err)
			}
			cancel()
		}
		out.Abandoned = append(out.Abandoned, sb.ID)
	}
	n, err := s.sweepIdempotencyKeys(ctx)
	if err != nil {
		errs = errors.Join(errs, err)
	}
	out.ExpiredKeys = n
	return out, errs
}

// expire applies a running sandbox's on_timeout. A paused sandbox is not
// swept again (only running ones are), and its resume gives it a fresh
// deadline (Resume).
func (s *Service) expire(ctx context.Context, sb store.Sandbox) error {
	if sb.OnTimeout == OnTimeoutPause {
		_, err := s.transitionRow(ctx, sb, OpPause, func(ctx context.Context, sb store.Sandbox) error {
			return s.pauseOnHost(ctx, sb, PauseOptions{})
		})
		return err
	}
	return s.deleteRow(ctx, sb)
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sw, err := s.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("sandbox sweep", "err", err)
		}
		if len(sw.Expired)+len(sw.Abandoned) > 0 || sw.ExpiredKeys > 0 {
			s.log.Info("sandbox sweep", "expired", sw.Expired, "abandoned", sw.Abandoned, "expired_idempotency_keys", sw.ExpiredKeys)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
