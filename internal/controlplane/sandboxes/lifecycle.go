package sandboxes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// transition runs call (the agent side of op) on a team's sandbox when the
// table allows op in its state, then records op's target state. The agent
// call and the store update run even if the caller hangs up.
func (s *Service) transition(ctx context.Context, team uuid.UUID, id string, op Op,
	call func(context.Context, store.Sandbox) error) (store.Sandbox, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	return s.transitionRow(ctx, sb, op, call)
}

func (s *Service) transitionRow(ctx context.Context, sb store.Sandbox, op Op,
	call func(context.Context, store.Sandbox) error) (store.Sandbox, error) {
	if err := Check(op, sb); err != nil {
		return store.Sandbox{}, err
	}
	ctx = context.WithoutCancel(ctx)
	if err := call(ctx, sb); err != nil {
		return store.Sandbox{}, err
	}
	row, err := s.q.TransitionSandbox(ctx, store.TransitionSandboxParams{
		ID: sb.ID, TeamID: sb.TeamID, FromStates: Strings(From(op)), ToState: string(To(op)), Now: s.clk.Now(),
	})
	if store.IsNoRows(err) {
		// Something else moved it meanwhile: a delete, the host monitor,
		// or the agent's own report of this very change (an event or a
		// heartbeat that arrived between the agent's answer and this
		// update), which is success.
		cur, gerr := s.Get(ctx, sb.TeamID, sb.ID)
		if gerr != nil {
			return store.Sandbox{}, gerr
		}
		if to := To(op); to != "" && State(cur.State) == to {
			return cur, nil
		}
		return store.Sandbox{}, WrongState(cur, op)
	}
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record sandbox %s %s: %w", sb.ID, To(op), err)
	}
	return row, nil
}

// PauseOptions are how a pause is done.
type PauseOptions struct {
	// DropMemory keeps only the filesystem: resuming cold-boots the
	// sandbox from its disk (E2B's `memory: false`).
	DropMemory bool
}

// Pause stops a running sandbox's vCPUs, keeping its memory (or, with
// DropMemory, only its disk).
func (s *Service) Pause(ctx context.Context, team uuid.UUID, id string, o PauseOptions) (store.Sandbox, error) {
	return s.transition(ctx, team, id, OpPause, func(ctx context.Context, sb store.Sandbox) error {
		return s.pauseOnHost(ctx, sb, o)
	})
}

// pauseOnHost is the agent side of a pause and the record of how it was
// done.
func (s *Service) pauseOnHost(ctx context.Context, sb store.Sandbox, o PauseOptions) error {
	ctx, cancel := context.WithTimeout(ctx, agentPauseTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return err
	}
	if _, err := ag.PauseSandbox(ctx, connect.NewRequest(pauseRequest(sb.ID, o))); err != nil {
		return agentErr("pause sandbox "+sb.ID, err)
	}
	if err := s.q.SetSandboxMemoryDropped(ctx, store.SetSandboxMemoryDroppedParams{
		ID: sb.ID, TeamID: sb.TeamID, MemoryDropped: o.DropMemory, Now: s.clk.Now(),
	}); err != nil {
		return fmt.Errorf("record how sandbox %s was paused: %w", sb.ID, err)
	}
	return nil
}

