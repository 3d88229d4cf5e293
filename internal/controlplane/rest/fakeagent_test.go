package rest

// A fake host agent for the sandbox routes: an in-process
// HostAgentService that keeps sandboxes in a map, and the agent's guest
// proxy in front of a REAL envd (internal/envd in dev mode, on loopback)
// and a fake guest web server. Every sandbox of a fake agent shares that
// one envd. Tests choose failures with hooks.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/envd"
	"github.com/wrenn/wrenn/internal/errdefs"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
	"github.com/wrenn/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// fakeSandbox is what a fake agent holds for one sandbox.
type fakeSandbox struct {
	state   hostagentv1.SandboxState
	token   string
	network *hostagentv1.NetworkPolicy
	timeout int64
	dropped bool
}

// fakeAgent is one host's agent.
type fakeAgent struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	HostID uuid.UUID
	URL    string
	Client *http.Client

	mu        sync.Mutex
	sandboxes map[string]*fakeSandbox
	templates map[string]bool
	calls     map[string]int
	// failCreate, when set, decides the fate of each CreateSandbox.
	failCreate func(*hostagentv1.CreateSandboxRequest) error
	// teams is the team_id the last call of each method carried; owners
	// the team each snapshot template was made for (the real agent's
	// check: another team's create from it is PermissionDenied).
	teams  map[string]string
	owners map[string]string
	// forkAnswer, when set, is what ForkSandbox answers (a misbehaving
	// agent); every id in it but the source's is then held as a sandbox.
	forkAnswer func(*hostagentv1.ForkSandboxRequest) []*hostagentv1.Sandbox
	// build, when set, runs BuildTemplate (template_builds_test.go);
	// uploads are the bytes of each build's uploaded context.
	build   func(ctx context.Context, req *hostagentv1.BuildTemplateRequest, send func(*hostagentv1.BuildTemplateResponse) error) error
	uploads map[string]int64
	// lastTpl is the template of the last CreateSandbox, lastMem its
	// memory_mb.
	lastTpl string
	lastMem int32
}

// lastTemplate is the template the last CreateSandbox named.
func (a *fakeAgent) lastTemplate() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastTpl
}

// setTeam records the team a call carried; called with a.mu held.
func (a *fakeAgent) setTeam(method, team string) {
	if a.teams == nil {
		a.teams = map[string]string{}
	}
	a.teams[method] = team
}

// Team returns the team_id the last call of method carried.
func (a *fakeAgent) Team(method string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.teams[method]
}

func (a *fakeAgent) count(method string) {
	a.mu.Lock()
	a.calls[method]++
	a.mu.Unlock()
}

// Calls returns how often method was called.
func (a *fakeAgent) Calls(method string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[method]
}

// Has reports whether the agent holds sandbox id.
func (a *fakeAgent) Has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.sandboxes[id]
	return ok
}

// State is the state the agent holds sandbox id in (unspecified if none).
func (a *fakeAgent) State(id string) hostagentv1.SandboxState {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sb, ok := a.sandboxes[id]; ok {
		return sb.state
	}
	return hostagentv1.SandboxState_SANDBOX_STATE_UNSPECIFIED
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *fakeAgent) CreateSandbox(_ context.Context, req *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	a.count("CreateSandbox")
	a.mu.Lock()
	hook := a.failCreate
	a.mu.Unlock()
	if hook != nil {
		if err := hook(req.Msg); err != nil {
			return nil, errdefs.ToConnect(err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setTeam("CreateSandbox", req.Msg.GetTeamId())
	a.lastTpl, a.lastMem = req.Msg.GetTemplate(), req.Msg.GetMemoryMb()
	if owner, ok := a.owners[req.Msg.GetTemplate()]; ok && owner != req.Msg.GetTeamId() {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("template %s belongs to another team", req.Msg.GetTemplate()))
	}
	if _, ok := a.sandboxes[req.Msg.GetId()]; ok {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("sandbox %s exists", req.Msg.GetId()))
	}
	sb := &fakeSandbox{state: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, token: newToken(), network: req.Msg.GetNetwork(), timeout: req.Msg.GetTimeoutMs()}
	a.sandboxes[req.Msg.GetId()] = sb
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: &hostagentv1.Sandbox{
		Id: req.Msg.GetId(), Template: req.Msg.GetTemplate(), State: sb.state, AccessToken: sb.token,
	}}), nil
}

func (a *fakeAgent) lookup(id string) (*fakeSandbox, error) {
	sb, ok := a.sandboxes[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s not found", id))
	}
	return sb, nil
}

