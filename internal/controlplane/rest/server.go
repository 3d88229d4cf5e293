// Package rest is the control plane's REST and WebSocket API (api/openapi.yaml):
// routing, authentication, per-team authorization, and the handlers that
// turn requests into store queries and host-agent calls.
//
// Every handler authorizes against the caller's team (Principal.TeamID):
// another team's resource answers 404 exactly like a missing one.
package rest

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/controlplane/ratelimit"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/faultpoint"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Agents reaches the host agents (mTLS between hosts).
type Agents interface {
	// RPC returns a client for the agent on host hostID.
	RPC(ctx context.Context, hostID string) (hostagentv1connect.HostAgentServiceClient, error)
	// HTTP returns a client and base URL for the agent's guest proxy:
	// {base}/sandboxes/{id}/envd/... reaches the sandbox's envd (the agent
	// adds envd's access token) and {base}/sandboxes/{id}/ports/{port}/...
	// a guest port. See internal/agent/rpc.
	HTTP(ctx context.Context, hostID string) (*http.Client, string, error)
}

// Deps is what the API needs from the rest of the control plane.
type Deps struct {
	Pool    *pgxpool.Pool
	Logger  *slog.Logger
	Clock   Clock
	Metrics *prometheus.Registry
	Agents  Agents
	// JWTSecret signs session tokens (WRENN_JWT_SECRET).
	JWTSecret []byte
	// Domain serves the sandbox proxy at {port}-{sandboxID}.{Domain}.
	Domain string
	// AllowedOrigins for WebSocket upgrades; empty: same host only.
	AllowedOrigins []string
	// RateLimit is requests per second per API key or user (burst 2x); 0: default.
	RateLimit float64
	// Registry serves HostRegistryService (agents register and heartbeat).
	Registry http.Handler
	// RegistryPath is where Registry is mounted.
	RegistryPath string
	// CACertHash is the cluster CA's fingerprint ("sha256:<hex>"): host
	// registration tokens carry it for the agent to pin (internal/capin).
	// Empty: tokens without a pin.
	CACertHash string
	// BodyWindow and BodyMinBytes: a request body must deliver
	// BodyMinBytes per BodyWindow spent waiting for it, else 408
	// (defaults 1 KiB per 10 s). WriteTimeout bounds each response write
	// (default 30 s). Zero: the default; tests shorten them.
	BodyWindow   time.Duration
	BodyMinBytes int
	WriteTimeout time.Duration
	// TrustedProxies (WRENN_TRUSTED_PROXIES): only from these peers is
	// ClientIPHeader (WRENN_CLIENT_IP_HEADER, default X-Forwarded-For)
	// believed for per-address limits.
	TrustedProxies []netip.Prefix
	ClientIPHeader string
	// HashGate bounds concurrent password hashes; nil: GOMAXPROCS at once,
	// 4 waiters per slot.
	HashGate *auth.HashGate
	// Signup is who may sign up (WRENN_SIGNUP); "": SignupClosed.
	Signup SignupMode
	// TeamLimits are the default per-team quotas (WRENN_TEAM_MAX_*; 0:
	// unlimited); a platform admin may override them per team.
	TeamLimits quota.Limits
	// AutoResume resumes a paused sandbox of team (the sandbox service's
	// resume) when proxied traffic reaches it and it asked for that
	// (auto_resume, memory kept). nil: no resume on traffic.
	AutoResume func(ctx context.Context, team uuid.UUID, sandboxID string) error
	// EnvdAccessToken returns a sandbox's envd access token in clear, to
	// check E2B's pre-signed /files URLs (which are signed with it).
	// nil: such URLs are refused (the store keeps only the token's hash).
	EnvdAccessToken func(ctx context.Context, sandboxID string) (string, error)
	// Faults are the sandbox service's fault points (tests only; nil in
	// production).
	Faults *faultpoint.Points
	// UI serves the dashboard (internal/controlplane/webui): it gets the
	// GET and HEAD requests outside /v1 that no API route matches and it
	// says it Serves. nil: those answer 404 like any unknown route.
	UI UI
}

// UI is the dashboard's handler (internal/controlplane/webui.Handler).
type UI interface {
	http.Handler
	// Serves reports whether the app answers r, a GET or HEAD outside /v1
	// that no API route matched.
	Serves(r *http.Request) bool
}

