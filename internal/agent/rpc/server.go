// Package rpc is the host agent's network face towards the control plane:
// the HostAgentService Connect handler over the sandbox manager, the HTTP
// reverse proxy to each guest's envd and ports, both on one http.Handler,
// and the mutual-TLS configuration that admits only the control plane.
package rpc

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/agent"
	"github.com/wrenn/wrenn/internal/agent/hostinfo"
	"github.com/wrenn/wrenn/internal/envdclient"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/network"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Manager is what the server needs from the sandbox manager
// (*agent.Manager).
type Manager interface {
	Create(ctx context.Context, req agent.CreateRequest) (agent.Info, error)
	Get(ctx context.Context, id string) (agent.Info, error)
	List(ctx context.Context) ([]agent.Info, error)
	Destroy(ctx context.Context, id string) error
	Pause(ctx context.Context, id string) error
	// PauseDropMemory is the filesystem-only pause (drop_memory).
	PauseDropMemory(ctx context.Context, id string) error
	// The *As calls carry the team the control plane acts for: the
	// manager refuses a sandbox or snapshot template another team owns.
	ResumeAs(ctx context.Context, team, id string) error
	Hibernate(ctx context.Context, id string) error
	ForkAs(ctx context.Context, team, id string, n int) ([]agent.Info, error)
	ForkNamed(ctx context.Context, team, id string, ids []string) ([]agent.Info, error)
	SetTimeout(ctx context.Context, id string, timeout time.Duration, on agent.OnTimeout) error
	SetNetwork(ctx context.Context, id string, pol network.Policy) error
	Metrics(ctx context.Context, id string) (agent.Metrics, error)
	// MetricsHistory is the sandbox's sampled history in a range (zero
	// times: unbounded), oldest first.
	MetricsHistory(id string, from, to time.Time) ([]agent.MetricsSample, error)
	ConsoleLog(ctx context.Context, id string, n int64) ([]byte, error)
	SnapshotTemplateAs(ctx context.Context, team, id, name string) error
	DeleteTemplateAs(ctx context.Context, team, name string) error
	Templates(ctx context.Context) ([]agent.Template, error)
	// Touch resets a sandbox's idle timer.
	Touch(id string) error
	// RunDone is closed when the sandbox stops running (the guest proxy
	// ends its requests then).
	RunDone(id string) (<-chan struct{}, error)
}

var _ Manager = (*agent.Manager)(nil)

// HostStatus reads the host's specs and usage (*hostinfo.Collector).
type HostStatus interface {
	Collect(ctx context.Context) (hostinfo.Status, error)
}

// MaxForks bounds one ForkSandbox call; the control plane's REST API has
// the same bound.
const MaxForks = 20

// maxRequestBytes bounds a request message: the largest are env and
// metadata maps of a create.
const maxRequestBytes = 4 << 20

// Config wires the handler.
type Config struct {
	Manager Manager
	Host    HostStatus
	// Builds runs template builds; nil: this host builds none.
	Builds Builds
	// Copies exports and imports built templates; nil: none.
	Copies Copies
	Logger *slog.Logger
	// Metrics records requests; nil records nothing.
	Metrics *Metrics
	// EnvdPort is the guest port envd listens on; envdclient.Port when
	// zero. Tests point it at a fake envd.
	EnvdPort int
	// Transport carries proxied requests to guests; a dedicated transport
	// when nil.
	Transport http.RoundTripper
	// TouchInterval is how often a long-lived proxied request (a stream, a
	// WebSocket) counts as use of its sandbox; DefaultTouchInterval when
	// zero.
	TouchInterval time.Duration
}

// NewHandler returns the agent's one handler: HostAgentService under its
// Connect path and the guest proxy under /sandboxes/{id}/envd/ and
// /sandboxes/{id}/ports/{port}/ (see proxy).
func NewHandler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.EnvdPort == 0 {
		cfg.EnvdPort = envdclient.Port
	}
	if cfg.Transport == nil {
		cfg.Transport = newGuestTransport()
	}
	if cfg.TouchInterval == 0 {
		cfg.TouchInterval = DefaultTouchInterval
	}
	s := &service{m: cfg.Manager, host: cfg.Host, builds: cfg.Builds, copies: cfg.Copies}
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(maxRequestBytes),
		connect.WithRecover(func(_ context.Context, spec connect.Spec, _ http.Header, p any) error {
			cfg.Logger.Error("rpc handler panicked", "procedure", spec.Procedure, "panic", p)
			return connect.NewError(connect.CodeInternal, nil)
		}),
		connect.WithInterceptors(cfg.Metrics.interceptor(cfg.Logger)),
	}
	mux := http.NewServeMux()
	path, h := hostagentv1connect.NewHostAgentServiceHandler(s, opts...)
	mux.Handle(path, h)
	p := &proxy{cfg: cfg, errLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug), connectErrors: connect.NewErrorWriter()}
	// Each route also without its trailing slash: the mux would answer that
	// with a redirect to this agent's own URL, which means nothing to the
	// client on the far side of the control plane's proxy.
	mux.HandleFunc("/sandboxes/{id}/envd", p.envd)
	mux.HandleFunc("/sandboxes/{id}/envd/{rest...}", p.envd)
	mux.HandleFunc("/sandboxes/{id}/ports/{port}", p.port)
	mux.HandleFunc("/sandboxes/{id}/ports/{port}/{rest...}", p.port)
	return mux
}

