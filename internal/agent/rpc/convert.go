package rpc

import (
	"net/netip"
	"time"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// Conversions between the manager's types and the wire's, in one place.

// policyFromProto parses a wire policy; a malformed or non-IPv4 CIDR is
// InvalidArgument naming the entry. A nil policy is the zero policy: no
// egress at all, the safe reading of "nothing said".
func policyFromProto(p *hostagentv1.NetworkPolicy) (network.Policy, error) {
	var out network.Policy
	if p == nil {
		return out, nil
	}
	out.Internet = p.GetAllowInternet()
	for _, list := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{{"allow_out", p.GetAllowOut(), &out.AllowOut}, {"deny_out", p.GetDenyOut(), &out.DenyOut}} {
		for i, s := range list.in {
			pf, err := netip.ParsePrefix(s)
			if err != nil {
				return network.Policy{}, errdefs.New(errdefs.ErrInvalidArgument, "network.%s[%d] %q: want an IPv4 CIDR like 10.1.0.0/16", list.name, i, s)
			}
			*list.out = append(*list.out, pf)
		}
	}
	return out, out.Validate()
}

func policyToProto(p network.Policy) *hostagentv1.NetworkPolicy {
	out := &hostagentv1.NetworkPolicy{AllowInternet: p.Internet}
	for _, pf := range p.AllowOut {
		out.AllowOut = append(out.AllowOut, pf.String())
	}
	for _, pf := range p.DenyOut {
		out.DenyOut = append(out.DenyOut, pf.String())
	}
	return out
}

// onTimeoutFromProto maps the wire's enum. Unspecified maps to "", which
// Create reads as the default (kill) and SetTimeout as "keep the current".
func onTimeoutFromProto(o hostagentv1.OnTimeout) (agent.OnTimeout, error) {
	switch o {
	case hostagentv1.OnTimeout_ON_TIMEOUT_UNSPECIFIED:
		return "", nil
	case hostagentv1.OnTimeout_ON_TIMEOUT_KILL:
		return agent.OnTimeoutKill, nil
	case hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE:
		return agent.OnTimeoutPause, nil
	}
	return "", errdefs.New(errdefs.ErrInvalidArgument, "on_timeout %d: want kill or pause", int32(o))
}

func onTimeoutToProto(o agent.OnTimeout) hostagentv1.OnTimeout {
	switch o {
	case agent.OnTimeoutKill:
		return hostagentv1.OnTimeout_ON_TIMEOUT_KILL
	case agent.OnTimeoutPause:
		return hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE
	}
	return hostagentv1.OnTimeout_ON_TIMEOUT_UNSPECIFIED
}

// sandboxToProto describes a sandbox; the access token is included only
// when withToken (Create and Fork responses), so that listing sandboxes
// never spreads their credentials.
func sandboxToProto(in agent.Info, withToken bool) *hostagentv1.Sandbox {
	out := &hostagentv1.Sandbox{
		Id:                 in.ID,
		Template:           in.Template,
		State:              hostinfo.SandboxState(in.State),
		Vcpus:              int32(in.VCPUs),
		MemoryMb:           int32(in.MemoryMB),
		DiskMb:             int32(in.DiskMB),
		Metadata:           in.Metadata,
		Network:            policyToProto(in.Network),
		TimeoutMs:          in.Timeout.Milliseconds(),
		OnTimeout:          onTimeoutToProto(in.OnTimeout),
		CreatedAtUnixMs:    unixMs(in.CreatedAt),
		LastActiveAtUnixMs: unixMs(in.LastActiveAt),
		KernelVersion:      in.KernelVersion,
		MemoryDropped:      in.MemoryDropped,
	}
	if withToken {
		out.AccessToken = in.AccessToken
	}
	return out
}

// maxTimeoutMs keeps a timeout well inside time.Duration (a year).
const maxTimeoutMs = int64(365 * 24 * time.Hour / time.Millisecond)

// msDuration converts a wire timeout, refusing negative and absurd ones.
func msDuration(ms int64) (time.Duration, error) {
	if ms < 0 || ms > maxTimeoutMs {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "timeout_ms %d: must be 0-%d", ms, maxTimeoutMs)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// createFromProto builds a CreateRequest; the manager checks the ranges.
func createFromProto(r *hostagentv1.CreateSandboxRequest) (agent.CreateRequest, error) {
	if r.GetId() == "" {
		return agent.CreateRequest{}, errdefs.New(errdefs.ErrInvalidArgument, "id is required: the control plane chooses sandbox ids")
	}
	timeout, err := msDuration(r.GetTimeoutMs())
	if err != nil {
		return agent.CreateRequest{}, err
	}
	pol, err := policyFromProto(r.GetNetwork())
	if err != nil {
		return agent.CreateRequest{}, err
	}
	on, err := onTimeoutFromProto(r.GetOnTimeout())
	if err != nil {
		return agent.CreateRequest{}, err
	}
	return agent.CreateRequest{
		ID:        r.GetId(),
		TeamID:    r.GetTeamId(),
		Template:  r.GetTemplate(),
		VCPUs:     int(r.GetVcpus()),
		MemoryMB:  int(r.GetMemoryMb()),
		DiskMB:    int(r.GetDiskMb()),
		Env:       r.GetEnv(),
		Metadata:  r.GetMetadata(),
		Network:   pol,
		Timeout:   timeout,
		OnTimeout: on,
	}, nil
}

func metricsToProto(m agent.Metrics) *hostagentv1.GetSandboxMetricsResponse {
	return &hostagentv1.GetSandboxMetricsResponse{
		VmmMemoryBytes:      m.VMMMemoryBytes,
		VmmCpuUsageUs:       m.VMMCPUUsageUS,
		DiskAllocatedBytes:  m.DiskAllocated,
		SnapshotBytes:       m.SnapshotBytes,
		GuestMemTotalBytes:  m.Guest.MemTotal,
		GuestMemUsedBytes:   m.Guest.MemUsed,
		GuestCpuUsedPct:     m.Guest.CPUUsedPct,
		GuestDiskTotalBytes: m.Guest.DiskTotal,
		GuestDiskUsedBytes:  m.Guest.DiskUsed,
	}
}

// msRange converts a wire range of Unix milliseconds (0: unbounded on that
// side) to times, refusing negative bounds and an end before the start.
func msRange(startMs, endMs int64) (from, to time.Time, err error) {
	if startMs < 0 || endMs < 0 {
		return from, to, errdefs.New(errdefs.ErrInvalidArgument, "start_unix_ms %d, end_unix_ms %d: must not be negative", startMs, endMs)
	}
	if startMs != 0 && endMs != 0 && endMs < startMs {
		return from, to, errdefs.New(errdefs.ErrInvalidArgument, "end_unix_ms %d is before start_unix_ms %d", endMs, startMs)
	}
	if startMs != 0 {
		from = time.UnixMilli(startMs)
	}
	if endMs != 0 {
		to = time.UnixMilli(endMs)
	}
	return from, to, nil
}

func samplesToProto(ss []agent.MetricsSample) []*hostagentv1.MetricsSample {
	out := make([]*hostagentv1.MetricsSample, 0, len(ss))
	for _, s := range ss {
		out = append(out, &hostagentv1.MetricsSample{
			TimeUnixMs:     s.UnixMs,
			CpuCount:       s.CPUCount,
			CpuUsedPct:     s.CPUUsedPct,
			MemUsedBytes:   s.MemUsed,
			MemTotalBytes:  s.MemTotal,
			DiskUsedBytes:  s.DiskUsed,
			DiskTotalBytes: s.DiskTotal,
		})
	}
	return out
}
