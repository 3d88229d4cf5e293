package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"

	"connectrpc.com/connect"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// transition runs a lifecycle call on the sandbox's own host when its
// state is one of from, then records state to. The agent call and the
// store update run even if the client hangs up.
func (s *Server) transition(w http.ResponseWriter, r *http.Request, op, to string, from []string,
	call func(context.Context, store.Sandbox) error) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, op, err, nil) }()
	if !slices.Contains(from, sb.State) {
		return wrongState(sb, op, from...)
	}
	ctx = context.WithoutCancel(ctx)
	if err := call(ctx, sb); err != nil {
		return err
	}
	row, err := s.q.TransitionSandbox(ctx, store.TransitionSandboxParams{
		ID: sb.ID, TeamID: sb.TeamID, FromStates: from, ToState: to, Now: s.clk.Now(),
	})
	if errors.Is(err, pgx.ErrNoRows) {
		// Something else moved it meanwhile (a delete, the host monitor).
		cur, gerr := s.teamSandbox(ctx, id)
		if gerr != nil {
			return gerr
		}
		return wrongState(cur, op, from...)
	}
	if err != nil {
		return fmt.Errorf("record sandbox %s %s: %w", id, to, err)
	}
	writeJSON(w, http.StatusOK, sandboxJSON(row, ""))
	return nil
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) error {
	return s.transition(w, r, "pause", stPaused, []string{stRunning}, func(ctx context.Context, sb store.Sandbox) error {
		ctx, cancel := context.WithTimeout(ctx, agentPauseTimeout)
		defer cancel()
		ag, err := s.agentFor(ctx, sb.HostID)
		if err != nil {
			return err
		}
		if _, err := ag.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{Id: sb.ID})); err != nil {
			return agentErr("pause sandbox "+sb.ID, err)
		}
		return nil
	})
}

func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) error {
	// A hibernated sandbox gave its vCPUs and memory back to its team's
	// quota and its host's RAM: taking them again is admitted like a
	// create. (A paused one still holds them.)
	if sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID")); err == nil && sb.State == stHibernated {
		hold, err := s.holdOnHost(r.Context(), sb, quota.Amount{VCPUs: int64(sb.Vcpus), MemoryMB: int64(sb.MemoryMb)},
			scheduler.Need{MemoryBytes: int64(sb.MemoryMb) << 20})
		if err != nil {
			return err
		}
		defer s.releaseHold(r.Context(), hold)
	}
	return s.transition(w, r, "resume", stRunning, []string{stPaused, stHibernated}, func(ctx context.Context, sb store.Sandbox) error {
		ctx, cancel := context.WithTimeout(ctx, agentResumeTimeout)
		defer cancel()
		ag, err := s.agentFor(ctx, sb.HostID)
		if err != nil {
			return err
		}
		if _, err := ag.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{Id: sb.ID, TeamId: sb.TeamID.String()})); err != nil {
			return agentErr("resume sandbox "+sb.ID, err)
		}
		return nil
	})
}

