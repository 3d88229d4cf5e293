package rest

import (
	"time"

	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// e2bMetricsOf converts an agent's metrics answer to E2B samples within
// rng: the agent's history when it keeps one, else the current reading.
// E2B's memCache has no source in Wrenn's guest metrics and is 0.
func e2bMetricsOf(sb store.Sandbox, m *hostagentv1.GetSandboxMetricsResponse, now time.Time, rng sandboxes.MetricsRange) []e2bMetric {
	in := func(t time.Time) bool {
		return (rng.Start.IsZero() || !t.Before(rng.Start)) && (rng.End.IsZero() || !t.After(rng.End))
	}
	if !in(now) {
		return nil
	}
	return []e2bMetric{{
		Timestamp: now.UTC(), TimestampUnix: now.Unix(), CPUCount: int(sb.Vcpus),
		CPUUsedPct: m.GetGuestCpuUsedPct(), MemUsed: m.GetGuestMemUsedBytes(), MemTotal: m.GetGuestMemTotalBytes(),
		DiskUsed: m.GetGuestDiskUsedBytes(), DiskTotal: m.GetGuestDiskTotalBytes(),
	}}
}
