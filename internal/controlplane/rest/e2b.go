package rest

// The E2B-compatible front door: E2B's REST API at the server's root
// (E2B_API_URL is the origin), as thin adapters over the sandbox service.
// What each route takes and answers is in docs/e2b-compat.md; the shapes
// are in e2b_types.go. Authentication is the same as /v1 (X-API-KEY with a
// wrn_ or e2b_ key, or a session), and so is per-team authorization: another
// team's sandbox answers 404 like a missing one.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// EnvdVersion is the E2B envd version Wrenn's envd answers for: the SDKs
// switch features on it (see docs/e2b-compat.md). Every feature the SDKs
// gate at or below 0.6.1 is implemented (default user, octet-stream
// uploads, CloseStdin, stdin flag, recursive watch, metrics); file
// metadata (0.6.2) is not, so the SDK refuses it before sending rather
// than Wrenn dropping it.
const EnvdVersion = "0.6.1"

// e2bError is E2B's error body: code is the HTTP status as a number;
// error_code is Wrenn's machine-readable kind.
func e2bError(status int, msg, code string) api.E2BError {
	e := api.E2BError{Code: status, Message: msg}
	if code != "" {
		e.ErrorCode = &code
	}
	return e
}

// e2bDefaultTemplate is E2B's default template name; it means Wrenn's.
const e2bDefaultTemplate = "base"

// e2bMaxTimeout is the longest timeout (seconds) a create or setTimeout
// takes: the agent's idle-timeout bound.
const e2bMaxTimeout = 86400

// e2bPrefixes are the path prefixes of the E2B-compatible routes (their
// errors take E2B's shape).
var e2bPrefixes = []string{"/sandboxes", "/v2/sandboxes", "/snapshots", "/templates/"}

// isE2BPath reports whether path belongs to the E2B-compatible surface.
func isE2BPath(path string) bool {
	for _, p := range e2bPrefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

func (s *Server) mountE2B(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate, s.rateLimit)
		h := s.sbHandler
		r.Post("/sandboxes", h(s.e2bCreate))
		r.Post("/v2/sandboxes", h(s.e2bCreate))
		r.Get("/sandboxes", h(s.e2bListRunning))
		r.Get("/v2/sandboxes", h(s.e2bList))
		const one = "/sandboxes/{sandboxID}"
		r.Get(one, h(s.e2bGet))
		r.Delete(one, h(s.e2bKill))
		r.Post(one+"/timeout", h(s.e2bSetTimeout))
		r.Post(one+"/refreshes", h(s.e2bRefresh))
		r.Post(one+"/pause", h(s.e2bPause))
		r.Post(one+"/resume", h(s.e2bResume))
		r.Post(one+"/connect", h(s.e2bConnect))
		r.Post("/v2"+one+"/connect", h(s.e2bConnect))
		r.Get(one+"/metrics", h(s.e2bMetrics))
		r.Put(one+"/network", h(s.e2bSetNetwork))
		r.Post(one+"/fork", h(s.e2bFork))
		r.Post(one+"/snapshots", h(s.e2bCreateSnapshot))
		r.Get("/snapshots", h(s.e2bListSnapshots))
		r.Delete("/templates/{templateID}", h(s.e2bDeleteTemplate))
	})
}

// e2bDecode reads an E2B request body: like /v1's (size cap, JSON only,
// text checked) but unknown fields are ignored.
func e2bDecode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONBody(w, r, v, true, false)
}

// e2bState is how E2B shows a sandbox's state, and whether E2B shows it
// at all: a stopped or failed sandbox is gone as far as E2B is concerned.
func e2bState(sb store.Sandbox) (string, bool) {
	switch sandboxes.State(sb.State) {
	case sandboxes.Paused, sandboxes.Hibernated:
		return "paused", true
	case sandboxes.Stopped, sandboxes.Error:
		return "", false
	default: // starting, running, missing (its host may come back)
		return "running", true
	}
}

