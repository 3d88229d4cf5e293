package rest

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/store"
)

// lifecycle runs a service call on the caller's sandbox named in the path,
// audits it as op once the sandbox is known to be the caller's, and
// answers the row it returns.
func (s *Server) lifecycle(w http.ResponseWriter, r *http.Request, op string,
	call func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error)) (err error) {
	ctx := r.Context()
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, op, err, nil) }()
	row, err := call(ctx, sb)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxJSON(row, ""))
	return nil
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "pause", func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error) {
		var body api.PauseSandboxJSONBody
		if err := decodeJSON(w, r, &body, true); err != nil {
			return store.Sandbox{}, err
		}
		o := sandboxes.PauseOptions{DropMemory: body.KeepMemory != nil && !*body.KeepMemory}
		return s.sandboxes.Pause(ctx, sb.TeamID, sb.ID, o)
	})
}

func (s *Server) hibernateSandbox(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "hibernate", func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error) {
		return s.sandboxes.Hibernate(ctx, sb.TeamID, sb.ID)
	})
}

func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "resume", func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error) {
		return s.sandboxes.Resume(ctx, sb.TeamID, sb.ID)
	})
}

func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, "fork", err, nil) }()
	idem, err := idempotencyOf(w, r)
	if err != nil {
		return err
	}
	var body api.ForkSandboxJSONBody
	if err := decodeJSON(w, r, &body, true); err != nil {
		return err
	}
	count := 1
	if body.Count != nil {
		count = *body.Count
	}
	forks, err := s.sandboxes.Fork(ctx, sb.TeamID, sb.ID, count, sandboxes.WithIdempotency(idem))
	if err != nil {
		return err
	}
	out := make([]api.Sandbox, len(forks))
	for i, f := range forks {
		out[i] = sandboxJSON(f.Sandbox, f.AccessToken)
	}
	writeJSON(w, http.StatusCreated, map[string]any{"sandboxes": out})
	return nil
}

func (s *Server) setSandboxTimeout(w http.ResponseWriter, r *http.Request) error {
	var body api.SetSandboxTimeoutJSONBody
	return s.lifecycle(w, r, "set_timeout", func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error) {
		if err := decodeJSON(w, r, &body, false); err != nil {
			return store.Sandbox{}, err
		}
		if body.TimeoutSec < 1 || body.TimeoutSec > 86400 {
			return store.Sandbox{}, invalid("timeout_sec %d: must be 1-86400", body.TimeoutSec)
		}
		t := sandboxes.Timeout{Sec: body.TimeoutSec}
		if body.OnTimeout != nil {
			if *body.OnTimeout != api.Kill && *body.OnTimeout != api.Pause {
				return store.Sandbox{}, invalid("on_timeout %q: must be kill or pause", *body.OnTimeout)
			}
			t.OnTimeout = string(*body.OnTimeout)
		}
		return s.sandboxes.SetTimeout(ctx, sb.TeamID, sb.ID, t)
	})
}

func (s *Server) setSandboxNetwork(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "set_network", func(ctx context.Context, sb store.Sandbox) (store.Sandbox, error) {
		var pol api.NetworkPolicy
		if err := decodeJSON(w, r, &pol, false); err != nil {
			return store.Sandbox{}, err
		}
		return s.sandboxes.SetNetwork(ctx, sb.TeamID, sb.ID, *networkPolicy(&pol))
	})
}

func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var rng sandboxes.MetricsRange
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &rng.Start}, {"until", &rng.End}} {
		if v := r.URL.Query().Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return invalid("%s %q: want an RFC 3339 time", f.name, v)
			}
			*f.dst = t
		}
	}
	if !rng.Start.IsZero() && !rng.End.IsZero() && rng.End.Before(rng.Start) {
		return invalid("until is before since")
	}
	m, err := s.sandboxes.Metrics(ctx, principal(ctx).TeamID, chi.URLParam(r, "sandboxID"), rng)
	if err != nil {
		return err
	}
	samples := make([]api.SandboxMetricsSample, len(m.GetSamples()))
	for i, x := range m.GetSamples() {
		samples[i] = api.SandboxMetricsSample{
			Time: time.UnixMilli(x.GetTimeUnixMs()).UTC(), CpuCount: int(x.GetCpuCount()), CpuUsedPct: x.GetCpuUsedPct(),
			MemUsedBytes: x.GetMemUsedBytes(), MemTotalBytes: x.GetMemTotalBytes(),
			DiskUsedBytes: x.GetDiskUsedBytes(), DiskTotalBytes: x.GetDiskTotalBytes(),
		}
	}
	pct := float32(m.GetGuestCpuUsedPct())
	writeJSON(w, http.StatusOK, api.SandboxMetrics{
		Samples:        &samples,
		VmmMemoryBytes: valuePtr(m.GetVmmMemoryBytes()), VmmCpuUsageUs: valuePtr(m.GetVmmCpuUsageUs()),
		DiskAllocatedBytes: valuePtr(m.GetDiskAllocatedBytes()), SnapshotBytes: valuePtr(m.GetSnapshotBytes()),
		GuestMemTotalBytes: valuePtr(m.GetGuestMemTotalBytes()), GuestMemUsedBytes: valuePtr(m.GetGuestMemUsedBytes()),
		GuestCpuUsedPct: &pct, GuestDiskTotalBytes: valuePtr(m.GetGuestDiskTotalBytes()),
		GuestDiskUsedBytes: valuePtr(m.GetGuestDiskUsedBytes()),
	})
	return nil
}

func valuePtr[T any](v T) *T { return &v }

func (s *Server) sandboxLogs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var tail int64
	if v := r.URL.Query().Get("tail_bytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > sandboxes.MaxLogTail {
			return invalid("tail_bytes %q: must be 1-%d", v, sandboxes.MaxLogTail)
		}
		tail = n
	}
	console, err := s.sandboxes.Logs(ctx, principal(ctx).TeamID, chi.URLParam(r, "sandboxID"), tail)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(console)
	return nil
}

// snapshotSandbox makes a team template from a sandbox.
func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	var body api.SnapshotSandboxJSONBody
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, "snapshot", err, map[string]any{"template": body.Name}) }()
	idem, err := idempotencyOf(w, r)
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if !templateNameRE.MatchString(body.Name) {
		return invalid("name %q: must match %s", body.Name, templateNameRE)
	}
	tmpl, err := s.sandboxes.Snapshot(ctx, sb.TeamID, sb.ID, body.Name, sandboxes.WithIdempotency(idem))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, templateJSON(tmpl))
	return nil
}