// Resume brings a paused or hibernated sandbox back.
func (s *Service) Resume(ctx context.Context, team uuid.UUID, id string) (store.Sandbox, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	// A hibernated sandbox gave its vCPUs and memory back to its team's
	// quota and its host's RAM: taking them again is admitted like a
	// create. (A paused one still holds them.)
	if State(sb.State) == Hibernated {
		hold, err := s.holdOnHost(ctx, sb, quota.Amount{VCPUs: int64(sb.Vcpus), MemoryMB: int64(sb.MemoryMb)},
			scheduler.Need{MemoryBytes: int64(sb.MemoryMb) << 20})
		if err != nil {
			return store.Sandbox{}, err
		}
		defer s.releaseHold(ctx, hold)
	}
	row, err := s.transitionRow(ctx, sb, OpResume, func(ctx context.Context, sb store.Sandbox) error {
		ctx, cancel := context.WithTimeout(ctx, agentResumeTimeout)
		defer cancel()
		ag, err := s.agentFor(ctx, sb.HostID)
		if err != nil {
			return err
		}
		if _, err := ag.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{Id: sb.ID, TeamId: sb.TeamID.String()})); err != nil {
			return agentErr("resume sandbox "+sb.ID, err)
		}
		if sb.MemoryDropped {
			// It booted from its disk: running with memory again.
			if err := s.q.SetSandboxMemoryDropped(ctx, store.SetSandboxMemoryDroppedParams{
				ID: sb.ID, TeamID: sb.TeamID, MemoryDropped: false, Now: s.clk.Now(),
			}); err != nil {
				return fmt.Errorf("record sandbox %s resumed from its disk: %w", sb.ID, err)
			}
		}
		return nil
	})
	if err != nil || row.EndAt == nil {
		return row, err
	}
	// A sandbox with an absolute deadline (E2B's) starts a fresh one, its
	// timeout from now, as the agent restarts its idle timer.
	end := s.clk.Now().Add(time.Duration(row.TimeoutSec) * time.Second)
	row, err = s.q.SetSandboxEndAt(context.WithoutCancel(ctx), store.SetSandboxEndAtParams{
		ID: row.ID, TeamID: row.TeamID, EndAt: &end, OnTimeout: row.OnTimeout, Now: s.clk.Now(),
	})
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record deadline of resumed sandbox %s: %w", sb.ID, err)
	}
	return row, nil
}

// Fork makes count copies of a running or paused sandbox on its host. A
// fork the store cannot record is destroyed again. WithIdempotency makes
// it idempotent: a retry gets the first request's forks.
func (s *Service) Fork(ctx context.Context, team uuid.UUID, id string, count int, opts ...Option) ([]Created, error) {
	idem := optionsOf(opts).idem
	if idem != nil {
		if out, ok, err := s.replayFork(ctx, team, idem); ok {
			return out, err
		}
	}
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return nil, err
	}
	if count < 1 || count > MaxForks {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "count %d: must be 1-%d", count, MaxForks)
	}
	if err := Check(OpFork, sb); err != nil {
		return nil, err
	}
	// Forks restore the source's memory, so they run where it is. The hold
	// counts them in the team's quota and the host's reservations until
	// their rows exist.
	want := quota.Sandboxes(count, sb.Vcpus, sb.MemoryMb, sb.DiskMb)
	var claim []func(*store.Queries) error
	if idem != nil {
		// The key is taken with the hold: a concurrent first request
		// with it waits for this one, and a refused hold leaves no key.
		claim = append(claim, func(q *store.Queries) error { return s.claimKey(ctx, q, team, idemFork, idem, &sb.ID, nil) })
	}
	hold, err := s.holdOnHost(ctx, sb, want, scheduler.Need{VCPUs: int(want.VCPUs), MemoryBytes: want.MemoryMB << 20, DiskBytes: want.DiskMB << 20}, claim...)
	if errors.Is(err, errKeyTaken) {
		out, ok, err := s.replayFork(ctx, team, idem)
		if !ok {
			err = keyVanished(idem)
		}
		return out, err
	}
	if err != nil {
		return nil, err
	}
	defer s.releaseHold(ctx, hold)
	ctx = context.WithoutCancel(ctx)
	actx, cancel := context.WithTimeout(ctx, agentForkTimeout)
	defer cancel()
	ag, err := s.agentFor(actx, sb.HostID)
	if err != nil {
		s.recordKeyFailed(ctx, team, idemFork, idem, err)
		return nil, err
	}
	resp, err := ag.ForkSandbox(actx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{Id: sb.ID, Count: int32(count), TeamId: sb.TeamID.String()}))
	if err != nil {
		err = agentErr("fork sandbox "+sb.ID, err)
		s.recordKeyFailed(ctx, team, idemFork, idem, err)
		return nil, err
	}
	forks, extra := s.acceptForks(sb, resp.Msg.GetSandboxes(), count)
	for _, id := range extra {
		// More than was asked for: not admitted, so not kept.
		if derr := s.destroyOnHost(actx, *sb.HostID, id); derr != nil {
			s.log.Warn("destroy surplus fork", "sandbox_id", sb.ID, "fork_id", id, "host_id", *sb.HostID, "err", derr)
		}
	}
	if idem != nil {
		// The forks and the key naming them in one transaction.
		out, skipped, err := s.recordForks(ctx, sb, forks, idem)
		if err != nil {
			for _, f := range forks {
				if derr := s.destroyOnHost(actx, *sb.HostID, f.GetId()); derr != nil {
					err = errors.Join(err, derr)
				}
			}
			s.recordKeyFailed(ctx, team, idemFork, idem, err)
			return nil, err
		}
		return out, skipped
	}
	out := make([]Created, 0, len(forks))
	var insertErr error
	for _, f := range forks {
		row, err := s.q.InsertSandbox(ctx, s.forkRow(sb, f))
		if err != nil {
			// A fork the store cannot record must not run unseen. An id
			// the store already has is someone else's sandbox: the agent
			// answered nonsense, and it is not destroyed on its word.
			insertErr = errors.Join(insertErr, fmt.Errorf("record fork %s: %w", f.GetId(), err))
			if store.IsUniqueViolation(err) {
				continue
			}
			if derr := s.destroyOnHost(actx, *sb.HostID, f.GetId()); derr != nil {
				insertErr = errors.Join(insertErr, derr)
			}
			continue
		}
		out = append(out, Created{Sandbox: row, AccessToken: f.GetAccessToken()})
	}
	return out, insertErr
}