// e2bStates is the store states a state filter value means.
func e2bStates(v string) ([]sandboxes.State, error) {
	switch v {
	case "running":
		return []sandboxes.State{sandboxes.Starting, sandboxes.Running, sandboxes.Missing}, nil
	case "paused":
		return []sandboxes.State{sandboxes.Paused, sandboxes.Hibernated}, nil
	}
	return nil, invalid("state %q: must be running or paused", v)
}

// e2bSandboxOf loads the caller's sandbox as E2B sees it (404 when gone).
func (s *Server) e2bSandboxOf(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return sb, err
	}
	if _, ok := e2bState(sb); !ok {
		return sb, notFound("sandbox", id)
	}
	return sb, nil
}

func (s *Server) e2bDomain() *string {
	if s.deps.Domain == "" {
		return nil
	}
	d := s.deps.Domain
	return &d
}

// clientID is E2B's legacy node id: the host's, shortened.
func clientID(sb store.Sandbox) string {
	if sb.HostID == nil {
		return "wrenn"
	}
	return sb.HostID.String()[:8]
}

func (s *Server) e2bSandboxJSON(sb store.Sandbox, token, traffic string) api.E2BSandbox {
	out := api.E2BSandbox{
		TemplateID: sb.Template, SandboxID: sb.ID, Alias: &sb.Template, ClientID: clientID(sb),
		EnvdVersion: EnvdVersion, Domain: s.e2bDomain(),
	}
	if token != "" {
		out.EnvdAccessToken = &token
	}
	if traffic != "" {
		out.TrafficAccessToken = &traffic
	}
	return out
}

// e2bEndAt is when the sandbox's timeout applies: its deadline, or for a
// sandbox made through /v1 (idle timeout) the timeout from its last change.
func e2bEndAt(sb store.Sandbox) time.Time {
	if sb.EndAt != nil {
		return *sb.EndAt
	}
	return sb.UpdatedAt.Add(time.Duration(sb.TimeoutSec) * time.Second)
}

func (s *Server) e2bDetailJSON(sb store.Sandbox, token string) api.E2BSandboxDetail {
	st, _ := e2bState(sb)
	meta := map[string]string{}
	_ = json.Unmarshal(sb.Metadata, &meta)
	out := api.E2BSandboxDetail{
		TemplateID: sb.Template, SandboxID: sb.ID, Alias: &sb.Template, ClientID: clientID(sb),
		StartedAt: sb.CreatedAt, EndAt: e2bEndAt(sb), EnvdVersion: EnvdVersion,
		CpuCount: int(sb.Vcpus), MemoryMB: int(sb.MemoryMb), DiskSizeMB: int(sb.DiskMb),
		State: api.E2BSandboxDetailState(st), Metadata: &meta, Domain: s.e2bDomain(),
		Lifecycle: &api.E2BLifecycle{AutoResume: sb.AutoResume, OnTimeout: api.OnTimeout(sb.OnTimeout)},
	}
	if token != "" {
		out.EnvdAccessToken = &token
	}
	allow := true
	n := &api.E2BNetwork{AllowPublicTraffic: &sb.PublicTraffic}
	if pol := sandboxes.StoredNetwork(sb); pol != nil {
		if pol.AllowInternet != nil {
			allow = *pol.AllowInternet
		}
		n.AllowOut, n.DenyOut = pol.AllowOut, pol.DenyOut
	}
	out.Network, out.AllowInternetAccess = n, &allow
	if st == "paused" {
		mode := api.E2BSandboxDetailPauseMode("full")
		if sb.MemoryDropped {
			mode = "filesystem"
		}
		out.PauseMode = &mode
	}
	return out
}

// accessToken is the sandbox's envd token for a caller of its team; a
// sandbox whose token cannot be given again answers without one.
func (s *Server) accessToken(r *http.Request, sb store.Sandbox) string {
	tok, err := s.sandboxes.AccessToken(sb)
	if err != nil {
		loggerFrom(r).Warn("sandbox access token not available", "sandbox_id", sb.ID, "err", err)
		return ""
	}
	return tok
}

// e2bTimeout validates a timeout in seconds.
func e2bTimeout(field string, v int) error {
	if v < 1 || v > e2bMaxTimeout {
		return invalid("%s %d: must be 1-%d seconds", field, v, e2bMaxTimeout)
	}
	return nil
}

