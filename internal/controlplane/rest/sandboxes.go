package rest

// Sandboxes: the REST resource and its lifecycle. Handlers check the
// sandbox's state in the store, call its host agent, then record the new
// state with a statement guarded by the states it may leave, so the store
// never shows a transition that did not happen.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
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
	agentDestroyTimeout  = time.Minute
	agentQuickTimeout    = 20 * time.Second
)

// Limits of a create request beyond those in api/openapi.yaml.
const (
	maxCreateAttempts = 3
	maxMetadataKeys   = 50
	maxMetadataKey    = 64
	maxMetadataValue  = 512
	maxEnvVars        = 200
	maxPublicPorts    = 20
	maxForks          = 20
)

// envdPort is envd's port in every guest; the proxy never serves it.
const envdPort = 49983

// Defaults of a create request (api/openapi.yaml).
const (
	defaultTemplate   = "minimal"
	defaultVCPUs      = 1
	defaultMemoryMB   = 512
	defaultDiskMB     = 2048
	defaultTimeoutSec = 300
)

// Sandbox states as stored.
const (
	stStarting   = string(api.SandboxStateStarting)
	stRunning    = string(api.SandboxStateRunning)
	stPaused     = string(api.SandboxStatePaused)
	stHibernated = string(api.SandboxStateHibernated)
	stMissing    = string(api.SandboxStateMissing)
	stStopped    = string(api.SandboxStateStopped)
	stError      = string(api.SandboxStateError)
)

var allSandboxStates = []string{stStarting, stRunning, stPaused, stHibernated, stMissing, stStopped, stError}

// templateNameRE is TemplateName in api/openapi.yaml; sandbox and template
// ids the agent accepts have the same shape.
var templateNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

func (s *Server) mountSandboxes(r chi.Router) {
	r.Get("/sandboxes", s.sbHandler(s.listSandboxes))
	r.Post("/sandboxes", s.sbHandler(s.createSandbox))
	const one = "/sandboxes/{sandboxID}"
	r.Get(one, s.sbHandler(s.getSandbox))
	r.Delete(one, s.sbHandler(s.deleteSandbox))
	r.Post(one+"/pause", s.sbHandler(s.pauseSandbox))
	r.Post(one+"/resume", s.sbHandler(s.resumeSandbox))
	r.Post(one+"/fork", s.sbHandler(s.forkSandbox))
	r.Post(one+"/timeout", s.sbHandler(s.setSandboxTimeout))
	r.Put(one+"/network", s.sbHandler(s.setSandboxNetwork))
	r.Get(one+"/metrics", s.sbHandler(s.sandboxMetrics))
	r.Get(one+"/logs", s.sbHandler(s.sandboxLogs))
	r.Post(one+"/snapshot", s.sbHandler(s.snapshotSandbox))
}

// sbFunc is a handler that returns its error instead of writing it.
type sbFunc func(w http.ResponseWriter, r *http.Request) error

// sbHandler writes the error an sbFunc returns. A handler that already
// started its response returns nil.
func (s *Server) sbHandler(h sbFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	}
}

// teamSandbox loads the caller's sandbox; another team's answers exactly
// like a missing one.
func (s *Server) teamSandbox(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := s.q.GetTeamSandbox(ctx, store.GetTeamSandboxParams{ID: id, TeamID: principal(ctx).TeamID})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Sandbox{}, notFound("sandbox", id)
	}
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("load sandbox %s: %w", id, err)
	}
	return sb, nil
}

// Audit entries are written only once the resource is known to be the
// caller's: a failed lookup may name another team's resource, and the
// caller's audit log must not show it.

// agentFor returns the RPC client of the agent on host id.
func (s *Server) agentFor(ctx context.Context, host *uuid.UUID) (hostagentv1connect.HostAgentServiceClient, error) {
	if host == nil {
		return nil, errdefs.New(errdefs.ErrFailedPrecondition, "sandbox has no host")
	}
	if s.deps.Agents == nil {
		return nil, errdefs.New(errdefs.ErrUnavailable, "no host agents configured")
	}
	c, err := s.deps.Agents.RPC(ctx, host.String())
	if err != nil {
		return nil, fmt.Errorf("reach host %s: %w", host, err)
	}
	return c, nil
}