func (a *fakeAgent) DestroySandbox(_ context.Context, req *connect.Request[hostagentv1.DestroySandboxRequest]) (*connect.Response[hostagentv1.DestroySandboxResponse], error) {
	a.count("DestroySandbox")
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.lookup(req.Msg.GetId()); err != nil {
		return nil, err
	}
	delete(a.sandboxes, req.Msg.GetId())
	return connect.NewResponse(&hostagentv1.DestroySandboxResponse{}), nil
}

// move changes a sandbox's state if it is in from.
func (a *fakeAgent) move(id string, from, to hostagentv1.SandboxState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	sb, err := a.lookup(id)
	if err != nil {
		return err
	}
	if sb.state != from {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s is %s", id, sb.state))
	}
	sb.state = to
	return nil
}

func (a *fakeAgent) PauseSandbox(_ context.Context, req *connect.Request[hostagentv1.PauseSandboxRequest]) (*connect.Response[hostagentv1.PauseSandboxResponse], error) {
	a.count("PauseSandbox")
	if err := a.move(req.Msg.GetId(), hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, hostagentv1.SandboxState_SANDBOX_STATE_PAUSED); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.sandboxes[req.Msg.GetId()].dropped = req.Msg.GetDropMemory()
	a.mu.Unlock()
	return connect.NewResponse(&hostagentv1.PauseSandboxResponse{}), nil
}

// droppedMemory reports whether the sandbox's last pause dropped its
// memory.
func (a *fakeAgent) droppedMemory(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	sb, ok := a.sandboxes[id]
	return ok && sb.dropped
}

func (a *fakeAgent) ResumeSandbox(_ context.Context, req *connect.Request[hostagentv1.ResumeSandboxRequest]) (*connect.Response[hostagentv1.ResumeSandboxResponse], error) {
	a.count("ResumeSandbox")
	a.mu.Lock()
	a.setTeam("ResumeSandbox", req.Msg.GetTeamId())
	a.mu.Unlock()
	if err := a.move(req.Msg.GetId(), hostagentv1.SandboxState_SANDBOX_STATE_PAUSED, hostagentv1.SandboxState_SANDBOX_STATE_RUNNING); err != nil {
		if err := a.move(req.Msg.GetId(), hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED, hostagentv1.SandboxState_SANDBOX_STATE_RUNNING); err != nil {
			return nil, err
		}
	}
	return connect.NewResponse(&hostagentv1.ResumeSandboxResponse{}), nil
}

// HibernateSandbox, as the real agent, takes a paused sandbox only.
func (a *fakeAgent) HibernateSandbox(_ context.Context, req *connect.Request[hostagentv1.HibernateSandboxRequest]) (*connect.Response[hostagentv1.HibernateSandboxResponse], error) {
	a.count("HibernateSandbox")
	if err := a.move(req.Msg.GetId(), hostagentv1.SandboxState_SANDBOX_STATE_PAUSED, hostagentv1.SandboxState_SANDBOX_STATE_HIBERNATED); err != nil {
		return nil, err
	}
	return connect.NewResponse(&hostagentv1.HibernateSandboxResponse{}), nil
}