// e2bTemplate is the Wrenn template an E2B template id or alias means:
// "base" is the default; "name:tag" with E2B's default tags is name.
func e2bTemplate(id string) (string, error) {
	if err := checkText("templateID", id); err != nil {
		return "", err
	}
	name := id
	if n, tag, ok := strings.Cut(id, ":"); ok && (tag == "default" || tag == "latest") {
		name = n
	}
	if name == "" || name == e2bDefaultTemplate {
		return sandboxes.DefaultTemplate, nil
	}
	if !templateNameRE.MatchString(name) {
		return "", notFound("template", id)
	}
	return name, nil
}

// e2bEgress converts E2B's allowOut/denyOut (CIDRs or IP addresses; host
// names are refused until domain rules exist) and allow_internet_access.
func e2bEgress(allowInternet *bool, n *api.E2BNetwork) (*sandboxes.Network, error) {
	if n == nil && allowInternet == nil {
		return nil, nil
	}
	pol := &sandboxes.Network{AllowInternet: allowInternet}
	if n == nil {
		return pol, nil
	}
	unsupported := func(field string) error {
		return errdefs.New(errdefs.ErrInvalidArgument, "network.%s is not supported by Wrenn", field)
	}
	switch {
	case present(n.EgressProxy):
		return nil, unsupported("egressProxy")
	case present(n.Rules):
		return nil, unsupported("rules (request transforms)")
	case n.MaskRequestHost != nil && *n.MaskRequestHost != "":
		return nil, unsupported("maskRequestHost")
	case n.HttpsPorts != nil && len(*n.HttpsPorts) > 0:
		return nil, unsupported("httpsPorts")
	case n.DnsServers != nil && len(*n.DnsServers) > 0:
		return nil, unsupported("dnsServers")
	}
	for _, f := range []struct {
		name string
		in   *[]string
		out  **[]string
	}{{"allowOut", n.AllowOut, &pol.AllowOut}, {"denyOut", n.DenyOut, &pol.DenyOut}} {
		if f.in == nil {
			continue
		}
		list := make([]string, 0, len(*f.in))
		for _, e := range *f.in {
			if a, err := netip.ParseAddr(e); err == nil && a.Is4() {
				e = netip.PrefixFrom(a, 32).String()
			}
			if _, err := netip.ParsePrefix(e); err != nil {
				return nil, invalid("network.%s: %q is not an IPv4 CIDR or address; domain rules are not supported by Wrenn yet", f.name, e)
			}
			list = append(list, e)
		}
		*f.out = &list
	}
	if err := sandboxes.CheckNetwork(pol); err != nil {
		return nil, err
	}
	return pol, nil
}

// e2bAutoResume reads autoResume: {"enabled": bool} or a bare bool.
func e2bAutoResume(v any) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	case map[string]any:
		if e, ok := x["enabled"].(bool); ok || x["enabled"] == nil {
			return e, nil
		}
	}
	return false, invalid("autoResume: want {\"enabled\": true|false}")
}

// present reports whether an optional JSON value (decoded as any)
// carries something.
func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case map[string]any:
		return len(x) > 0
	case []any:
		return len(x) > 0
	case string:
		return x != ""
	}
	return true
}

