package rest

// Sandboxes: the /v1 front door to the sandbox service
// (internal/controlplane/sandboxes). Handlers decode, authorize by the
// caller's team, call the service, audit and encode; the lifecycle itself
// lives in the service.

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/store"
)

// stRunning is the state the port proxy serves.
const stRunning = string(sandboxes.Running)

// envdPort is envd's port in every guest; the /v1 ports proxy never
// serves it.
const envdPort = sandboxes.EnvdPort

// templateNameRE is TemplateName in api/openapi.yaml; sandbox and template
// ids the agent accepts have the same shape.
var templateNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// templateRefRE is what a create names: a template, or one version of a
// built template (name:N).
var templateRefRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}(:[1-9][0-9]{0,8})?$`)

// hashToken is how access tokens are stored.
func hashToken(token string) []byte { return sandboxes.HashToken(token) }

func (s *Server) mountSandboxes(r chi.Router) {
	r.Get("/sandboxes", s.sbHandler(s.listSandboxes))
	r.Post("/sandboxes", s.sbHandler(s.createSandbox))
	const one = "/sandboxes/{sandboxID}"
	r.Get(one, s.sbHandler(s.getSandbox))
	r.Delete(one, s.sbHandler(s.deleteSandbox))
	r.Post(one+"/pause", s.sbHandler(s.pauseSandbox))
	r.Post(one+"/resume", s.sbHandler(s.resumeSandbox))
	r.Post(one+"/hibernate", s.sbHandler(s.hibernateSandbox))
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
	return s.sandboxes.Get(ctx, principal(ctx).TeamID, id)
}

// Audit entries are written only once the resource is known to be the
// caller's: a failed lookup may name another team's resource, and the
// caller's audit log must not show it. So each handler loads the sandbox
// first and audits from then on.

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) error {
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sandboxJSON(sb, ""))
	return nil
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var o sandboxes.ListOptions
	if v := q.Get("state"); v != "" {
		for name := range strings.SplitSeq(v, ",") {
			st, ok := sandboxes.Parse(strings.TrimSpace(name))
			if !ok {
				return invalid("state %q: must be one of %s", strings.TrimSpace(name), strings.Join(sandboxes.Strings(sandboxes.All), ", "))
			}
			o.States = append(o.States, st)
		}
	}
	o.Metadata = map[string]string{}
	for _, kv := range q["metadata"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return invalid("metadata filter %q: want key=value", kv)
		}
		if old, dup := o.Metadata[k]; dup && old != v {
			return invalid("metadata filter names key %q twice with different values", k)
		}
		o.Metadata[k] = v
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > sandboxes.MaxListLimit {
			return invalid("limit %q: must be 1-%d", v, sandboxes.MaxListLimit)
		}
		o.Limit = n
	}
	o.Cursor = q.Get("cursor")
	page, err := s.sandboxes.List(r.Context(), principal(r.Context()).TeamID, o)
	if err != nil {
		return err
	}
	type out struct {
		Sandboxes  []api.Sandbox `json:"sandboxes"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}
	res := out{Sandboxes: make([]api.Sandbox, len(page.Sandboxes)), NextCursor: page.Next}
	for i, sb := range page.Sandboxes {
		res.Sandboxes[i] = sandboxJSON(sb, "")
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	sb, err := s.teamSandbox(r.Context(), chi.URLParam(r, "sandboxID"))
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", sb.ID, "delete", err, nil) }()
	if err := s.sandboxes.Delete(ctx, sb.TeamID, sb.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
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
	if pol := sandboxes.StoredNetwork(sb); pol != nil {
		out.Network = &api.NetworkPolicy{AllowInternet: pol.AllowInternet, AllowOut: pol.AllowOut, DenyOut: pol.DenyOut}
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

// networkPolicy converts the API's policy for the service.
func networkPolicy(p *api.NetworkPolicy) *sandboxes.Network {
	if p == nil {
		return nil
	}
	return &sandboxes.Network{AllowInternet: p.AllowInternet, AllowOut: p.AllowOut, DenyOut: p.DenyOut}
}