// forkRow is the row of a fork f of src.
func (s *Service) forkRow(src store.Sandbox, f *hostagentv1.Sandbox) store.InsertSandboxParams {
	return store.InsertSandboxParams{
		ID: f.GetId(), TeamID: src.TeamID, HostID: src.HostID, Template: src.Template, State: string(Running),
		Vcpus: src.Vcpus, MemoryMb: src.MemoryMb, DiskMb: src.DiskMb, TimeoutSec: src.TimeoutSec,
		OnTimeout: src.OnTimeout, Metadata: src.Metadata, Network: src.Network, PublicPorts: src.PublicPorts,
		AccessTokenHash: HashToken(f.GetAccessToken()), AccessTokenSealed: s.seal.seal(f.GetId(), f.GetAccessToken()),
		ForkedFrom: &src.ID, Now: s.clk.Now(),
		EndAt: forkDeadline(src, s.clk.Now()), AutoResume: src.AutoResume, PublicTraffic: src.PublicTraffic,
		TrafficTokenHash: src.TrafficTokenHash,
	}
}

// forkDeadline gives a fork of a sandbox with an absolute deadline the
// same lifetime from now (E2B's forks start with the source's timeout).
func forkDeadline(src store.Sandbox, now time.Time) *time.Time {
	if src.EndAt == nil {
		return nil
	}
	end := now.Add(time.Duration(src.TimeoutSec) * time.Second)
	return &end
}

