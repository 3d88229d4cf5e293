package hostreg

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// maxEvents bounds one ReportSandboxEvents request. The agent coalesces
// its queue to one event per sandbox, so a batch is at most its sandboxes.
const maxEvents = maxListItems

// maxEventMessage bounds an event's message (kept in sandboxes.error).
const maxEventMessage = 1024

// ReportSandboxEvents applies the state changes an agent pushes as they
// happen. Each is one guarded update (store.ApplySandboxEvent): only a
// sandbox on the authenticated host, only a version newer than the last
// report applied, never a stopped or starting row. Events that do not
// apply (old, duplicated, another host's, unknown) are dropped silently:
// the agent has nothing to retry.
func (s *Service) ReportSandboxEvents(ctx context.Context, req *connect.Request[hostagentv1.ReportSandboxEventsRequest]) (*connect.Response[hostagentv1.ReportSandboxEventsResponse], error) {
	now := s.clk.Now()
	host, _, err := s.authHost(ctx, req.Header(), now)
	if err != nil {
		return nil, s.fail(err)
	}
	evs := req.Msg.GetEvents()
	if err := checkEvents(evs); err != nil {
		return nil, s.fail(err)
	}
	log := s.log.With("host_id", host.ID)
	for _, ev := range evs {
		if ev.GetVersion() <= 0 || ev.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_STARTING {
			// Unversioned: it cannot be ordered against what the store
			// has; heartbeats carry the sandbox's state. Starting (a
			// resume from hibernation or disk under way) is on its way
			// to running or back, and that event follows with a newer
			// version.
			continue
		}
		st := sandboxes.FromAgent(ev.GetState())
		row, err := s.q.ApplySandboxEvent(ctx, storeEvent(ev, st, host.ID, now))
		if errors.Is(err, pgx.ErrNoRows) {
			log.Debug("sandbox event not applied (stale, unknown, stopped or starting)",
				"sandbox_id", ev.GetSandboxId(), "state", st, "version", ev.GetVersion(), "reason", reasonName(ev.GetReason()))
			continue
		}
		if err != nil {
			return nil, s.fail(fmt.Errorf("apply event of sandbox %s: %w", ev.GetSandboxId(), err))
		}
		attrs := []any{"sandbox_id", row.ID, "team_id", row.TeamID, "from", row.PreviousState, "to", row.State,
			"reason", reasonName(ev.GetReason()), "version", ev.GetVersion()}
		if ev.GetMessage() != "" {
			attrs = append(attrs, "message", ev.GetMessage())
		}
		if at := ev.GetAtUnixMs(); at > 0 {
			attrs = append(attrs, "at", time.UnixMilli(at).UTC())
		}
		log.Info("sandbox event applied", attrs...)
	}
	return connect.NewResponse(&hostagentv1.ReportSandboxEventsResponse{}), nil
}

func storeEvent(ev *hostagentv1.SandboxEvent, st sandboxes.State, host uuid.UUID, now time.Time) store.ApplySandboxEventParams {
	msg := ev.GetMessage()
	if st == sandboxes.Error && msg == "" {
		msg = "the host reported the sandbox failed (" + reasonName(ev.GetReason()) + ")"
	}
	return store.ApplySandboxEventParams{
		ID: ev.GetSandboxId(), HostID: host, State: string(st), Version: ev.GetVersion(),
		Error: msg, MemoryDropped: ev.GetMemoryDropped(), Now: now,
	}
}

// reasonName is the reason without its enum prefix ("reaper_pause").
func reasonName(r hostagentv1.SandboxEventReason) string {
	const prefix = len("SANDBOX_EVENT_REASON_")
	name := r.String()
	if len(name) > prefix {
		name = name[prefix:]
	}
	return strings.ToLower(name)
}

func checkEvents(evs []*hostagentv1.SandboxEvent) error {
	if len(evs) > maxEvents {
		return errdefs.New(errdefs.ErrInvalidArgument, "events: over %d", maxEvents)
	}
	for _, ev := range evs {
		if id := ev.GetSandboxId(); id == "" || len(id) > maxString {
			return errdefs.New(errdefs.ErrInvalidArgument, "events: a sandbox_id is empty or over %d bytes", maxString)
		}
		if len(ev.GetMessage()) > maxEventMessage {
			return errdefs.New(errdefs.ErrInvalidArgument, "events: sandbox %s: message over %d bytes", ev.GetSandboxId(), maxEventMessage)
		}
	}
	return nil
}