func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "fork", err, nil) }()
	var body api.ForkSandboxJSONBody
	if err := decodeJSON(w, r, &body, true); err != nil {
		return err
	}
	count := 1
	if body.Count != nil {
		count = *body.Count
	}
	if count < 1 || count > maxForks {
		return invalid("count %d: must be 1-%d", count, maxForks)
	}
	if sb.State != stRunning && sb.State != stPaused {
		return wrongState(sb, "fork", stRunning, stPaused)
	}
	// Forks restore the source's memory, so they run where it is. The hold
	// counts them in the team's quota and the host's reservations until
	// their rows exist.
	want := quota.Sandboxes(count, sb.Vcpus, sb.MemoryMb, sb.DiskMb)
	hold, err := s.holdOnHost(ctx, sb, want, scheduler.Need{VCPUs: int(want.VCPUs), MemoryBytes: want.MemoryMB << 20, DiskBytes: want.DiskMB << 20})
	if err != nil {
		return err
	}
	defer s.releaseHold(ctx, hold)
	ctx = context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(ctx, agentForkTimeout)
	defer cancel()
	ag, err := s.agentFor(actx, sb.HostID)
	if err != nil {
		return err
	}
	resp, err := ag.ForkSandbox(actx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: sb.ID, Count: int32(count), TeamId: sb.TeamID.String()}))
	if err != nil {
		return agentErr("fork sandbox "+sb.ID, err)
	}
	forks, extra := s.acceptForks(sb, resp.Msg.GetSandboxes(), count)
	for _, id := range extra {
		// More than was asked for: not admitted, so not kept.
		if derr := s.destroyOnHost(actx, *sb.HostID, id); derr != nil {
			s.log.Warn("destroy surplus fork", "sandbox_id", sb.ID, "fork_id", id, "host_id", *sb.HostID, "err", derr)
		}
	}
	out := make([]api.Sandbox, 0, len(forks))
	var insertErr error
	for _, f := range forks {
		row, err := s.q.InsertSandbox(ctx, store.InsertSandboxParams{
			ID: f.GetId(), TeamID: sb.TeamID, HostID: sb.HostID, Template: sb.Template, State: stRunning,
			Vcpus: sb.Vcpus, MemoryMb: sb.MemoryMb, DiskMb: sb.DiskMb, TimeoutSec: sb.TimeoutSec,
			OnTimeout: sb.OnTimeout, Metadata: sb.Metadata, Network: sb.Network, PublicPorts: sb.PublicPorts,
			AccessTokenHash: hashToken(f.GetAccessToken()), ForkedFrom: &sb.ID, Now: s.clk.Now(),
		})
		if err != nil {
			// A fork the store cannot record must not run unseen. An id
			// the store already has is someone else's sandbox: the agent
			// answered nonsense, and it is not destroyed on its word.
			insertErr = errors.Join(insertErr, fmt.Errorf("record fork %s: %w", f.GetId(), err))
			if isUniqueViolation(err) {
				continue
			}
			if derr := s.destroyOnHost(actx, *sb.HostID, f.GetId()); derr != nil {
				insertErr = errors.Join(insertErr, derr)
			}
			continue
		}
		out = append(out, sandboxJSON(row, f.GetAccessToken()))
	}
	if insertErr != nil {
		return insertErr
	}
	writeJSON(w, http.StatusCreated, map[string]any{"sandboxes": out})
	return nil
}

// agentSandboxIDRE is what a sandbox id an agent chooses (a fork's) must
// look like: the agent's own rule (1-40 of a-z, 0-9 and '-', here not
// starting with '-'), which also keeps it a safe path segment and key.
var agentSandboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// acceptForks sorts the forks an agent reports into those to record (well
// formed, distinct, at most the count asked for) and the ids of surplus
// ones to destroy again. Malformed ids are dropped and logged, never
// stored nor sent back to an agent: an agent is not trusted to name rows.
func (s *Server) acceptForks(src store.Sandbox, got []*hostagentv1.Sandbox, count int) (keep []*hostagentv1.Sandbox, extra []string) {
	seen := make(map[string]bool, len(got))
	for _, f := range got {
		id := f.GetId()
		switch {
		case !agentSandboxIDRE.MatchString(id):
			s.log.Warn("agent reported a fork with a malformed id; ignored", "sandbox_id", src.ID, "host_id", src.HostID, "fork_id", fmt.Sprintf("%.64q", id))
		case seen[id] || id == src.ID:
			s.log.Warn("agent reported a fork id twice or the source's id; ignored", "sandbox_id", src.ID, "host_id", src.HostID, "fork_id", id)
		case len(keep) >= count:
			seen[id] = true
			s.log.Warn("agent reported more forks than asked; destroying the surplus", "sandbox_id", src.ID, "host_id", src.HostID, "fork_id", id, "asked", count)
			extra = append(extra, id)
		default:
			seen[id] = true
			keep = append(keep, f)
		}
	}
	return keep, extra
}

// liveStates are those in which the sandbox exists on its host.
var liveStates = []string{stRunning, stPaused, stHibernated}