// service implements HostAgentService over the manager.
type service struct {
	m      Manager
	host   HostStatus
	builds Builds
	copies Copies
}

var _ hostagentv1connect.HostAgentServiceHandler = (*service)(nil)

// needID is the check every per-sandbox call starts with.
func needID(field, id string) error {
	if id == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s is required", field)
	}
	return nil
}

func (s *service) CreateSandbox(ctx context.Context, req *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	cr, err := createFromProto(req.Msg)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	info, err := s.m.Create(ctx, cr)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: sandboxToProto(info, true)}), nil
}

func (s *service) GetSandbox(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxRequest]) (*connect.Response[hostagentv1.GetSandboxResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	info, err := s.m.Get(ctx, req.Msg.GetId())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.GetSandboxResponse{Sandbox: sandboxToProto(info, false)}), nil
}

func (s *service) ListSandboxes(ctx context.Context, _ *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	infos, err := s.m.List(ctx)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := &hostagentv1.ListSandboxesResponse{Sandboxes: make([]*hostagentv1.Sandbox, 0, len(infos))}
	for _, in := range infos {
		if in.Purpose != "" {
			continue // a build VM: no tenant's sandbox
		}
		out.Sandboxes = append(out.Sandboxes, sandboxToProto(in, false))
	}
	return connect.NewResponse(out), nil
}

// byID runs a per-sandbox operation that answers nothing.
func byID[Res any](ctx context.Context, field, id string, op func(context.Context, string) error) (*connect.Response[Res], error) {
	if err := needID(field, id); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := op(ctx, id); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(new(Res)), nil
}

func (s *service) DestroySandbox(ctx context.Context, req *connect.Request[hostagentv1.DestroySandboxRequest]) (*connect.Response[hostagentv1.DestroySandboxResponse], error) {
	return byID[hostagentv1.DestroySandboxResponse](ctx, "id", req.Msg.GetId(), s.m.Destroy)
}

func (s *service) PauseSandbox(ctx context.Context, req *connect.Request[hostagentv1.PauseSandboxRequest]) (*connect.Response[hostagentv1.PauseSandboxResponse], error) {
	pause := s.m.Pause
	if req.Msg.GetDropMemory() {
		pause = s.m.PauseDropMemory
	}
	return byID[hostagentv1.PauseSandboxResponse](ctx, "id", req.Msg.GetId(), pause)
}

func (s *service) ResumeSandbox(ctx context.Context, req *connect.Request[hostagentv1.ResumeSandboxRequest]) (*connect.Response[hostagentv1.ResumeSandboxResponse], error) {
	return byID[hostagentv1.ResumeSandboxResponse](ctx, "id", req.Msg.GetId(), func(ctx context.Context, id string) error {
		return s.m.ResumeAs(ctx, req.Msg.GetTeamId(), id)
	})
}

func (s *service) HibernateSandbox(ctx context.Context, req *connect.Request[hostagentv1.HibernateSandboxRequest]) (*connect.Response[hostagentv1.HibernateSandboxResponse], error) {
	return byID[hostagentv1.HibernateSandboxResponse](ctx, "id", req.Msg.GetId(), s.m.Hibernate)
}

func (s *service) ForkSandbox(ctx context.Context, req *connect.Request[hostagentv1.ForkSandboxRequest]) (*connect.Response[hostagentv1.ForkSandboxResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	n := req.Msg.GetCount()
	if n < 1 || n > MaxForks {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "count %d: must be 1-%d", n, MaxForks))
	}
	var (
		infos []agent.Info
		err   error
	)
	if ids := req.Msg.GetIds(); len(ids) > 0 {
		if len(ids) != int(n) {
			return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "ids: %d given for count %d", len(ids), n))
		}
		infos, err = s.m.ForkNamed(ctx, req.Msg.GetTeamId(), req.Msg.GetId(), ids)
	} else {
		infos, err = s.m.ForkAs(ctx, req.Msg.GetTeamId(), req.Msg.GetId(), int(n))
	}
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := &hostagentv1.ForkSandboxResponse{Sandboxes: make([]*hostagentv1.Sandbox, 0, len(infos))}
	for _, in := range infos {
		out.Sandboxes = append(out.Sandboxes, sandboxToProto(in, true))
	}
	return connect.NewResponse(out), nil
}