// agentSandboxIDRE is what a sandbox id an agent chooses (a fork's) must
// look like: the agent's own rule (1-40 of a-z, 0-9 and '-', here not
// starting with '-'), which also keeps it a safe path segment and key.
var agentSandboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// acceptForks sorts the forks an agent reports into those to record (well
// formed, distinct, at most the count asked for) and the ids of surplus
// ones to destroy again. Malformed ids are dropped and logged, never
// stored nor sent back to an agent: an agent is not trusted to name rows.
func (s *Service) acceptForks(src store.Sandbox, got []*hostagentv1.Sandbox, count int) (keep []*hostagentv1.Sandbox, extra []string) {
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

// Timeout is a sandbox's timeout setting.
type Timeout struct {
	// Sec is the idle timeout the agent applies (1-86400).
	Sec int
	// OnTimeout is kill or pause; "" keeps the current one.
	OnTimeout string
	// EndAt, when set, is also an absolute deadline (E2B's timeout); nil
	// clears any deadline (the idle timeout alone applies, /v1's model).
	EndAt *time.Time
}

// SetTimeout changes a live sandbox's timeout on its agent and in the
// store.
func (s *Service) SetTimeout(ctx context.Context, team uuid.UUID, id string, t Timeout) (store.Sandbox, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	on := sb.OnTimeout
	if t.OnTimeout != "" {
		on = t.OnTimeout
	}
	if err := Check(OpSetTimeout, sb); err != nil {
		return store.Sandbox{}, err
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.quickCall(ctx, sb, "set timeout of", func(ctx context.Context, ag hostagentv1connect.HostAgentServiceClient) error {
		_, err := ag.SetSandboxTimeout(ctx, connect.NewRequest(&hostagentv1.SetSandboxTimeoutRequest{
			Id: sb.ID, TimeoutMs: int64(t.Sec) * 1000, OnTimeout: onTimeoutProto(on),
		}))
		return err
	}); err != nil {
		return store.Sandbox{}, err
	}
	row, err := s.q.SetSandboxTimeout(ctx, store.SetSandboxTimeoutParams{
		ID: sb.ID, TeamID: sb.TeamID, TimeoutSec: int32(t.Sec), OnTimeout: on, Now: s.clk.Now(),
	})
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record timeout of sandbox %s: %w", sb.ID, err)
	}
	if t.EndAt != nil || row.EndAt != nil {
		row, err = s.q.SetSandboxEndAt(ctx, store.SetSandboxEndAtParams{ID: sb.ID, TeamID: sb.TeamID, EndAt: t.EndAt, OnTimeout: on, Now: s.clk.Now()})
		if err != nil {
			return store.Sandbox{}, fmt.Errorf("record deadline of sandbox %s: %w", sb.ID, err)
		}
	}
	return row, nil
}

// SetNetwork replaces a live sandbox's egress policy.
func (s *Service) SetNetwork(ctx context.Context, team uuid.UUID, id string, pol Network) (store.Sandbox, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if err := CheckNetwork(&pol); err != nil {
		return store.Sandbox{}, err
	}
	if err := Check(OpSetNetwork, sb); err != nil {
		return store.Sandbox{}, err
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.quickCall(ctx, sb, "set network of", func(ctx context.Context, ag hostagentv1connect.HostAgentServiceClient) error {
		_, err := ag.SetSandboxNetwork(ctx, connect.NewRequest(&hostagentv1.SetSandboxNetworkRequest{Id: sb.ID, Network: pol.proto()}))
		return err
	}); err != nil {
		return store.Sandbox{}, err
	}
	raw, err := json.Marshal(pol)
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("encode network policy: %w", err)
	}
	row, err := s.q.SetSandboxNetwork(ctx, store.SetSandboxNetworkParams{ID: sb.ID, TeamID: sb.TeamID, Network: raw, Now: s.clk.Now()})
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record network of sandbox %s: %w", sb.ID, err)
	}
	return row, nil
}

// Metrics reads a live sandbox's usage from its agent.
func (s *Service) Metrics(ctx context.Context, team uuid.UUID, id string, r MetricsRange) (*hostagentv1.GetSandboxMetricsResponse, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return nil, err
	}
	if err := Check(OpMetrics, sb); err != nil {
		return nil, err
	}
	var out *hostagentv1.GetSandboxMetricsResponse
	err = s.quickCall(ctx, sb, "read the metrics of", func(ctx context.Context, ag hostagentv1connect.HostAgentServiceClient) error {
		resp, err := ag.GetSandboxMetrics(ctx, connect.NewRequest(metricsRequest(sb.ID, r)))
		if err == nil {
			out = resp.Msg
		}
		return err
	})
	return out, err
}

