// Package sandboxes is the sandbox lifecycle behind every front door (the
// /v1 REST API and the E2B-compatible routes): placement and host
// retries, state changes along the table in state.go, quota holds, and
// the bookkeeping of failures. Callers decode and encode; this package
// decides.
//
// Each state change checks the sandbox's state in the store, calls its
// host agent, then records the new state with a statement guarded by the
// states it may leave, so the store never shows a transition that did not
// happen. Agent calls that change state run detached from the caller's
// context: a client that hangs up must not leave the store behind the host.
package sandboxes

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/store"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// How long each kind of agent call may take. Creating and forking boot or
// restore microVMs, which under TCG takes tens of seconds; the rest are
// quick. Each is sized to its operation rather than one blanket limit.
const (
	agentCreateTimeout   = 3 * time.Minute
	agentForkTimeout     = 5 * time.Minute
	agentSnapshotTimeout = 5 * time.Minute
	agentResumeTimeout   = 2 * time.Minute
	agentPauseTimeout    = time.Minute
	// Hibernating writes the guest's memory (up to its size) to disk.
	agentHibernateTimeout = 5 * time.Minute
	agentDestroyTimeout   = time.Minute
	agentQuickTimeout     = 20 * time.Second
	// A template copy moves its image and memory snapshot between hosts.
	agentCopyTimeout = 10 * time.Minute
)

// holdTTL bounds how long a hold left by a crashed replica counts: longer
// than the slowest operation a hold covers (a fork).
const holdTTL = 10 * time.Minute

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Agents reaches the host agents' RPC (mTLS between hosts).
type Agents interface {
	RPC(ctx context.Context, hostID string) (hostagentv1connect.HostAgentServiceClient, error)
}

// Config is what the service runs on.
type Config struct {
	Pool   *pgxpool.Pool
	Agents Agents
	Clock  Clock
	Logger *slog.Logger
	// TeamLimits are the default per-team quotas (0: unlimited).
	TeamLimits quota.Limits
	// TokenSecret derives the key that seals sandboxes' access tokens in
	// the store (the control plane's own secret); empty: tokens are kept
	// as hashes only and cannot be given again.
	TokenSecret []byte
	// PlacementHook, when set (tests only), runs between reading the
	// hosts' reservations and recording the new sandbox's or hold, to
	// widen that window.
	PlacementHook func()
	// Faults are the fault points tests arm (internal/faultpoint); nil
	// in production.
	Faults *faultpoint.Points
}

// Service is the sandbox lifecycle over the store and the host agents.
type Service struct {
	pool   *pgxpool.Pool
	q      *store.Queries
	agents Agents
	clk    Clock
	log    *slog.Logger
	quota  quota.Enforcer
	hook   func()
	seal   *sealer
	faults *faultpoint.Points

	// buildCtx ends the template builds this replica runs (Close);
	// builds tracks them.
	buildCtx   context.Context
	stopBuilds context.CancelFunc
	builds     sync.WaitGroup
}

// New returns a Service.
func New(c Config) *Service {
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		pool: c.Pool, q: store.New(c.Pool), agents: c.Agents, clk: c.Clock, log: c.Logger,
		quota: quota.Enforcer{Defaults: c.TeamLimits}, hook: c.PlacementHook, seal: newSealer(c.TokenSecret),
		faults: c.Faults,
	}
	s.buildCtx, s.stopBuilds = context.WithCancel(context.Background())
	return s
}

// Close cancels the template builds this replica runs (their hosts stop
// them; they are recorded failed) and waits for them to end.
func (s *Service) Close() {
	s.stopBuilds()
	s.builds.Wait()
}

// SetPlacementHook replaces the placement hook (tests only).
func (s *Service) SetPlacementHook(h func()) { s.hook = h }

// Get loads a team's sandbox; another team's answers exactly like a
// missing one.
func (s *Service) Get(ctx context.Context, team uuid.UUID, id string) (store.Sandbox, error) {
	sb, err := s.q.GetTeamSandbox(ctx, store.GetTeamSandboxParams{ID: id, TeamID: team})
	return sb, store.Found(err, "sandbox", id)
}

// agentFor returns the RPC client of the agent on host.
func (s *Service) agentFor(ctx context.Context, host *uuid.UUID) (hostagentv1connect.HostAgentServiceClient, error) {
	if host == nil {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox has no host")
	}
	if s.agents == nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "no host agents configured")
	}
	c, err := s.agents.RPC(ctx, host.String())
	if err != nil {
		return nil, fmt.Errorf("reach host %s: %w", host, err)
	}
	return c, nil
}

// agentErr wraps an error from an agent call with what was being done and
// its errdefs kind, so the answer matches what the agent said.
func agentErr(what string, err error) error {
	return fmt.Errorf("%s: %w", what, errdefs.FromConnect(err))
}

// detached is the context agent calls that change state run under.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// inTx runs fn in one transaction.
func (s *Service) inTx(ctx context.Context, fn func(q *store.Queries) error) error {
	return store.InTx(ctx, s.pool, fn)
}

// destroyOnHost destroys a sandbox on its host; one the host does not hold
// is already destroyed.
func (s *Service) destroyOnHost(ctx context.Context, host uuid.UUID, id string) error {
	ag, err := s.agentFor(ctx, &host)
	if err != nil {
		return err
	}
	_, err = ag.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{Id: id}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return agentErr("destroy sandbox "+id, err)
	}
	return nil
}

// NewID returns 20 random characters of lowercase base32: 100 bits, and an
// id the agent accepts (1-40 of [a-z0-9-]).
func NewID() string { return RandomName(20) }

// RandomName is n random characters of lowercase base32.
func RandomName(n int) string {
	b := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return s[:n]
}

// HashToken is how access tokens are stored (nil for none).
func HashToken(token string) []byte {
	if token == "" {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	return h[:]
}