func (s *Server) e2bCreate(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	team := principal(ctx).TeamID
	id := sandboxes.NewID()
	defer func() { s.audit(ctx, "sandbox", id, "create", err, map[string]any{"api": "e2b"}) }()
	idem, err := idempotencyOf(w, r)
	if err != nil {
		return err
	}
	var req api.E2BNewSandbox
	if err := e2bDecode(w, r, &req); err != nil {
		return err
	}
	switch {
	case present(req.Mcp):
		return errdefs.New(errdefs.ErrInvalidArgument, "mcp gateways are not supported by Wrenn")
	case present(req.Iam):
		return errdefs.New(errdefs.ErrInvalidArgument, "iam tokens are not supported by Wrenn")
	case present(req.VolumeMounts):
		return errdefs.New(errdefs.ErrInvalidArgument, "volume mounts are not supported by Wrenn")
	case req.AutoPauseMemory != nil && !*req.AutoPauseMemory:
		return errdefs.New(errdefs.ErrInvalidArgument, "a filesystem-only pause on timeout (autoPauseMemory: false) is not supported by Wrenn; pause with memory or kill")
	}
	name, err := e2bTemplate(deref(req.TemplateID))
	if err != nil {
		return err
	}
	spec := sandboxes.Spec{
		Template: name, VCPUs: sandboxes.DefaultVCPUs, MemoryMB: sandboxes.DefaultMemoryMB,
		DiskMB: sandboxes.DefaultDiskMB, TimeoutSec: sandboxes.DefaultTimeoutSec, OnTimeout: sandboxes.OnTimeoutKill,
		Env: deref(req.EnvVars), Metadata: deref(req.Metadata), PublicTraffic: true,
	}
	if req.Timeout != nil {
		if err := e2bTimeout("timeout", *req.Timeout); err != nil {
			return err
		}
		spec.TimeoutSec = *req.Timeout
	}
	if err := sandboxes.CheckEnv(spec.Env); err != nil {
		return err
	}
	if err := sandboxes.CheckMetadata(spec.Metadata); err != nil {
		return err
	}
	if req.AutoPause != nil && *req.AutoPause {
		spec.OnTimeout = sandboxes.OnTimeoutPause
	}
	if spec.AutoResume, err = e2bAutoResume(req.AutoResume); err != nil {
		return err
	}
	if spec.Network, err = e2bEgress(req.AllowInternetAccess, req.Network); err != nil {
		return err
	}
	if req.Network != nil && req.Network.AllowPublicTraffic != nil && !*req.Network.AllowPublicTraffic {
		spec.PublicTraffic, spec.TrafficToken = false, true
	}
	// A snapshot restores into the shape it was taken in.
	tmpl, err := s.sandboxes.ResolveTemplate(ctx, team, name)
	if err != nil {
		return err
	}
	if tmpl.Snapshot {
		spec.VCPUs, spec.MemoryMB = tmpl.VCPUs, tmpl.MemoryMB
	}
	if req.CpuCount != nil {
		switch {
		case tmpl.Snapshot && *req.CpuCount != spec.VCPUs:
			return invalid("cpuCount %d: template %q is a snapshot and restores only with its own %d", *req.CpuCount, name, spec.VCPUs)
		case *req.CpuCount < 1 || *req.CpuCount > 16:
			return invalid("cpuCount %d: must be 1-16", *req.CpuCount)
		}
		spec.VCPUs = *req.CpuCount
	}
	end := s.clk.Now().Add(time.Duration(spec.TimeoutSec) * time.Second)
	spec.EndAt = &end
	spec.Idempotency = idem
	c, err := s.sandboxes.Create(ctx, team, id, spec)
	if err != nil {
		return err
	}
	id = c.Sandbox.ID // a replay answers the first request's sandbox
	writeJSON(w, http.StatusCreated, s.e2bSandboxJSON(c.Sandbox, c.AccessToken, c.TrafficToken))
	return nil
}

func (s *Server) e2bGet(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.e2bSandboxOf(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.e2bDetailJSON(sb, s.accessToken(r, sb)))
	return nil
}