// agentErr wraps an error from an agent call with what was being done and
// its errdefs kind, so the REST answer matches what the agent said.
func agentErr(what string, err error) error {
	return fmt.Errorf("%s: %w", what, errdefs.FromConnect(err))
}

// detached is the context agent calls that change state run under: a
// client that hangs up mid-call must not leave the store behind the host.
func detached(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), d)
}

// wrongState is the 409 for a lifecycle call the sandbox's state forbids.
func wrongState(sb store.Sandbox, op string, allowed ...string) error {
	return errdefs.New(errdefs.ErrFailedPrecondition, "cannot %s sandbox %s: it is %s (needs %s)",
		op, sb.ID, sb.State, strings.Join(allowed, " or "))
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxJSON(sb, ""))
	return nil
}

// listSandboxes pages through the team's sandboxes, newest first, by
// (created_at, id) keyset: a page is one index range scan however deep.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	states := []string{stStarting, stRunning, stPaused, stHibernated, stMissing, stError}
	if v := q.Get("state"); v != "" {
		states = nil
		for st := range strings.SplitSeq(v, ",") {
			st = strings.TrimSpace(st)
			if !slices.Contains(allSandboxStates, st) {
				return invalid("state %q: must be one of %s", st, strings.Join(allSandboxStates, ", "))
			}
			states = append(states, st)
		}
	}
	meta := map[string]string{}
	for _, kv := range q["metadata"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return invalid("metadata filter %q: want key=value", kv)
		}
		if old, dup := meta[k]; dup && old != v {
			return invalid("metadata filter names key %q twice with different values", k)
		}
		meta[k] = v
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encode metadata filter: %w", err)
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return invalid("limit %q: must be 1-1000", v)
		}
		limit = n
	}
	// One row more than asked tells whether another page follows.
	var rows []store.Sandbox
	if c := q.Get("cursor"); c != "" {
		at, id, err := parseSandboxCursor(c)
		if err != nil {
			return err
		}
		rows, err = s.q.ListTeamSandboxesAfter(ctx, store.ListTeamSandboxesAfterParams{
			TeamID: principal(ctx).TeamID, States: states, Metadata: metaJSON,
			AfterCreatedAt: at, AfterID: id, MaxRows: int32(limit + 1),
		})
		if err != nil {
			return fmt.Errorf("list sandboxes: %w", err)
		}
	} else {
		rows, err = s.q.ListTeamSandboxes(ctx, store.ListTeamSandboxesParams{
			TeamID: principal(ctx).TeamID, States: states, Metadata: metaJSON, MaxRows: int32(limit + 1),
		})
		if err != nil {
			return fmt.Errorf("list sandboxes: %w", err)
		}
	}
	type page struct {
		Sandboxes  []api.Sandbox `json:"sandboxes"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}
	var out page
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		out.NextCursor = sandboxCursor(last.CreatedAt, last.ID)
	}
	out.Sandboxes = make([]api.Sandbox, len(rows))
	for i, sb := range rows {
		out.Sandboxes[i] = sandboxJSON(sb, "")
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// sandboxCursor encodes a keyset position. Microseconds are PostgreSQL's
// precision, so the position round-trips exactly.
func sandboxCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + id))
}

func parseSandboxCursor(c string) (time.Time, string, error) {
	bad := invalid("cursor %q is not one this API returned", c)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	us, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(us, 10, 64)
	// The id goes to PostgreSQL: NUL or invalid UTF-8 in it would be a 500.
	if !ok || err != nil || id == "" || textProblem(id) != "" {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(n).UTC(), id, nil
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "delete", err, nil) }()
	if sb.State == stStopped {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if sb.HostID != nil {
		actx, cancel := detached(r, agentDestroyTimeout)
		defer cancel()
		if err := s.destroyOnHost(actx, *sb.HostID, sb.ID); err != nil {
			// A missing sandbox's host is unreachable; the host monitor
			// reconciles whatever it still holds when it returns.
			if !(sb.State == stMissing && errors.Is(err, errdefs.ErrUnavailable)) {
				return err
			}
		}
	}
	if _, err := s.q.StopSandbox(ctx, store.StopSandboxParams{ID: sb.ID, TeamID: sb.TeamID, Now: s.clk.Now()}); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("record sandbox %s stopped: %w", sb.ID, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// destroyOnHost destroys a sandbox on its host; one the host does not hold
// is already destroyed.
func (s *Server) destroyOnHost(ctx context.Context, host uuid.UUID, id string) error {
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

// newSandboxID returns 20 random characters of lowercase base32: 100 bits,
// and an id the agent accepts (1-40 of [a-z0-9-]).
func newSandboxID() string {
	return randomName(20)
}

func randomName(n int) string {
	b := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return s[:n]
}

// hashToken is how access tokens are stored.
func hashToken(token string) []byte {
	if token == "" {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// sandboxJSON converts a row; token is set only in create and fork answers.
func sandboxJSON(sb store.Sandbox, token string) api.Sandbox {
	out := api.Sandbox{
		Id:         sb.ID,
		Template:   sb.Template,
		State:      api.SandboxState(sb.State),
		HostId:     sb.HostID,
		Vcpus:      int(sb.Vcpus),
		MemoryMb:   int(sb.MemoryMb),
		DiskMb:     int(sb.DiskMb),
		TimeoutSec: int(sb.TimeoutSec),
		OnTimeout:  api.OnTimeout(sb.OnTimeout),
		Metadata:   map[string]string{},
		ForkedFrom: sb.ForkedFrom,
		CreatedAt:  sb.CreatedAt,
		UpdatedAt:  &sb.UpdatedAt,
	}
	_ = json.Unmarshal(sb.Metadata, &out.Metadata)
	var pol api.NetworkPolicy
	if len(sb.Network) > 0 && json.Unmarshal(sb.Network, &pol) == nil && pol != (api.NetworkPolicy{}) {
		out.Network = &pol
	}
	if len(sb.PublicPorts) > 0 {
		ports := make([]int, len(sb.PublicPorts))
		for i, p := range sb.PublicPorts {
			ports[i] = int(p)
		}
		out.PublicPorts = &ports
	}
	if sb.Error != "" {
		out.Error = &sb.Error
	}
	if token != "" {
		out.AccessToken = &token
	}
	return out
}

// checkNetwork validates a policy's CIDRs (IPv4, as the agent enforces).
func checkNetwork(p *api.NetworkPolicy) error {
	if p == nil {
		return nil
	}
	for field, list := range map[string]*[]string{"allow_out": p.AllowOut, "deny_out": p.DenyOut} {
		if list == nil {
			continue
		}
		if len(*list) > 256 {
			return invalid("network.%s: at most 256 entries", field)
		}
		for _, c := range *list {
			pfx, err := netip.ParsePrefix(c)
			if err != nil || !pfx.Addr().Is4() {
				return invalid("network.%s: %q is not an IPv4 CIDR (e.g. 10.0.0.0/8)", field, c)
			}
		}
	}
	return nil
}

// networkProto converts a policy for the agent; nil means the default
// (internet allowed).
func networkProto(p *api.NetworkPolicy) *hostagentv1.NetworkPolicy {
	out := &hostagentv1.NetworkPolicy{AllowInternet: true}
	if p == nil {
		return out
	}
	if p.AllowInternet != nil {
		out.AllowInternet = *p.AllowInternet
	}
	if p.AllowOut != nil {
		out.AllowOut = *p.AllowOut
	}
	if p.DenyOut != nil {
		out.DenyOut = *p.DenyOut
	}
	return out
}

func onTimeoutProto(v string) hostagentv1.OnTimeout {
	if v == string(api.Pause) {
		return hostagentv1.OnTimeout_ON_TIMEOUT_PAUSE
	}
	return hostagentv1.OnTimeout_ON_TIMEOUT_KILL
}