// quickCall runs one quick call (what: "set timeout of", …) on sb's agent
// under agentQuickTimeout, its error wrapped with what was being done and
// the agent's kind.
func (s *Service) quickCall(ctx context.Context, sb store.Sandbox, what string,
	call func(context.Context, hostagentv1connect.HostAgentServiceClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, agentQuickTimeout)
	defer cancel()
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return err
	}
	if err := call(ctx, ag); err != nil {
		return agentErr(what+" sandbox "+sb.ID, err)
	}
	return nil
}

// MetricsRange bounds the history a metrics read returns (zero: all the
// agent keeps).
type MetricsRange struct {
	Start, End time.Time
}

// MaxLogTail is the most of a console log one request returns (the agent's
// own cap, agent.MaxConsoleTail).
const MaxLogTail int64 = 1 << 20

// Logs returns the tail of a sandbox's serial console (tail 0: the most
// allowed).
func (s *Service) Logs(ctx context.Context, team uuid.UUID, id string, tail int64) ([]byte, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return nil, err
	}
	if sb.HostID == nil {
		return nil, WrongState(sb, OpLogs)
	}
	if err := Check(OpLogs, sb); err != nil {
		return nil, err
	}
	var console []byte
	if err := s.quickCall(ctx, sb, "read the logs of", func(ctx context.Context, ag hostagentv1connect.HostAgentServiceClient) error {
		resp, err := ag.GetSandboxLogs(ctx, connect.NewRequest(&hostagentv1.GetSandboxLogsRequest{Id: sb.ID, TailBytes: tail}))
		if err == nil {
			console = resp.Msg.GetConsole()
		}
		return err
	}); err != nil {
		return nil, err
	}
	// The agent may be a tenant's own machine (BYOC): never pass on more
	// than the tail asked for, whatever it sent (its reply is already
	// capped by the agent pool).
	limit := tail
	if limit <= 0 {
		limit = MaxLogTail
	}
	if int64(len(console)) > limit {
		console = console[int64(len(console))-limit:]
	}
	return console, nil
}

// Delete destroys a sandbox on its host and records it stopped; deleting a
// stopped sandbox succeeds.
func (s *Service) Delete(ctx context.Context, team uuid.UUID, id string) error {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return err
	}
	return s.deleteRow(ctx, sb)
}

func (s *Service) deleteRow(ctx context.Context, sb store.Sandbox) error {
	if State(sb.State) == Stopped {
		return nil
	}
	if sb.HostID != nil {
		actx, cancel := detached(ctx, agentDestroyTimeout)
		defer cancel()
		if err := s.destroyOnHost(actx, *sb.HostID, sb.ID); err != nil {
			// A missing sandbox's host is unreachable; the host monitor
			// reconciles whatever it still holds when it returns.
			if !(State(sb.State) == Missing && errors.Is(err, errdefs.ErrUnavailable)) {
				return err
			}
		}
	}
	if _, err := s.q.StopSandbox(context.WithoutCancel(ctx), store.StopSandboxParams{ID: sb.ID, TeamID: sb.TeamID, Now: s.clk.Now()}); err != nil && !store.IsNoRows(err) {
		return fmt.Errorf("record sandbox %s stopped: %w", sb.ID, err)
	}
	return nil
}