func (s *Server) e2bKill(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	sb, err := s.teamSandbox(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	if sandboxes.State(sb.State) == sandboxes.Stopped {
		return notFound("sandbox", sb.ID)
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, "delete", err, map[string]any{"api": "e2b"}) }()
	if err := s.sandboxes.Delete(ctx, sb.TeamID, sb.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// e2bDeadline sets a sandbox's timeout to secs from now (E2B's timeouts
// are absolute); extendOnly keeps a later deadline already set.
func (s *Server) e2bDeadline(ctx context.Context, sb store.Sandbox, secs int, extendOnly bool) (store.Sandbox, error) {
	end := s.clk.Now().Add(time.Duration(secs) * time.Second)
	if extendOnly && sb.EndAt != nil && !sb.EndAt.Before(end) {
		return sb, nil
	}
	return s.sandboxes.SetTimeout(ctx, sb.TeamID, sb.ID, sandboxes.Timeout{Sec: secs, EndAt: &end})
}

// e2bNoContent runs a change on the caller's sandbox named in the path
// (as E2B sees it), audits it as op once the sandbox is known to be the
// caller's, decodes the body into body, and answers 204.
func (s *Server) e2bNoContent(w http.ResponseWriter, r *http.Request, op string, body any,
	call func(ctx context.Context, sb store.Sandbox) error) (err error) {
	ctx := r.Context()
	sb, err := s.e2bSandboxOf(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, op, err, map[string]any{"api": "e2b"}) }()
	if err := e2bDecode(w, r, body); err != nil {
		return err
	}
	if err := call(ctx, sb); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) e2bSetTimeout(w http.ResponseWriter, r *http.Request) error {
	var body api.E2bSetSandboxTimeoutJSONBody
	return s.e2bNoContent(w, r, "set_timeout", &body, func(ctx context.Context, sb store.Sandbox) error {
		if err := e2bTimeout("timeout", body.Timeout); err != nil {
			return err
		}
		_, err := s.e2bDeadline(ctx, sb, body.Timeout, false)
		return err
	})
}

func (s *Server) e2bRefresh(w http.ResponseWriter, r *http.Request) error {
	var body api.E2bRefreshSandboxJSONBody
	return s.e2bNoContent(w, r, "set_timeout", &body, func(ctx context.Context, sb store.Sandbox) error {
		secs := sandboxes.DefaultTimeoutSec
		if body.Duration != nil {
			if err := e2bTimeout("duration", *body.Duration); err != nil {
				return err
			}
			secs = *body.Duration
		}
		_, err := s.e2bDeadline(ctx, sb, secs, true)
		return err
	})
}

func (s *Server) e2bPause(w http.ResponseWriter, r *http.Request) error {
	var body api.E2bPauseSandboxJSONBody
	return s.e2bNoContent(w, r, "pause", &body, func(ctx context.Context, sb store.Sandbox) error {
		o := sandboxes.PauseOptions{DropMemory: body.Memory != nil && !*body.Memory}
		_, err := s.sandboxes.Pause(ctx, sb.TeamID, sb.ID, o)
		return err
	})
}

// e2bConnect returns a running sandbox (its deadline extended to the
// timeout asked, never shortened) or resumes a paused one: 200 when it
// was running, 201 when it was resumed.
func (s *Server) e2bConnect(w http.ResponseWriter, r *http.Request) error {
	return s.e2bConnectOrResume(w, r, false)
}

// e2bResume is the older resume route: like connect, but a running
// sandbox is a 409.
func (s *Server) e2bResume(w http.ResponseWriter, r *http.Request) error {
	return s.e2bConnectOrResume(w, r, true)
}

func (s *Server) e2bConnectOrResume(w http.ResponseWriter, r *http.Request, mustBePaused bool) (err error) {
	ctx := r.Context()
	sb, err := s.e2bSandboxOf(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	var body api.E2BConnect
	if err := e2bDecode(w, r, &body); err != nil {
		return err
	}
	secs := int(sb.TimeoutSec)
	if body.Timeout != nil {
		if err := e2bTimeout("timeout", *body.Timeout); err != nil {
			return err
		}
		secs = *body.Timeout
	}
	st, _ := e2bState(sb)
	status := http.StatusOK
	if st == "paused" {
		defer func() { s.audit(ctx, "sandbox", sb.ID, "resume", err, map[string]any{"api": "e2b"}) }()
		if body.Memory != nil && !*body.Memory && !sb.MemoryDropped {
			return errdefs.New(errdefs.ErrInvalidArgument, "resuming a sandbox paused with its memory by rebooting it (memory: false) is not supported by Wrenn; resume it as it was")
		}
		if sb, err = s.sandboxes.Resume(ctx, sb.TeamID, sb.ID); err != nil {
			return err
		}
		status = http.StatusCreated
		if sb, err = s.e2bDeadline(ctx, sb, secs, false); err != nil {
			return err
		}
	} else {
		if mustBePaused {
			return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox %s is already running", sb.ID)
		}
		if body.Timeout != nil {
			if sb, err = s.e2bDeadline(ctx, sb, secs, true); err != nil {
				return err
			}
		}
	}
	writeJSON(w, status, s.e2bSandboxJSON(sb, s.accessToken(r, sb), ""))
	return nil
}

func (s *Server) e2bMetrics(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sb, err := s.e2bSandboxOf(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	var rng sandboxes.MetricsRange
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"start", &rng.Start}, {"end", &rng.End}} {
		v := r.URL.Query().Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return invalid("%s %q: want unix seconds", f.name, v)
		}
		*f.dst = time.Unix(n, 0)
	}
	if !rng.Start.IsZero() && !rng.End.IsZero() && rng.End.Before(rng.Start) {
		return invalid("end is before start")
	}
	out := []api.E2BSandboxMetric{}
	if sandboxes.State(sb.State) != sandboxes.Running {
		// A paused sandbox has no current sample.
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	m, err := s.sandboxes.Metrics(ctx, sb.TeamID, sb.ID, rng)
	if err != nil {
		return err
	}
	out = append(out, e2bMetricsOf(sb, m, s.clk.Now(), rng)...)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) e2bSetNetwork(w http.ResponseWriter, r *http.Request) error {
	var body api.E2BNetwork
	return s.e2bNoContent(w, r, "set_network", &body, func(ctx context.Context, sb store.Sandbox) error {
		if body.AllowPublicTraffic != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "allowPublicTraffic can only be chosen at create in Wrenn")
		}
		// Omitted fields are cleared: the body is the whole new policy.
		pol, err := e2bEgress(body.AllowInternetAccess, &body)
		if err != nil {
			return err
		}
		_, err = s.sandboxes.SetNetwork(ctx, sb.TeamID, sb.ID, *pol)
		return err
	})
}