// Server is the REST API.
type Server struct {
	deps Deps
	q    *store.Queries
	log  *slog.Logger
	clk  Clock

	// limiters are the rate limiters by kind (see newLimiter): made once
	// per server, however often the router is built.
	limMu    sync.Mutex
	limiters map[string]*limiter

	// Abuse limits of the public auth routes (see mountPublicAuth).
	clientIP *ratelimit.ClientIP
	hashes   *auth.HashGate
	// loginByAccount delays guessing at one account from anywhere;
	// loginByAccountAddr, stricter, from one client address (so a
	// victim elsewhere is not locked out by the first).
	loginByAccount     *ratelimit.LoginThrottle
	loginByAccountAddr *ratelimit.LoginThrottle

	// sandboxes is the sandbox lifecycle every sandbox route calls.
	sandboxes *sandboxes.Service

	// execOutput bounds the output synchronous execs hold at once.
	execOutput byteBudget

	// resumes shares one traffic-triggered resume per sandbox among the
	// requests waiting on it (envdproxy.go).
	resumes resumeGroup
}

// New returns a Server.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = systemClock{}
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	if d.HashGate == nil {
		d.HashGate = auth.NewHashGate(0, -1, 0)
	}
	s := &Server{deps: d, q: store.New(d.Pool), log: d.Logger, clk: d.Clock, limiters: map[string]*limiter{}}
	s.sandboxes = sandboxes.New(sandboxes.Config{
		Pool: d.Pool, Agents: agentsRPC(d.Agents), Clock: d.Clock, Logger: d.Logger, TeamLimits: d.TeamLimits,
		TokenSecret: d.JWTSecret, Faults: d.Faults,
	})
	// The proxy's hooks default to the service: traffic resumes a paused
	// sandbox that asked for it, and pre-signed file URLs are checked
	// against its sealed token.
	if s.deps.AutoResume == nil {
		s.deps.AutoResume = func(ctx context.Context, team uuid.UUID, id string) error {
			_, err := s.sandboxes.Resume(ctx, team, id)
			return err
		}
	}
	if s.deps.EnvdAccessToken == nil {
		s.deps.EnvdAccessToken = s.sandboxes.AccessTokenByID
	}
	s.clientIP = ratelimit.NewClientIP(d.TrustedProxies, d.ClientIPHeader)
	s.hashes = d.HashGate
	s.loginByAccountAddr = ratelimit.NewLoginThrottle(d.Clock)
	s.loginByAccount = ratelimit.NewLoginThrottle(d.Clock)
	s.loginByAccount.FreeFailures = accountFreeFailures
	return s
}

// agentsRPC is the service's view of the agents; a nil Agents stays nil
// (the service then answers unavailable) rather than a typed nil.
func agentsRPC(a Agents) sandboxes.Agents {
	if a == nil {
		return nil
	}
	return a
}

// Sandboxes is the sandbox service the API calls (the control plane's
// lifetime sweeper runs on the same one).
func (s *Server) Sandboxes() *sandboxes.Service { return s.sandboxes }

// Handler returns the HTTP handler for every route.
// Slow-client deadlines apply to every request, the host-name sandbox
// proxy included.
func (s *Server) Handler() http.Handler { return s.slowClients(s.hostProxy(s.routes())) }

// routes builds the router (tests walk it to enumerate every route).
func (s *Server) routes() *chi.Mux {
	r := chi.NewRouter()
	r.Use(s.recoverPanics, s.logRequests, checkRequestText(r))
	s.mountMeta(r)
	if s.deps.Registry != nil {
		r.Mount(s.deps.RegistryPath, s.deps.Registry)
	}
	// E2B's API lives at the root (its SDKs append paths to E2B_API_URL).
	s.mountE2B(r)
	r.Route("/v1", func(r chi.Router) {
		s.mountPublicAuth(r)
		s.mountPortProxy(r)
		r.Group(func(r chi.Router) {
			r.Use(s.authenticate, s.rateLimit)
			s.mountIdentity(r)
			s.mountHosts(r)
			s.mountSandboxes(r)
			s.mountProcesses(r)
			s.mountFiles(r)
			s.mountTemplates(r)
			s.mountTemplateBuilds(r)
			s.mountLimits(r)
		})
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if s.deps.UI != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			r.URL.Path != "/v1" && !strings.HasPrefix(r.URL.Path, "/v1/") && s.deps.UI.Serves(r) {
			s.deps.UI.ServeHTTP(w, r)
			return
		}
		writeError(w, r, errNotFoundRoute)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, errMethodNotAllowed)
	})
	return r
}