// Snapshot makes a team template named name from a running or paused
// sandbox. The template row is inserted first: it reserves the name (a
// concurrent snapshot with the same name gets 409) and is removed again
// if the agent fails. WithIdempotency makes it idempotent: a retry gets
// the first request's template.
func (s *Service) Snapshot(ctx context.Context, team uuid.UUID, id, name string, opts ...Option) (store.Template, error) {
	idem := optionsOf(opts).idem
	if idem != nil {
		if t, ok, err := s.replaySnapshot(ctx, team, idem); ok {
			return t, err
		}
	}
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Template{}, err
	}
	if err := Check(OpSnapshot, sb); err != nil {
		return store.Template{}, err
	}
	builtins, err := s.q.BuiltinTemplates(ctx, sb.TeamID)
	if err != nil {
		return store.Template{}, fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == name {
			return store.Template{}, errdefs.New(errdefs.ErrAlreadyExists, "template %q is a built-in template's name", name)
		}
	}
	ctx = context.WithoutCancel(ctx)
	// The row counts against max_templates: admitted and inserted in one
	// transaction under the team's quota lock, with the idempotency key
	// that names it.
	var tmpl store.Template
	err = s.inTx(ctx, func(q *store.Queries) error {
		if idem != nil {
			// First: a concurrent first request with the key waits here,
			// before it could collide on the template's name.
			if err := s.claimKey(ctx, q, team, idemSnapshot, idem, &sb.ID, nil); err != nil {
				return err
			}
		}
		if err := s.quota.Admit(ctx, q, team, quota.Amount{Templates: 1}); err != nil {
			return err
		}
		t, err := q.InsertTemplate(ctx, store.InsertTemplateParams{
			TeamID: &team, Name: name, AgentName: "t-" + RandomName(20), HostID: sb.HostID,
			SourceSandboxID: &sb.ID, Snapshot: true, Vcpus: sb.Vcpus, MemoryMb: sb.MemoryMb, Now: s.clk.Now(),
		})
		if store.IsNoRows(err) {
			return errdefs.New(errdefs.ErrAlreadyExists, "template %q already exists", name)
		}
		if err != nil {
			return fmt.Errorf("insert template %s: %w", name, err)
		}
		if idem != nil {
			if err := q.SetIdempotencyKeyTemplate(ctx, store.SetIdempotencyKeyTemplateParams{
				TemplateID: &t.ID, Now: s.clk.Now(), TeamID: team, Op: idemSnapshot, Key: idem.Key,
			}); err != nil {
				return fmt.Errorf("record template of idempotency key: %w", err)
			}
		}
		tmpl = t
		return nil
	})
	if errors.Is(err, errKeyTaken) {
		t, ok, err := s.replaySnapshot(ctx, team, idem)
		if !ok {
			err = keyVanished(idem)
		}
		return t, err
	}
	if err != nil {
		return store.Template{}, err
	}
	actx, cancel := context.WithTimeout(ctx, agentSnapshotTimeout)
	defer cancel()
	resp, err := s.snapshotOnHost(actx, sb, tmpl.AgentName)
	if err != nil {
		// The row goes and the key records the failure together.
		if derr := s.inTx(ctx, func(q *store.Queries) error {
			if err := q.DeleteTemplate(ctx, tmpl.ID); err != nil {
				return err
			}
			if idem != nil {
				return s.finishKey(ctx, q, team, idemSnapshot, idem, nil, err)
			}
			return nil
		}); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove template row %s: %w", name, derr))
		}
		return store.Template{}, err
	}
	tmpl.DiskBytes = resp.GetTemplate().GetDiskBytes()
	if err := s.inTx(ctx, func(q *store.Queries) error {
		if err := q.SetTemplateDiskBytes(ctx, store.SetTemplateDiskBytesParams{ID: tmpl.ID, DiskBytes: tmpl.DiskBytes}); err != nil {
			return err
		}
		if idem != nil {
			return s.finishKey(ctx, q, team, idemSnapshot, idem, nil, nil)
		}
		return nil
	}); err != nil {
		return store.Template{}, fmt.Errorf("record template %s size: %w", name, err)
	}
	return tmpl, nil
}