func (a *fakeAgent) ForkSandbox(_ context.Context, req *connect.Request[hostagentv1.ForkSandboxRequest]) (*connect.Response[hostagentv1.ForkSandboxResponse], error) {
	a.count("ForkSandbox")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setTeam("ForkSandbox", req.Msg.GetTeamId())
	src, err := a.lookup(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	if a.forkAnswer != nil {
		out := a.forkAnswer(req.Msg)
		for _, f := range out {
			if f.GetId() != req.Msg.GetId() {
				a.sandboxes[f.GetId()] = &fakeSandbox{state: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, token: f.GetAccessToken(), network: src.network}
			}
		}
		return connect.NewResponse(&hostagentv1.ForkSandboxResponse{Sandboxes: out}), nil
	}
	var out []*hostagentv1.Sandbox
	for i := range req.Msg.GetCount() {
		id := "fork-" + newToken()[:12]
		if ids := req.Msg.GetIds(); int(i) < len(ids) {
			id = ids[i] // named by the control plane, as a real agent does
		}
		sb := &fakeSandbox{state: hostagentv1.SandboxState_SANDBOX_STATE_RUNNING, token: newToken(), network: src.network}
		a.sandboxes[id] = sb
		out = append(out, &hostagentv1.Sandbox{Id: id, State: sb.state, AccessToken: sb.token})
	}
	return connect.NewResponse(&hostagentv1.ForkSandboxResponse{Sandboxes: out}), nil
}

func (a *fakeAgent) SetSandboxTimeout(_ context.Context, req *connect.Request[hostagentv1.SetSandboxTimeoutRequest]) (*connect.Response[hostagentv1.SetSandboxTimeoutResponse], error) {
	a.count("SetSandboxTimeout")
	a.mu.Lock()
	defer a.mu.Unlock()
	sb, err := a.lookup(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	sb.timeout = req.Msg.GetTimeoutMs()
	return connect.NewResponse(&hostagentv1.SetSandboxTimeoutResponse{}), nil
}

func (a *fakeAgent) SetSandboxNetwork(_ context.Context, req *connect.Request[hostagentv1.SetSandboxNetworkRequest]) (*connect.Response[hostagentv1.SetSandboxNetworkResponse], error) {
	a.count("SetSandboxNetwork")
	a.mu.Lock()
	defer a.mu.Unlock()
	sb, err := a.lookup(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	sb.network = req.Msg.GetNetwork()
	return connect.NewResponse(&hostagentv1.SetSandboxNetworkResponse{}), nil
}

func (a *fakeAgent) GetSandboxMetrics(_ context.Context, req *connect.Request[hostagentv1.GetSandboxMetricsRequest]) (*connect.Response[hostagentv1.GetSandboxMetricsResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.lookup(req.Msg.GetId()); err != nil {
		return nil, err
	}
	// Two samples of history, 5 s apart, filtered by the range like the
	// real agent's.
	var samples []*hostagentv1.MetricsSample
	for i, at := range []int64{1_700_000_000_000, 1_700_000_005_000} {
		if (req.Msg.GetStartUnixMs() == 0 || at >= req.Msg.GetStartUnixMs()) && (req.Msg.GetEndUnixMs() == 0 || at <= req.Msg.GetEndUnixMs()) {
			samples = append(samples, &hostagentv1.MetricsSample{TimeUnixMs: at, CpuCount: 2, CpuUsedPct: float64(10 * (i + 1)), MemUsedBytes: 100 << 20, MemTotalBytes: 512 << 20, DiskUsedBytes: 1 << 30, DiskTotalBytes: 2 << 30})
		}
	}
	return connect.NewResponse(&hostagentv1.GetSandboxMetricsResponse{VmmMemoryBytes: 123 << 20, GuestCpuUsedPct: 12.5, Samples: samples}), nil
}

func (a *fakeAgent) GetSandboxLogs(_ context.Context, req *connect.Request[hostagentv1.GetSandboxLogsRequest]) (*connect.Response[hostagentv1.GetSandboxLogsResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.lookup(req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&hostagentv1.GetSandboxLogsResponse{Console: []byte("console of " + req.Msg.GetId())}), nil
}

func (a *fakeAgent) SnapshotTemplate(_ context.Context, req *connect.Request[hostagentv1.SnapshotTemplateRequest]) (*connect.Response[hostagentv1.SnapshotTemplateResponse], error) {
	a.count("SnapshotTemplate")
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.lookup(req.Msg.GetSandboxId()); err != nil {
		return nil, err
	}
	a.templates[req.Msg.GetTemplate()] = true
	a.setTeam("SnapshotTemplate", req.Msg.GetTeamId())
	if a.owners == nil {
		a.owners = map[string]string{}
	}
	a.owners[req.Msg.GetTemplate()] = req.Msg.GetTeamId()
	return connect.NewResponse(&hostagentv1.SnapshotTemplateResponse{Template: &hostagentv1.Template{
		Name: req.Msg.GetTemplate(), Snapshot: true, DiskBytes: 4096,
	}}), nil
}

func (a *fakeAgent) ListTemplates(context.Context, *connect.Request[hostagentv1.ListTemplatesRequest]) (*connect.Response[hostagentv1.ListTemplatesResponse], error) {
	a.count("ListTemplates")
	a.mu.Lock()
	defer a.mu.Unlock()
	out := &hostagentv1.ListTemplatesResponse{}
	for name := range a.templates {
		out.Templates = append(out.Templates, &hostagentv1.Template{Name: name, Snapshot: true, DiskBytes: 4096})
	}
	return connect.NewResponse(out), nil
}

func (a *fakeAgent) DeleteTemplate(_ context.Context, req *connect.Request[hostagentv1.DeleteTemplateRequest]) (*connect.Response[hostagentv1.DeleteTemplateResponse], error) {
	a.count("DeleteTemplate")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setTeam("DeleteTemplate", req.Msg.GetTeamId())
	if !a.templates[req.Msg.GetName()] {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("template %s not found", req.Msg.GetName()))
	}
	delete(a.templates, req.Msg.GetName())
	return connect.NewResponse(&hostagentv1.DeleteTemplateResponse{}), nil
}

// fakeAgents implements Agents over fake agents keyed by host id.
type fakeAgents struct {
	mu     sync.Mutex
	agents map[uuid.UUID]*fakeAgent
}

func (f *fakeAgents) get(hostID string) (*fakeAgent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, err := uuid.Parse(hostID)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrNotFound, "host %q not found", hostID)
	}
	a, ok := f.agents[id]
	if !ok {
		return nil, errdefs.New(errdefs.ErrUnavailable, "host %s unreachable", hostID)
	}
	return a, nil
}

func (f *fakeAgents) RPC(_ context.Context, hostID string) (hostagentv1connect.HostAgentServiceClient, error) {
	a, err := f.get(hostID)
	if err != nil {
		return nil, err
	}
	return hostagentv1connect.NewHostAgentServiceClient(a.Client, a.URL), nil
}

func (f *fakeAgents) HTTP(_ context.Context, hostID string) (*http.Client, string, error) {
	a, err := f.get(hostID)
	if err != nil {
		return nil, "", err
	}
	return a.Client, a.URL, nil
}

// guestEnv is the machinery behind fake agents: one real envd and one
// guest web server, shared by every fake agent of a test.
type guestEnv struct {
	envdURL *url.URL
	web     *httptest.Server
	user    string
}

// startGuest runs a real envd on loopback (dev mode, as the current user)
// and a guest web server until the test ends.
func startGuest(t testing.TB) *guestEnv {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- envd.Run(ctx, envd.Config{Listener: ln, Dev: true, User: u.Username}, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("envd: %v", err)
		}
	})
	eu, _ := url.Parse("http://" + ln.Addr().String())
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(eu.String() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("envd never became healthy: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A clean home: login shells must not run this machine's profile
	// (which may be slow or wait on its stdin).
	initBody := fmt.Sprintf(`{"envVars":{"HOME":%q}}`, t.TempDir())
	resp, err := http.Post(eu.String()+"/init", "application/json", strings.NewReader(initBody))
	if err != nil {
		t.Fatalf("envd init: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("envd init: %s", resp.Status)
	}
	web := httptest.NewServer(http.HandlerFunc(guestWeb))
	t.Cleanup(web.Close)
	return &guestEnv{envdURL: eu, web: web, user: u.Username}
}

// guestWeb is the guest's web server: /echo answers with what it got,
// /ws echoes WebSocket messages, /stream writes lines as they come.
func guestWeb(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	case "/cookies":
		// What a hostile guest page does with cookies (cookiesession.go).
		w.Header().Add("Set-Cookie", "wrenn_session=guest-chosen; Path=/")
		w.Header().Add("Set-Cookie", "WRENN_TEAM=guest-chosen; Path=/")
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, "cookie=%q", r.Header.Get("Cookie"))
	default:
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s?%s host=%s auth=%q token=%q key=%q body=%s",
			r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Get("Authorization"),
			r.Header.Get("X-Access-Token"), r.Header.Get("X-API-Key"), body)
	}
}

