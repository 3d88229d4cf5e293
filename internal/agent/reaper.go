package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wrenn/wrenn/internal/agent/state"
)

// Reap applies on_timeout to every running sandbox idle for longer than its
// timeout: kill destroys it, pause freezes it in place. A sandbox busy with
// another operation is in use, so it is skipped this round.
func (m *Manager) Reap(ctx context.Context) error {
	m.mu.Lock()
	all := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		all = append(all, sb)
	}
	m.mu.Unlock()

	var errs []error
	for _, sb := range all {
		if err := m.reapOne(ctx, sb); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reapOne decides and acts under the sandbox's lock, so a use that lands
// between the decision and the action cannot be lost.
func (m *Manager) reapOne(ctx context.Context, sb *sandbox) error {
	if !sb.mu.TryLock() {
		return nil
	}
	defer sb.mu.Unlock()
	now := m.cfg.Clock.Now()
	if sb.rec.State != state.Running || now.Sub(sb.lastActiveAt()) <= sb.rec.Timeout {
		return nil
	}
	id, on := sb.rec.ID, sb.rec.OnTimeout
	m.log.Info("sandbox idle past its timeout", "sandbox_id", id, "on_timeout", on)
	var err error
	if on == OnTimeoutPause {
		err = withCause(sb, ReasonReaperPause, func() error { return transitionLocked(ctx, sb, state.Paused, pauseMachine) })
	} else {
		err = withCause(sb, ReasonReaperKill, func() error { return m.destroyLocked(ctx, sb) })
	}
	if err != nil {
		return fmt.Errorf("reap %s (%s): %w", id, on, err)
	}
	return nil
}

// RunReaper calls Reap every interval until ctx ends. Reap errors are logged:
// the next round retries.
// Every hour it also removes template copies unused for DefaultCopyTTL.
func (m *Manager) RunReaper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var collected time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Reap(ctx); err != nil {
				m.log.Warn("reaper round failed", "err", err)
			}
			if now := m.cfg.Clock.Now(); now.Sub(collected) >= time.Hour {
				collected = now
				if _, err := m.CollectCopies(ctx, DefaultCopyTTL); err != nil {
					m.log.Warn("collect template copies", "err", err)
				}
			}
		}
	}
}