func (s *Server) e2bFork(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	sb, err := s.e2bSandboxOf(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, "fork", err, map[string]any{"api": "e2b"}) }()
	var body api.E2bForkSandboxJSONBody
	if err := e2bDecode(w, r, &body); err != nil {
		return err
	}
	count := 1
	if body.Count != nil {
		count = *body.Count
	}
	if count < 1 || count > sandboxes.MaxForks {
		return invalid("count %d: must be 1-%d", count, sandboxes.MaxForks)
	}
	if body.Timeout != nil {
		if err := e2bTimeout("timeout", *body.Timeout); err != nil {
			return err
		}
	}
	forks, ferr := s.sandboxes.Fork(ctx, sb.TeamID, sb.ID, count)
	if ferr != nil && len(forks) == 0 {
		return ferr
	}
	out := make([]api.E2BForkResult, 0, count)
	for _, f := range forks {
		row := f.Sandbox
		if body.Timeout != nil {
			if row, err = s.e2bDeadline(ctx, row, *body.Timeout, false); err != nil {
				loggerFrom(r).Warn("set fork timeout", "sandbox_id", f.Sandbox.ID, "err", err)
				row = f.Sandbox
			}
		}
		j := s.e2bSandboxJSON(row, f.AccessToken, "")
		out = append(out, api.E2BForkResult{Sandbox: &j})
	}
	for len(out) < count {
		// The forks the store could not record were destroyed again.
		msg := "fork not recorded"
		if ferr != nil {
			msg = ferr.Error()
		}
		e := e2bError(http.StatusInternalServerError, msg, "internal")
		out = append(out, api.E2BForkResult{Error: &e})
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) e2bCreateSnapshot(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	sb, err := s.e2bSandboxOf(ctx, chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	var body api.E2bCreateSnapshotJSONBody
	name := "snap-" + sandboxes.RandomName(16)
	defer func() {
		s.audit(ctx, "sandbox", sb.ID, "snapshot", err, map[string]any{"api": "e2b", "template": name})
	}()
	if err := e2bDecode(w, r, &body); err != nil {
		return err
	}
	if body.Memory != nil && !*body.Memory {
		return errdefs.New(errdefs.ErrInvalidArgument, "filesystem-only snapshots (memory: false) are not supported by Wrenn; snapshots keep memory")
	}
	if body.Name != nil && *body.Name != "" {
		name = *body.Name
		if !templateNameRE.MatchString(name) {
			return invalid("name %q: must match %s", name, templateNameRE)
		}
	}
	t, err := s.sandboxes.Snapshot(ctx, sb.TeamID, sb.ID, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.E2BSnapshot{SnapshotID: t.Name, Names: []string{t.Name}})
	return nil
}

func (s *Server) e2bListSnapshots(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	limit, err := e2bLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	rows, err := s.q.ListTeamTemplates(ctx, principal(ctx).TeamID)
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	var items []api.E2BSnapshot
	for _, t := range rows {
		if !t.Snapshot {
			continue
		}
		if v := q.Get("sandboxID"); v != "" && (t.SourceSandboxID == nil || *t.SourceSandboxID != v) {
			continue
		}
		if v := q.Get("name"); v != "" && t.Name != v {
			continue
		}
		items = append(items, api.E2BSnapshot{SnapshotID: t.Name, Names: []string{t.Name}})
	}
	// Listed by name, in byte order (the store's collation may order
	// '-' otherwise).
	slices.SortFunc(items, func(a, b api.E2BSnapshot) int { return strings.Compare(a.SnapshotID, b.SnapshotID) })
	page, next, err := pageAfter(items, q.Get("nextToken"), limit,
		func(x api.E2BSnapshot) string { return x.SnapshotID },
		func(x api.E2BSnapshot, p string) bool { return x.SnapshotID > p })
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, nonNilSlice(page))
	return nil
}

