package agent

import (
	"context"
	"time"

	"github.com/wrenn/wrenn/internal/envdclient"
)

// clockSyncTimeout bounds setting a resumed guest's clock: envd answers in
// milliseconds once its vCPUs run, so this only matters for a guest that
// is wedged, which must not hold the resume forever.
const clockSyncTimeout = 10 * time.Second

// syncGuestClock sets the guest's wall clock to the host's through envd's
// /init (which steps it when it is more than a second off). A paused
// guest's clock stood still while its vCPUs did: without this a sandbox
// paused for a minute runs a minute behind for good (no clock source
// corrects it under TCG), breaking TLS checks, signed URLs, logs and
// build tools. Restores from a snapshot set it in their envd step; this
// is for the resume of a VM that kept its memory in place. A guest that
// does not answer is logged, not failed: its vCPUs already run.
func (m *Manager) syncGuestClock(ctx context.Context, sb *sandbox) {
	ctx, cancel := context.WithTimeout(ctx, clockSyncTimeout)
	defer cancel()
	start := time.Now()
	wait := 20 * time.Millisecond
	for {
		// Zero Timestamp: the host's real time now (not cfg.Clock, which
		// tests may stop).
		err := sb.envd.Init(ctx, envdclient.InitRequest{})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			m.log.Warn("could not set the resumed guest's clock; it may run behind", "sandbox_id", sb.rec.ID,
				"waited", time.Since(start).Round(time.Millisecond), "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