func (s *Service) snapshotOnHost(ctx context.Context, sb store.Sandbox, agentName string) (*hostagentv1.SnapshotTemplateResponse, error) {
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

// holdOnHost admits want for sb's team and reserves it on sb's host (which
// must have room for it) in one transaction, under the team's quota lock
// and the placement lock: forks and resumes from hibernation, whose rows or
// states only change once the host answered, still see each other and
// every create. The caller releases the hold once the store records the
// outcome (or the operation failed). hostNeed is what the host check asks
// of the host (a resume's vCPUs are still reserved there, so it needs
// only memory).
func (s *Service) holdOnHost(ctx context.Context, sb store.Sandbox, want quota.Amount, hostNeed scheduler.Need,
	also ...func(*store.Queries) error) (uuid.UUID, error) {
	if sb.HostID == nil {
		return uuid.Nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no host", sb.ID)
	}
	var hold uuid.UUID
	err := s.inTx(ctx, func(q *store.Queries) error {
		// also runs first (an idempotency key's claim, which may wait for
		// a concurrent request's transaction): no lock is held yet.
		for _, f := range also {
			if err := f(q); err != nil {
				return err
			}
		}
		if err := s.quota.Admit(ctx, q, sb.TeamID, want); err != nil {
			return err
		}
		if err := q.LockPlacement(ctx); err != nil {
			return fmt.Errorf("lock placement: %w", err)
		}
		if err := roomOnHost(ctx, q, sb, hostNeed); err != nil {
			return err
		}
		if s.hook != nil {
			s.hook()
		}
		id, err := q.InsertQuotaHold(ctx, store.InsertQuotaHoldParams{
			TeamID: sb.TeamID, HostID: sb.HostID, Sandboxes: want.Sandboxes, Vcpus: want.VCPUs,
			MemoryMb: want.MemoryMB, DiskMb: want.DiskMB, TtlSeconds: holdTTL.Seconds(),
		})
		if err != nil {
			return fmt.Errorf("record hold for sandbox %s: %w", sb.ID, err)
		}
		hold = id
		return nil
	})
	return hold, err
}

// releaseHold ends a hold whatever happened to the request.
func (s *Service) releaseHold(ctx context.Context, id uuid.UUID) {
	if id == uuid.Nil {
		return
	}
	if err := quota.Release(context.WithoutCancel(ctx), s.q, id); err != nil {
		s.log.Error("release quota hold", "hold_id", id, "err", err)
	}
}

// roomOnHost checks that sb's own host can take n more.
func roomOnHost(ctx context.Context, q *store.Queries, sb store.Sandbox, n scheduler.Need) error {
	hosts, err := schedulerHosts(ctx, q, sb.TeamID)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.ID == *sb.HostID {
			if !scheduler.Fits(h, n, scheduler.Policy{}) {
				return errdefs.New(errdefs.ErrUnavailable, "no host with room: sandbox %s's host cannot take %d vCPUs, %d MiB of memory and %d MiB of disk more",
					sb.ID, n.VCPUs, n.MemoryBytes>>20, n.DiskBytes>>20)
			}
			return nil
		}
	}
	return errdefs.New(errdefs.ErrUnavailable, "sandbox %s's host is not online", sb.ID)
}

func pauseRequest(id string, o PauseOptions) *hostagentv1.PauseSandboxRequest {
	return &hostagentv1.PauseSandboxRequest{Id: id, DropMemory: o.DropMemory}
}

// metricsRequest asks for the current reading and the history within r
// (zero ends: unbounded).
func metricsRequest(id string, r MetricsRange) *hostagentv1.GetSandboxMetricsRequest {
	req := &hostagentv1.GetSandboxMetricsRequest{Id: id}
	if !r.Start.IsZero() {
		req.StartUnixMs = r.Start.UnixMilli()
	}
	if !r.End.IsZero() {
		req.EndUnixMs = r.End.UnixMilli()
	}
	return req
}