func (s *Server) e2bDeleteTemplate(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "templateID")
	if u, err := url.PathUnescape(id); err == nil {
		id = u
	}
	name, err := e2bTemplate(id)
	if err != nil {
		return err
	}
	if err := s.deleteTeamTemplate(r.Context(), name, map[string]any{"api": "e2b"}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// e2bLimit reads a page size (default 100, at most 1000).
func e2bLimit(v string) (int, error) {
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > sandboxes.MaxListLimit {
		return 0, invalid("limit %q: must be 1-%d", v, sandboxes.MaxListLimit)
	}
	return n, nil
}

// pageAfter returns, of items in listing order, those after the position
// token names (from the start when token is ""), at most limit, and the
// token of the page's last item when more follow. pos is an item's
// position as a string; after(item, p) says whether item comes after
// position p in the listing's order. Comparing positions rather than
// looking for the token's item keeps a listing whole when that item is
// deleted between pages.
func pageAfter[T any](items []T, token string, limit int, pos func(T) string, after func(T, string) bool) ([]T, string, error) {
	start := 0
	if token != "" {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || !utf8.Valid(raw) {
			return nil, "", invalid("nextToken %q is not one this API returned", token)
		}
		p := string(raw)
		start = len(items)
		for i, it := range items {
			if after(it, p) {
				start = i
				break
			}
		}
	}
	end := min(start+limit, len(items))
	page := items[start:end]
	if end < len(items) && len(page) > 0 {
		return page, base64.RawURLEncoding.EncodeToString([]byte(pos(page[len(page)-1]))), nil
	}
	return page, "", nil
}

// sandboxPos is a listed sandbox's position: start time (microseconds,
// the store's precision) and id, unique and ordered like the listing.
func sandboxPos(d api.E2BSandboxDetail) string {
	return strconv.FormatInt(d.StartedAt.UnixMicro(), 10) + "." + d.SandboxID
}

// sandboxAfter says whether d comes after position p in a listing ordered
// newest first (asc: oldest first).
func sandboxAfter(asc bool) func(api.E2BSandboxDetail, string) bool {
	return func(d api.E2BSandboxDetail, p string) bool {
		us, id, _ := strings.Cut(p, ".")
		n, err := strconv.ParseInt(us, 10, 64)
		if err != nil {
			return true // a position this API never made: from the start
		}
		c := d.StartedAt.UnixMicro()
		if asc {
			return c > n || (c == n && d.SandboxID > id)
		}
		return c < n || (c == n && d.SandboxID < id)
	}
}

// deref is *p, or T's zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// e2bListRunning is the older list: running sandboxes, no paging.
func (s *Server) e2bListRunning(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	q.Set("state", "running")
	q.Del("limit")
	items, err := s.e2bListed(r, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNilSlice(items))
	return nil
}

// e2bList is GET /v2/sandboxes: filters, order and token paging (the
// next token in the X-Next-Token header).
func (s *Server) e2bList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := e2bLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	items, err := s.e2bListed(r, q)
	if err != nil {
		return err
	}
	page, next, err := pageAfter(items, q.Get("nextToken"), limit, sandboxPos, sandboxAfter(q.Get("order") == "asc"))
	if err != nil {
		return err
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, nonNilSlice(page))
	return nil
}

