package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

// EventReporter is the control plane's ReportSandboxEvents (the
// HostRegistryService client); tests fake it.
type EventReporter interface {
	ReportSandboxEvents(context.Context, *connect.Request[hostagentv1.ReportSandboxEventsRequest]) (*connect.Response[hostagentv1.ReportSandboxEventsResponse], error)
}

// Defaults of EventSenderConfig.
const (
	DefaultMaxPendingEvents = 10_000
	DefaultEventBatch       = 500
	DefaultEventMinBackoff  = 250 * time.Millisecond
	DefaultEventMaxBackoff  = 30 * time.Second
)

// EventSenderConfig tunes an EventSender; zero fields take the defaults.
type EventSenderConfig struct {
	// MaxPending bounds the queue, counted in sandboxes (it keeps one
	// event per sandbox). An event for another sandbox beyond it is
	// dropped and counted; the next heartbeat repairs what it would have.
	MaxPending int
	// Batch bounds the events of one request.
	Batch int
	// MinBackoff and MaxBackoff bound the wait between failed sends,
	// doubling from the one to the other.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// EventSender pushes the manager's sandbox events to the control plane in
// the background. It implements agent.EventSink: SandboxEvent never
// blocks; the queue keeps the latest event of each sandbox (a newer state
// supersedes an older one, which the control plane would ignore anyway),
// and a failed send is retried with backoff while the control plane is
// unreachable. Events queue from the start, before Run: recovery's reports
// go out once the host's credentials are known.
type EventSender struct {
	cfg EventSenderConfig

	mu      sync.Mutex
	pending map[string]agent.Event
	dropped int
	wake    chan struct{}
}

var _ agent.EventSink = (*EventSender)(nil)

// NewEventSender returns an EventSender.
func NewEventSender(cfg EventSenderConfig) *EventSender {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPendingEvents
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultEventBatch
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultEventMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultEventMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &EventSender{cfg: cfg, pending: map[string]agent.Event{}, wake: make(chan struct{}, 1)}
}

// SandboxEvent queues ev, replacing an older queued event of the same
// sandbox.
func (s *EventSender) SandboxEvent(ev agent.Event) {
	if ev.Version <= 0 {
		// A record from before versions: the control plane could not
		// order it. Heartbeats carry its state once it changes.
		return
	}
	s.mu.Lock()
	s.queueLocked(ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// queueLocked keeps ev unless a newer event of its sandbox is queued.
func (s *EventSender) queueLocked(ev agent.Event) {
	cur, ok := s.pending[ev.ID]
	switch {
	case ok && cur.Version > ev.Version:
		return
	case !ok && len(s.pending) >= s.cfg.MaxPending:
		s.dropped++
		return
	}
	s.pending[ev.ID] = ev
}

// Pending is the number of queued events (tests, metrics).
func (s *EventSender) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Run sends queued events with the credentials id holds until ctx ends.
func (s *EventSender) Run(ctx context.Context, client EventReporter, id *Identity) {
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
		}
		err := s.flush(ctx, client, id)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
			s.cfg.Logger.Warn("sending sandbox events failed; retrying", "err", err, "pending", s.Pending(), "retry_in", backoff)
		default:
			backoff = 0
		}
	}
}

// flush sends everything queued, a batch at a time. A batch that fails
// goes back in the queue (behind anything newer that arrived meanwhile).
func (s *EventSender) flush(ctx context.Context, client EventReporter, id *Identity) error {
	for {
		batch, dropped := s.take()
		if dropped > 0 {
			s.cfg.Logger.Warn("sandbox event queue full: events dropped; heartbeats will repair them", "dropped", dropped)
		}
		if len(batch) == 0 {
			return nil
		}
		err := s.send(ctx, client, id, batch)
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			// Sending it again cannot help; heartbeats carry the states.
			s.cfg.Logger.Error("the control plane refused sandbox events; dropped", "err", err, "events", len(batch))
			continue
		}
		if err != nil {
			s.requeue(batch)
			return err
		}
	}
}

// take removes up to Batch queued events, oldest first.
func (s *EventSender) take() ([]agent.Event, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped := s.dropped
	s.dropped = 0
	if len(s.pending) == 0 {
		return nil, dropped
	}
	all := make([]agent.Event, 0, len(s.pending))
	for _, ev := range s.pending {
		all = append(all, ev)
	}
	slices.SortFunc(all, func(a, b agent.Event) int { return a.At.Compare(b.At) })
	if len(all) > s.cfg.Batch {
		all = all[:s.cfg.Batch]
	}
	for _, ev := range all {
		delete(s.pending, ev.ID)
	}
	return all, dropped
}

func (s *EventSender) requeue(batch []agent.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range batch {
		s.queueLocked(ev)
	}
}

func (s *EventSender) send(ctx context.Context, client EventReporter, id *Identity, batch []agent.Event) error {
	creds, ok := id.Credentials()
	if !ok {
		return errors.New("no host credentials")
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	msg := &hostagentv1.ReportSandboxEventsRequest{Events: make([]*hostagentv1.SandboxEvent, len(batch))}
	for i, ev := range batch {
		msg.Events[i] = EventProto(ev)
	}
	req := connect.NewRequest(msg)
	setBearer(req.Header(), creds.Token)
	if _, err := client.ReportSandboxEvents(ctx, req); err != nil {
		return fmt.Errorf("report %d sandbox events: %w", len(batch), err)
	}
	return nil
}

// MaxEventMessage is the longest event message the control plane takes
// (its hostreg refuses the whole batch over a longer one).
const MaxEventMessage = 1024

// EventProto converts an event for the wire. A longer message (an error
// carrying a console tail) is cut to MaxEventMessage bytes on a UTF-8
// boundary, keeping its head, where the cause is: over the limit the
// control plane refused the whole batch, every sandbox's event in it lost
// until the next heartbeat (found by make soak).
func EventProto(ev agent.Event) *hostagentv1.SandboxEvent {
	msg := ev.Message
	if len(msg) > MaxEventMessage {
		const more = " [...]"
		cut := MaxEventMessage - len(more)
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + more
	}
	return &hostagentv1.SandboxEvent{
		SandboxId: ev.ID, State: hostinfo.SandboxState(ev.State), MemoryDropped: ev.MemoryDropped,
		Reason: reasonProto(ev.Reason), Message: msg, AtUnixMs: ev.At.UnixMilli(), Version: ev.Version,
	}
}

func reasonProto(r agent.Reason) hostagentv1.SandboxEventReason {
	switch r {
	case agent.ReasonRequested:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REQUESTED
	case agent.ReasonReaperPause:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_PAUSE
	case agent.ReasonReaperKill:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_REAPER_KILL
	case agent.ReasonVMMExited:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_VMM_EXITED
	case agent.ReasonOOM:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_OOM
	case agent.ReasonGuestPoweroff:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_GUEST_POWEROFF
	case agent.ReasonRecovered:
		return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_RECOVERED
	}
	return hostagentv1.SandboxEventReason_SANDBOX_EVENT_REASON_UNSPECIFIED
}