func (s *Server) setSandboxTimeout(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "set_timeout", err, nil) }()
	var body api.SetSandboxTimeoutJSONBody
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if body.TimeoutSec < 1 || body.TimeoutSec > 86400 {
		return invalid("timeout_sec %d: must be 1-86400", body.TimeoutSec)
	}
	on := sb.OnTimeout
	if body.OnTimeout != nil {
		if *body.OnTimeout != api.Kill && *body.OnTimeout != api.Pause {
			return invalid("on_timeout %q: must be kill or pause", *body.OnTimeout)
		}
		on = string(*body.OnTimeout)
	}
	if !slices.Contains(liveStates, sb.State) {
		return wrongState(sb, "set the timeout of", liveStates...)
	}
	ctx = context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	ag, err := s.agentFor(actx, sb.HostID)
	if err != nil {
		return err
	}
	if _, err := ag.SetSandboxTimeout(actx, connect.NewRequest(&hostagentv1.SetSandboxTimeoutRequest{
		Id: sb.ID, TimeoutMs: int64(body.TimeoutSec) * 1000, OnTimeout: onTimeoutProto(on),
	})); err != nil {
		return agentErr("set timeout of sandbox "+sb.ID, err)
	}
	row, err := s.q.SetSandboxTimeout(ctx, store.SetSandboxTimeoutParams{
		ID: sb.ID, TeamID: sb.TeamID, TimeoutSec: int32(body.TimeoutSec), OnTimeout: on, Now: s.clk.Now(),
	})
	if err != nil {
		return fmt.Errorf("record timeout of sandbox %s: %w", sb.ID, err)
	}
	writeJSON(w, http.StatusOK, sandboxJSON(row, ""))
	return nil
}

func (s *Server) setSandboxNetwork(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "set_network", err, nil) }()
	var pol api.NetworkPolicy
	if err := decodeJSON(w, r, &pol, false); err != nil {
		return err
	}
	if err := checkNetwork(&pol); err != nil {
		return err
	}
	if !slices.Contains(liveStates, sb.State) {
		return wrongState(sb, "set the network of", liveStates...)
	}
	ctx = context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	ag, err := s.agentFor(actx, sb.HostID)
	if err != nil {
		return err
	}
	if _, err := ag.SetSandboxNetwork(actx, connect.NewRequest(&hostagentv1.SetSandboxNetworkRequest{
		Id: sb.ID, Network: networkProto(&pol),
	})); err != nil {
		return agentErr("set network of sandbox "+sb.ID, err)
	}
	raw, _ := json.Marshal(pol)
	row, err := s.q.SetSandboxNetwork(ctx, store.SetSandboxNetworkParams{ID: sb.ID, TeamID: sb.TeamID, Network: raw, Now: s.clk.Now()})
	if err != nil {
		return fmt.Errorf("record network of sandbox %s: %w", sb.ID, err)
	}
	writeJSON(w, http.StatusOK, sandboxJSON(row, ""))
	return nil
}

func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sb, err := s.teamSandbox(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	if !slices.Contains(liveStates, sb.State) {
		return wrongState(sb, "read the metrics of", liveStates...)
	}
	ctx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return err
	}
	resp, err := ag.GetSandboxMetrics(ctx, connect.NewRequest(&hostagentv1.GetSandboxMetricsRequest{Id: sb.ID}))
	if err != nil {
		return agentErr("metrics of sandbox "+sb.ID, err)
	}
	m := resp.Msg
	pct := float32(m.GetGuestCpuUsedPct())
	writeJSON(w, http.StatusOK, api.SandboxMetrics{
		VmmMemoryBytes: valuePtr(m.GetVmmMemoryBytes()), VmmCpuUsageUs: valuePtr(m.GetVmmCpuUsageUs()),
		DiskAllocatedBytes: valuePtr(m.GetDiskAllocatedBytes()), SnapshotBytes: valuePtr(m.GetSnapshotBytes()),
		GuestMemTotalBytes: valuePtr(m.GetGuestMemTotalBytes()), GuestMemUsedBytes: valuePtr(m.GetGuestMemUsedBytes()),
		GuestCpuUsedPct: &pct, GuestDiskTotalBytes: valuePtr(m.GetGuestDiskTotalBytes()),
		GuestDiskUsedBytes: valuePtr(m.GetGuestDiskUsedBytes()),
	})
	return nil
}

func valuePtr[T any](v T) *T { return &v }

// maxLogTail is the most of a console log one request returns (the agent's
// own cap, agent.MaxConsoleTail).
const maxLogTail int64 = 1 << 20