// e2bListMax bounds how many sandboxes one E2B listing reads: E2B's
// filters (start time, template, order) are applied over the team's
// listed sandboxes, which quotas keep far below this.
const e2bListMax = 10000

// e2bListed is the team's sandboxes matching an E2B list query, in its
// order.
func (s *Server) e2bListed(r *http.Request, q url.Values) ([]api.E2BSandboxDetail, error) {
	ctx := r.Context()
	var o sandboxes.ListOptions
	if v := q.Get("state"); v != "" {
		for part := range strings.SplitSeq(v, ",") {
			sts, err := e2bStates(strings.TrimSpace(part))
			if err != nil {
				return nil, err
			}
			o.States = append(o.States, sts...)
		}
	} else {
		o.States = []sandboxes.State{sandboxes.Starting, sandboxes.Running, sandboxes.Missing, sandboxes.Paused, sandboxes.Hibernated}
	}
	meta, err := e2bMetadataFilter(q.Get("metadata"))
	if err != nil {
		return nil, err
	}
	o.Metadata = meta
	var after time.Time
	if v := q.Get("startedAfter"); v != "" {
		if after, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return nil, invalid("startedAfter %q: want an RFC 3339 time", v)
		}
	}
	var tmpl string
	if v := q.Get("template"); v != "" {
		if tmpl, err = e2bTemplate(v); err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				return nil, nil // no sandbox can be of a template that cannot exist
			}
			return nil, err
		}
	}
	order := q.Get("order")
	if order != "" && order != "asc" && order != "desc" {
		return nil, invalid("order %q: must be asc or desc", order)
	}
	o.Limit = sandboxes.MaxListLimit
	var rows []store.Sandbox
	for {
		page, err := s.sandboxes.List(ctx, principal(ctx).TeamID, o)
		if err != nil {
			return nil, err
		}
		rows = append(rows, page.Sandboxes...)
		if page.Next == "" || len(rows) >= e2bListMax {
			break
		}
		o.Cursor = page.Next
	}
	out := make([]api.E2BSandboxDetail, 0, len(rows))
	for _, sb := range rows {
		if !after.IsZero() && !sb.CreatedAt.After(after) {
			continue
		}
		if tmpl != "" && sb.Template != tmpl {
			continue
		}
		d := s.e2bDetailJSON(sb, "")
		d.Network, d.AllowInternetAccess, d.Domain = nil, nil, nil
		out = append(out, d)
	}
	if order == "asc" {
		slices.Reverse(out) // the service lists newest first
	}
	return out, nil
}

// e2bMetadataFilter reads the list's metadata filter: one query value
// holding a query string whose keys and values the SDKs escaped once more
// (Python's quote, JavaScript's encodeURIComponent).
func e2bMetadataFilter(v string) (map[string]string, error) {
	out := map[string]string{}
	if v == "" {
		return out, nil
	}
	pairs, err := url.ParseQuery(v)
	if err != nil {
		return nil, invalid("metadata %q: want an encoded query string (key=value&...)", v)
	}
	for k, vals := range pairs {
		key, err := url.QueryUnescape(k)
		if err != nil {
			return nil, invalid("metadata key %q: bad escape", k)
		}
		for _, raw := range vals {
			val, err := url.QueryUnescape(raw)
			if err != nil {
				return nil, invalid("metadata %q: bad escape in value", key)
			}
			if old, dup := out[key]; dup && old != val {
				return nil, invalid("metadata filter names key %q twice with different values", key)
			}
			out[key] = val
		}
	}
	return out, nil
}
