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

// Swept says what one sweep did.
type Swept struct {
	// Expired are sandboxes whose absolute deadline passed: paused or
	// killed as their on_timeout says.
	Expired []string
	// Abandoned are creates and forks whose lease ran out (their control
	// plane died), now in error and destroyed on their hosts.
	Abandoned []string
	// Templates are snapshot templates whose lease ran out, by outcome:
	// "ready" (their host had made them) or "removed".
	Templates map[string][]string
	// ExpiredKeys is how many idempotency keys past their 24 h were
	// deleted.
	ExpiredKeys int64
	// Builds are template builds whose lease ran out (their control plane
	// died), now failed; their hosts cancelled them when its stream ended.
	Builds []string
}

// Sweep applies on_timeout to running sandboxes past their deadline and
// settles the operations of a control plane that died: creates and forks
// left starting are rolled back, pending templates completed or removed;
// and it deletes a batch of expired idempotency keys. Every change
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
	before := now.Add(-OpLease)
	stale, err := s.q.StaleStartingSandboxes(ctx, store.StaleStartingSandboxesParams{Before: before, MaxRows: sweepBatch})
	if err != nil {
		return out, errors.Join(errs, fmt.Errorf("list abandoned creates: %w", err))
	}
	for _, sb := range stale {
		n, err := s.q.AbandonStartingSandbox(ctx, store.AbandonStartingSandboxParams{
			ID: sb.ID, Error: "abandoned: the control plane running the create or fork stopped (it restarted?); the sandbox was rolled back",
			Now: now, Before: before,
		})
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("give up sandbox %s: %w", sb.ID, err))
			continue
		}
		if n == 0 {
			continue // finished, renewed or deleted since the list
		}
		if sb.HostID != nil {
			// The VM may exist on its host; it has no owner now. If this
			// fails, the host's next heartbeat is told to destroy it.
			dctx, cancel := detached(ctx, agentDestroyTimeout)
			if err := s.destroyOnHost(dctx, *sb.HostID, sb.ID); err != nil {
				s.log.Warn("destroy abandoned sandbox", "sandbox_id", sb.ID, "host_id", *sb.HostID, "err", err)
			}
			cancel()
		}
		out.Abandoned = append(out.Abandoned, sb.ID)
	}
	tmpls, err := s.q.StalePendingTemplates(ctx, store.StalePendingTemplatesParams{Before: before, MaxRows: sweepBatch})
	if err != nil {
		return out, errors.Join(errs, fmt.Errorf("list abandoned templates: %w", err))
	}
	for _, t := range tmpls {
		outcome, err := s.settleTemplate(ctx, t, before)
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("settle template %s of team %v: %w", t.Name, t.TeamID, err))
			continue
		}
		if outcome != "" {
			if out.Templates == nil {
				out.Templates = map[string][]string{}
			}
			out.Templates[outcome] = append(out.Templates[outcome], t.Name)
		}
	}
	builds, err := s.q.StaleTemplateBuilds(ctx, store.StaleTemplateBuildsParams{Before: before, MaxRows: sweepBatch})
	if err != nil {
		return out, errors.Join(errs, fmt.Errorf("list abandoned template builds: %w", err))
	}
	for _, b := range builds {
		msg := "abandoned: the control plane running the build stopped (it restarted?); build again"
		n, err := s.q.FinishTemplateBuild(ctx, store.FinishTemplateBuildParams{
			ID: b.ID, Status: BuildFailed, Error: &msg, ErrorCode: ptr("unavailable"), Now: now,
			Steps: b.Steps, CachedSteps: b.CachedSteps,
		})
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("give up template build %s: %w", b.ID, err))
			continue
		}
		if n > 0 {
			out.Builds = append(out.Builds, b.ID.String())
		}
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
		if len(sw.Expired)+len(sw.Abandoned)+len(sw.Templates) > 0 || sw.ExpiredKeys > 0 {
			s.log.Info("sandbox sweep", "expired", sw.Expired, "abandoned", sw.Abandoned, "templates", sw.Templates,
				"expired_idempotency_keys", sw.ExpiredKeys)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