// newFakeAgent serves a fake agent for host id.
func (g *guestEnv) newFakeAgent(t testing.TB, hostID uuid.UUID) *fakeAgent {
	t.Helper()
	a := &fakeAgent{HostID: hostID, sandboxes: map[string]*fakeSandbox{}, templates: map[string]bool{}, calls: map[string]int{}}
	mux := http.NewServeMux()
	path, h := hostagentv1connect.NewHostAgentServiceHandler(a)
	mux.Handle(path, h)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(g.user+":"))
	envdProxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			prefix := "/sandboxes/" + pr.In.PathValue("id") + "/envd"
			pr.SetURL(g.envdURL)
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			// The tests' envd has no "user"; everything runs as the
			// current user.
			if pr.Out.Header.Get("Authorization") != "" {
				pr.Out.Header.Set("Authorization", basic)
			}
			if q := pr.Out.URL.Query(); q.Has("username") {
				q.Set("username", g.user)
				pr.Out.URL.RawQuery = q.Encode()
			}
		},
		FlushInterval: -1,
	}
	webURL, _ := url.Parse(g.web.URL)
	portProxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			prefix := "/sandboxes/" + pr.In.PathValue("id") + "/ports/" + pr.In.PathValue("port")
			pr.SetURL(webURL)
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1,
	}
	running := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			sb, ok := a.sandboxes[r.PathValue("id")]
			run := ok && sb.state == hostagentv1.SandboxState_SANDBOX_STATE_RUNNING
			a.mu.Unlock()
			if !run {
				http.Error(w, `{"code":"failed_precondition","message":"not running"}`, http.StatusConflict)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	mux.Handle("/sandboxes/{id}/envd/", running(envdProxy))
	mux.Handle("/sandboxes/{id}/ports/{port}/", running(portProxy))
	mux.Handle("/sandboxes/{id}/ports/{port}", running(portProxy))

	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	// HTTP/1.1 like the real pool's upgrade path; streams work over it.
	a.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(a.Client.CloseIdleConnections)
	return a
}
