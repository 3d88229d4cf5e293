package sandboxes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/scheduler"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
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
	s.faults.Hit(ctx, faultpoint.CPTransitionDone)
	var row store.Sandbox
	err := s.retryStore(ctx, func(ctx context.Context) error {
		var err error
		row, err = s.q.TransitionSandbox(ctx, store.TransitionSandboxParams{
			ID: sb.ID, TeamID: sb.TeamID, FromStates: Strings(From(op)), ToState: string(To(op)), Now: s.clk.Now(),
		})
		return err
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

// Hibernate writes a running or paused sandbox's memory and device state
// to its host's disk and stops its VM: it then holds no RAM and no vCPUs
// (they count again for its team and its host only once it is resumed),
// and a resume brings it back with its processes, memory and files as
// they were. A running sandbox is paused first; if hibernating then
// fails, it stays paused (and is recorded so).
func (s *Service) Hibernate(ctx context.Context, team uuid.UUID, id string) (store.Sandbox, error) {
	sb, err := s.Get(ctx, team, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if sb.MemoryDropped {
		return store.Sandbox{}, errdefs.New(errdefs.ErrFailedPrecondition,
			"cannot hibernate sandbox %s: it was paused without its memory (keep_memory false); there is nothing to hibernate", sb.ID)
	}
	paused := false
	row, err := s.transitionRow(ctx, sb, OpHibernate, func(ctx context.Context, sb store.Sandbox) error {
		if State(sb.State) == Running {
			if err := s.pauseOnHost(ctx, sb, PauseOptions{}); err != nil {
				return err
			}
			paused = true
		}
		ctx, cancel := context.WithTimeout(ctx, agentHibernateTimeout)
		defer cancel()
		ag, err := s.agentFor(ctx, sb.HostID)
		if err != nil {
			return err
		}
		if _, err := ag.HibernateSandbox(ctx, connect.NewRequest(&hostagentv1.HibernateSandboxRequest{Id: sb.ID})); err != nil {
			return agentErr("hibernate sandbox "+sb.ID, err)
		}
		return nil
	})
	if err != nil && paused {
		// The pause stands: say so rather than leave the row running
		// until the host's event arrives.
		if _, terr := s.q.TransitionSandbox(context.WithoutCancel(ctx), store.TransitionSandboxParams{
			ID: sb.ID, TeamID: sb.TeamID, FromStates: Strings([]State{Running}), ToState: string(Paused), Now: s.clk.Now(),
		}); terr != nil && !store.IsNoRows(terr) {
			s.log.Warn("record sandbox paused after a failed hibernate", "sandbox_id", sb.ID, "err", terr)
		}
	}
	return row, err
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

// Fork makes count copies of a running or paused sandbox on its host. The
// forks' rows are written (starting, named by the control plane) before
// the host makes them, in the transaction that admits them, so a fork
// always has a record: a control plane that dies mid-fork leaves rows the
// sweeper rolls back, never VMs nobody knows. A fork the host did not make
// is stopped again. WithIdempotency makes it idempotent: a retry gets the
// first request's forks.
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
	if sb.HostID == nil {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no host", sb.ID)
	}
	host := *sb.HostID
	ids := make([]string, count)
	for i := range ids {
		ids[i] = NewID()
	}
	// Forks restore the source's memory, so they run where it is.
	want := quota.Sandboxes(count, sb.Vcpus, sb.MemoryMb, sb.DiskMb)
	err = s.inTx(ctx, func(q *store.Queries) error {
		// The key first: a concurrent first request with it waits here
		// until this transaction ends, then replays the forks it names.
		if idem != nil {
			if err := s.claimKey(ctx, q, team, idemFork, idem, &sb.ID, nil); err != nil {
				return err
			}
			if err := q.SetIdempotencyKeyForks(ctx, store.SetIdempotencyKeyForksParams{
				ForkIds: ids, Now: s.clk.Now(), TeamID: team, Op: idemFork, Key: idem.Key,
			}); err != nil {
				return fmt.Errorf("record forks of idempotency key: %w", err)
			}
		}
		if err := s.quota.Admit(ctx, q, sb.TeamID, want); err != nil {
			return err
		}
		if err := q.LockPlacement(ctx); err != nil {
			return fmt.Errorf("lock placement: %w", err)
		}
		if err := roomOnHost(ctx, q, sb, scheduler.Need{VCPUs: int(want.VCPUs), MemoryBytes: want.MemoryMB << 20, DiskBytes: want.DiskMB << 20}); err != nil {
			return err
		}
		if s.hook != nil {
			s.hook()
		}
		now := s.clk.Now()
		for _, fid := range ids {
			if _, err := q.InsertSandbox(ctx, store.InsertSandboxParams{
				ID: fid, TeamID: sb.TeamID, HostID: &host, Template: sb.Template, State: string(Starting),
				Vcpus: sb.Vcpus, MemoryMb: sb.MemoryMb, DiskMb: sb.DiskMb, TimeoutSec: sb.TimeoutSec,
				OnTimeout: sb.OnTimeout, Metadata: sb.Metadata, Network: sb.Network, PublicPorts: sb.PublicPorts,
				ForkedFrom: &sb.ID, Now: now,
				EndAt: forkDeadline(sb, now), AutoResume: sb.AutoResume, PublicTraffic: sb.PublicTraffic,
				TrafficTokenHash: sb.TrafficTokenHash,
			}); err != nil {
				return fmt.Errorf("record fork %s of sandbox %s: %w", fid, sb.ID, err)
			}
		}
		return nil
	})
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
	ctx = context.WithoutCancel(ctx)
	stopLease := s.leaseSandboxes(ctx, "fork sandbox "+sb.ID, ids)
	defer stopLease()
	actx, cancel := context.WithTimeout(ctx, agentForkTimeout)
	defer cancel()
	made, err := s.forkOnHost(actx, sb, ids)
	if err != nil {
		// The key's outcome before the rows leave starting: a retry
		// waiting on them then finds it.
		s.recordKeyFailed(ctx, team, idemFork, idem, err)
		s.stopForks(ctx, host, ids, made, err)
		return nil, err
	}
	s.faults.Hit(ctx, faultpoint.CPForkStarted)
	out := make([]Created, 0, count)
	var errs error
	for _, fid := range ids {
		token := made[fid]
		row, err := s.markRunning(ctx, sb.TeamID, fid, token)
		if err != nil {
			// Given up by the sweeper or deleted meanwhile, or the store
			// is away for longer than storeRetry: the fork must not run
			// unrecorded (the sweeper destroys it too if this fails).
			errs = errors.Join(errs, fmt.Errorf("record fork %s running: %w", fid, err))
			if derr := s.destroyOnHost(actx, host, fid); derr != nil {
				errs = errors.Join(errs, derr)
			}
			continue
		}
		out = append(out, Created{Sandbox: row, AccessToken: token})
	}
	if len(out) == 0 && errs != nil {
		s.recordKeyFailed(ctx, team, idemFork, idem, errs)
	}
	return out, errs
}

// forkOnHost asks the source's host for forks named ids and returns their
// access tokens by id. All or nothing: a host that answers with other or
// missing forks fails the fork (what it did make is destroyed again).
func (s *Service) forkOnHost(ctx context.Context, sb store.Sandbox, ids []string) (map[string]string, error) {
	ag, err := s.agentFor(ctx, sb.HostID)
	if err != nil {
		return nil, err
	}
	resp, err := ag.ForkSandbox(ctx, connect.NewRequest(&hostagentv1.ForkSandboxRequest{
		Id: sb.ID, Count: int32(len(ids)), TeamId: sb.TeamID.String(), Ids: ids,
	}))
	if err != nil {
		return nil, agentErr("fork sandbox "+sb.ID, err)
	}
	made, unknown := s.acceptForks(sb, resp.Msg.GetSandboxes(), ids)
	for _, id := range unknown {
		// Not a fork asked for: not admitted, so not kept.
		if derr := s.destroyOnHost(ctx, *sb.HostID, id); derr != nil {
			s.log.Warn("destroy a fork not asked for", "sandbox_id", sb.ID, "fork_id", id, "host_id", *sb.HostID, "err", derr)
		}
	}
	if len(made) != len(ids) {
		return made, errdefs.New(errdefs.ErrUnavailable, "fork sandbox %s: the host made %d of %d forks", sb.ID, len(made), len(ids))
	}
	return made, nil
}

// stopForks rolls back a fork that failed: the forks the host made are
// destroyed, and every row is stopped with the reason.
func (s *Service) stopForks(ctx context.Context, host uuid.UUID, ids []string, made map[string]string, cause error) {
	dctx, cancel := detached(ctx, agentDestroyTimeout)
	defer cancel()
	for _, fid := range ids {
		if _, ok := made[fid]; ok {
			if err := s.destroyOnHost(dctx, host, fid); err != nil {
				s.log.Warn("destroy fork of a failed fork", "fork_id", fid, "host_id", host, "err", err)
			}
		}
		err := s.retryStore(ctx, func(ctx context.Context) error {
			_, err := s.q.StopStartingSandbox(ctx, store.StopStartingSandboxParams{ID: fid, Error: "fork failed: " + cause.Error(), Now: s.clk.Now()})
			return err
		})
		if err != nil {
			// The sweeper fails it once its lease runs out.
			s.log.Warn("record failed fork", "fork_id", fid, "err", err)
		}
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

// acceptForks sorts the forks a host reports into those asked for (by id,
// with their access tokens) and the ids of others to destroy again. Ids
// that are not well formed are dropped and logged, never stored nor sent
// back to an agent: an agent is not trusted to name rows.
func (s *Service) acceptForks(src store.Sandbox, got []*hostagentv1.Sandbox, asked []string) (made map[string]string, unknown []string) {
	made = make(map[string]string, len(asked))
	for _, f := range got {
		id := f.GetId()
		switch {
		case slices.Contains(asked, id):
			made[id] = f.GetAccessToken()
		case !agentSandboxIDRE.MatchString(id) || id == src.ID:
			s.log.Warn("agent reported a fork with a malformed id or the source's; ignored", "sandbox_id", src.ID, "host_id", src.HostID, "fork_id", fmt.Sprintf("%.64q", id))
		default:
			s.log.Warn("agent reported a fork not asked for; destroying it", "sandbox_id", src.ID, "host_id", src.HostID, "fork_id", id)
			unknown = append(unknown, id)
		}
	}
	return made, unknown
}

// agentSandboxIDRE is what a sandbox id an agent reports must look like:
// the agent's own rule (1-40 of a-z, 0-9 and '-', here not starting with
// '-'), which also keeps it a safe path segment and key.
var agentSandboxIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

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
	s.faults.Hit(ctx, faultpoint.CPDeleteDestroyed)
	err := s.retryStore(ctx, func(ctx context.Context) error {
		_, err := s.q.StopSandbox(ctx, store.StopSandboxParams{ID: sb.ID, TeamID: sb.TeamID, Now: s.clk.Now()})
		return err
	})
	if err != nil && !store.IsNoRows(err) {
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
	// transaction under the team's quota lock.
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
			SourceSandboxID: &sb.ID, Snapshot: true, Vcpus: sb.Vcpus, MemoryMb: sb.MemoryMb,
			Status: TemplatePending, Now: s.clk.Now(),
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
	stopLease := s.leaseTemplate(ctx, tmpl.ID)
	defer stopLease()
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
	s.faults.Hit(ctx, faultpoint.CPSnapshotStarted)
	tmpl.DiskBytes = resp.GetTemplate().GetDiskBytes()
	var n int64
	err = s.retryStore(ctx, func(ctx context.Context) error {
		var err error
		n, err = s.q.MarkTemplateReady(ctx, store.MarkTemplateReadyParams{ID: tmpl.ID, DiskBytes: tmpl.DiskBytes, Now: s.clk.Now()})
		return err
	})
	if err != nil {
		// The host has it; the sweeper finds it there and completes it.
		return store.Template{}, fmt.Errorf("record template %s ready: %w", name, err)
	}
	if n == 0 {
		// The sweeper gave it up (its lease ran out) or it was deleted:
		// the host's copy has no row any more.
		if derr := s.deleteTemplateOnHost(actx, sb.HostID, tmpl.AgentName, &sb.TeamID); derr != nil {
			s.log.Warn("delete a template given up meanwhile", "template", tmpl.AgentName, "err", derr)
		}
		err := errdefs.New(errdefs.ErrFailedPrecondition, "template %q was deleted while it was being made", name)
		s.recordKeyFailed(ctx, team, idemSnapshot, idem, err)
		return store.Template{}, err
	}
	tmpl.Status = TemplateReady
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
func (s *Service) holdOnHost(ctx context.Context, sb store.Sandbox, want quota.Amount, hostNeed scheduler.Need) (uuid.UUID, error) {
	if sb.HostID == nil {
		return uuid.Nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s has no host", sb.ID)
	}
	var hold uuid.UUID
	err := s.inTx(ctx, func(q *store.Queries) error {
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
