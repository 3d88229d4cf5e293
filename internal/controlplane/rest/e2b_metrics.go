package rest

import (
	"github.com/wrenn/wrenn/api"
	"time"

	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// e2bMetricsOf converts an agent's metrics answer to E2B samples within
// rng: the agent's history (sampled every few seconds while the sandbox
// runs), or, when it has none yet (a sandbox that just started, an agent
// that does not sample), the current reading. E2B's memCache has no source
// in Wrenn's guest metrics and is 0.
func e2bMetricsOf(sb store.Sandbox, m *hostagentv1.GetSandboxMetricsResponse, now time.Time, rng sandboxes.MetricsRange) []api.E2BSandboxMetric {
	if hist := m.GetSamples(); len(hist) > 0 {
		out := make([]api.E2BSandboxMetric, 0, len(hist))
		for _, x := range hist {
			t := time.UnixMilli(x.GetTimeUnixMs()).UTC()
			cpus := int(x.GetCpuCount())
			if cpus == 0 {
				cpus = int(sb.Vcpus)
			}
			out = append(out, api.E2BSandboxMetric{
				Timestamp: t, TimestampUnix: t.Unix(), CpuCount: cpus, CpuUsedPct: x.GetCpuUsedPct(),
				MemUsed: x.GetMemUsedBytes(), MemTotal: x.GetMemTotalBytes(),
				DiskUsed: x.GetDiskUsedBytes(), DiskTotal: x.GetDiskTotalBytes(),
			})
		}
		return out
	}
	in := func(t time.Time) bool {
		return (rng.Start.IsZero() || !t.Before(rng.Start)) && (rng.End.IsZero() || !t.After(rng.End))
	}
	if !in(now) {
		return nil
	}
	return []api.E2BSandboxMetric{{
		Timestamp: now.UTC(), TimestampUnix: now.Unix(), CpuCount: int(sb.Vcpus),
		CpuUsedPct: m.GetGuestCpuUsedPct(), MemUsed: m.GetGuestMemUsedBytes(), MemTotal: m.GetGuestMemTotalBytes(),
		DiskUsed: m.GetGuestDiskUsedBytes(), DiskTotal: m.GetGuestDiskTotalBytes(),
	}}
}