func (s *service) SetSandboxTimeout(ctx context.Context, req *connect.Request[hostagentv1.SetSandboxTimeoutRequest]) (*connect.Response[hostagentv1.SetSandboxTimeoutResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	d, err := msDuration(req.Msg.GetTimeoutMs())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if d == 0 {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "timeout_ms must be positive"))
	}
	// Unspecified keeps the sandbox's current action.
	on, err := onTimeoutFromProto(req.Msg.GetOnTimeout())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := s.m.SetTimeout(ctx, req.Msg.GetId(), d, on); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.SetSandboxTimeoutResponse{}), nil
}

func (s *service) SetSandboxNetwork(ctx context.Context, req *connect.Request[hostagentv1.SetSandboxNetworkRequest]) (*connect.Response[hostagentv1.SetSandboxNetworkResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	// Unlike at create, a missing policy here is a caller's bug, not a
	// request to cut the sandbox off.
	if req.Msg.GetNetwork() == nil {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "network is required"))
	}
	pol, err := policyFromProto(req.Msg.GetNetwork())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	if err := s.m.SetNetwork(ctx, req.Msg.GetId(), pol); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.SetSandboxNetworkResponse{}), nil
}

func (s *service) GetSandboxMetrics(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxMetricsRequest]) (*connect.Response[hostagentv1.GetSandboxMetricsResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	from, to, err := msRange(req.Msg.GetStartUnixMs(), req.Msg.GetEndUnixMs())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	m, err := s.m.Metrics(ctx, req.Msg.GetId())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	// After "now": a sample taken meanwhile is then in the history too.
	hist, err := s.m.MetricsHistory(req.Msg.GetId(), from, to)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := metricsToProto(m)
	out.Samples = samplesToProto(hist)
	return connect.NewResponse(out), nil
}

func (s *service) GetSandboxLogs(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxLogsRequest]) (*connect.Response[hostagentv1.GetSandboxLogsResponse], error) {
	if err := needID("id", req.Msg.GetId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	n := req.Msg.GetTailBytes()
	if n < 0 || n > agent.MaxConsoleTail {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrInvalidArgument, "tail_bytes %d: must be 0-%d", n, agent.MaxConsoleTail))
	}
	b, err := s.m.ConsoleLog(ctx, req.Msg.GetId(), n)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.GetSandboxLogsResponse{Console: b}), nil
}

func (s *service) SnapshotTemplate(ctx context.Context, req *connect.Request[hostagentv1.SnapshotTemplateRequest]) (*connect.Response[hostagentv1.SnapshotTemplateResponse], error) {
	if err := cmp.Or(needID("sandbox_id", req.Msg.GetSandboxId()), needID("template", req.Msg.GetTemplate())); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	name := req.Msg.GetTemplate()
	if err := s.m.SnapshotTemplateAs(ctx, req.Msg.GetTeamId(), req.Msg.GetSandboxId(), name); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	// The manager answers only success; describe the new template as the
	// listing does (its size), falling back to what is known.
	out := &hostagentv1.Template{Name: name, Snapshot: true}
	if ts, err := s.m.Templates(ctx); err == nil {
		if i := slices.IndexFunc(ts, func(t agent.Template) bool { return t.Name == name }); i >= 0 {
			out = hostinfo.Template(ts[i])
		}
	}
	return connect.NewResponse(&hostagentv1.SnapshotTemplateResponse{Template: out}), nil
}

func (s *service) DeleteTemplate(ctx context.Context, req *connect.Request[hostagentv1.DeleteTemplateRequest]) (*connect.Response[hostagentv1.DeleteTemplateResponse], error) {
	return byID[hostagentv1.DeleteTemplateResponse](ctx, "name", req.Msg.GetName(), func(ctx context.Context, name string) error {
		return s.m.DeleteTemplateAs(ctx, req.Msg.GetTeamId(), name)
	})
}

func (s *service) ListTemplates(ctx context.Context, _ *connect.Request[hostagentv1.ListTemplatesRequest]) (*connect.Response[hostagentv1.ListTemplatesResponse], error) {
	ts, err := s.m.Templates(ctx)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := &hostagentv1.ListTemplatesResponse{Templates: make([]*hostagentv1.Template, 0, len(ts))}
	for _, t := range ts {
		out.Templates = append(out.Templates, hostinfo.Template(t))
	}
	return connect.NewResponse(out), nil
}

func (s *service) GetHostStatus(ctx context.Context, _ *connect.Request[hostagentv1.GetHostStatusRequest]) (*connect.Response[hostagentv1.GetHostStatusResponse], error) {
	st, err := s.host.Collect(ctx)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.GetHostStatusResponse{Specs: st.Specs, Usage: st.Usage, Templates: st.Templates}), nil
}