func (s *Server) sandboxLogs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sb, err := s.teamSandbox(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	var tail int64
	if v := r.URL.Query().Get("tail_bytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > maxLogTail {
			return invalid("tail_bytes %q: must be 1-1048576", v)
		}
		tail = n
	}
	if sb.HostID == nil || sb.State == stStopped {
		return wrongState(sb, "read the logs of", stStarting, stRunning, stPaused, stHibernated, stError)
	}
	ctx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return err
	}
	resp, err := ag.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: sb.ID, TailBytes: tail}))
	if err != nil {
		return agentErr("logs of sandbox "+sb.ID, err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	// The agent may be a tenant's own machine (BYOC): never pass on more
	// than the tail asked for, whatever it sent (its reply is already
	// capped by the agent pool).
	console := resp.Msg.GetConsole()
	limit := tail
	if limit == 0 {
		limit = maxLogTail
	}
	if int64(len(console)) > limit {
		console = console[int64(len(console))-limit:]
	}
	_, _ = w.Write(console)
	return nil
}

// snapshotSandbox makes a team template from a sandbox. The template row
// is inserted first: it reserves the name (a concurrent snapshot with the
// same name gets 409) and is removed again if the agent fails.
func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	var body api.SnapshotSandboxJSONBody
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "snapshot", err, map[string]any{"template": body.Name}) }()
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if !templateNameRE.MatchString(body.Name) {
		return invalid("name %q: must match %s", body.Name, templateNameRE)
	}
	if sb.State != stRunning && sb.State != stPaused {
		return wrongState(sb, "snapshot", stRunning, stPaused)
	}
	builtins, err := s.q.BuiltinTemplates(ctx, sb.TeamID)
	if err != nil {
		return fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == body.Name {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q is a built-in template's name", body.Name)
		}
	}
	ctx = context.WithoutCancel(ctx)
	team := sb.TeamID
	// The row counts against max_templates: admitted and inserted in one
	// transaction under the team's quota lock.
	var tmpl store.Template
	err = s.inTx(ctx, func(q *store.Queries) error {
		if err := s.quota().Admit(ctx, q, team, quota.Amount{Templates: 1}); err != nil {
			return err
		}
		t, err := q.InsertTemplate(ctx, store.InsertTemplateParams{
			TeamID: &team, Name: body.Name, AgentName: "t-" + randomName(20), HostID: sb.HostID,
			SourceSandboxID: &sb.ID, Snapshot: true, Vcpus: sb.Vcpus, MemoryMb: sb.MemoryMb, Now: s.clk.Now(),
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q already exists", body.Name)
		}
		if err != nil {
			return fmt.Errorf("insert template %s: %w", body.Name, err)
		}
		tmpl = t
		return nil
	})
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, agentSnapshotTimeout)
	defer cancel()
	resp, err := s.snapshotOnHost(actx, sb, tmpl.AgentName)
	if err != nil {
		if derr := s.q.DeleteTemplate(ctx, tmpl.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove template row %s: %w", body.Name, derr))
		}
		return err
	}
	tmpl.DiskBytes = resp.GetTemplate().GetDiskBytes()
	if err := s.q.SetTemplateDiskBytes(ctx, store.SetTemplateDiskBytesParams{ID: tmpl.ID, DiskBytes: tmpl.DiskBytes}); err != nil {
		return fmt.Errorf("record template %s size: %w", body.Name, err)
	}
	writeJSON(w, http.StatusCreated, templateJSON(tmpl))
	return nil
}

func (s *Server) snapshotOnHost(ctx context.Context, sb store.Sandbox, agentName string) (*hostagentv1.SnapshotTemplateResponse, error) {
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return nil, err
	}
	// The agent records the team as the template's owner and lets no
	// other team create from it.
	resp, err := ag.SnapshotTemplate(ctx, connect.NewRequest(&hostagentv1.SnapshotTemplateRequest{SandboxId: sb.ID, Template: agentName, TeamId: sb.TeamID.String()}))
	if err != nil {
		return nil, agentErr("snapshot sandbox "+sb.ID, err)
	}
	return resp.Msg, nil
}
