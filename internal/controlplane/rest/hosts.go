package rest

// /v1/hosts: a team's hosts, their one-time registration tokens, and
// their removal. Agents themselves talk to hostreg, not to these routes.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"connectrpc.com/connect"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/capin"
	"github.com/wrenn/wrenn/internal/controlplane/hostreg"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

func (s *Server) mountHosts(r chi.Router) {
	r.Get("/hosts", s.listHosts)
	r.Post("/hosts", s.createHost)
	r.Get("/hosts/{hostID}", s.getHost)
	r.Delete("/hosts/{hostID}", s.deleteHost)
	r.Post("/hosts/{hostID}/token", s.regenerateHostToken)
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	rows, err := s.q.ListTeamHosts(r.Context(), principal(r.Context()).TeamID)
	if err != nil {
		writeError(w, r, fmt.Errorf("list hosts: %w", err))
		return
	}
	p := principal(r.Context())
	out := make([]api.Host, 0, len(rows))
	for _, h := range rows {
		out = append(out, apiHostFor(p, h.Host, h.SandboxesRunning))
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": out})
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	id, err := hostIDParam(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	h, err := s.q.GetTeamHost(r.Context(), store.GetTeamHostParams{ID: id, TeamID: principal(r.Context()).TeamID})
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, r, notFound("host", id.String()))
		return
	}
	if err != nil {
		writeError(w, r, fmt.Errorf("get host %s: %w", id, err))
		return
	}
	writeJSON(w, http.StatusOK, apiHostFor(principal(r.Context()), h.Host, h.SandboxesRunning))
}

// needAdmin: adding, removing and re-enrolling hosts is for the team's
// admins and owners (API keys act as admins).
func needAdmin(ctx context.Context, doing string) error {
	if p := principal(ctx); !p.Role.atLeast(RoleAdmin) {
		return errdefs.New(errdefs.ErrPermissionDenied, "%s needs the admin role or higher (you are %s)", doing, p.Role)
	}
	return nil
}

func (s *Server) createHost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var (
		body api.CreateHostRequest
		h    store.Host
		err  error
	)
	defer func() {
		s.audit(ctx, "host", hostIDOrEmpty(h.ID), "create", err, map[string]any{"type": string(body.Type)})
	}()
	if err = needAdmin(ctx, "adding a host"); err != nil {
		writeError(w, r, err)
		return
	}
	if err = decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	if !body.Type.Valid() {
		err = invalid("type %q: want regular or byoc", body.Type)
		writeError(w, r, err)
		return
	}
	// Root on a regular host can read every team's sandboxes (ADR 0003).
	if body.Type == api.CreateHostRequestTypeRegular && !principal(ctx).PlatformAdmin {
		err = permissionDenied("only a platform admin may add a regular host (it runs every team's sandboxes); add a byoc host for your own team")
		writeError(w, r, err)
		return
	}
	tok, hash := hostreg.NewRegistrationToken()
	expires := s.clk.Now().Add(hostreg.RegistrationTokenTTL)
	h, err = s.q.CreateHost(ctx, store.CreateHostParams{
		TeamID: principal(ctx).TeamID, Type: string(body.Type),
		RegistrationTokenHash: hash, RegistrationExpiresAt: expires,
	})
	if err != nil {
		err = fmt.Errorf("create host: %w", err)
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.CreatedHost{
		Host: apiHost(h, 0), RegistrationToken: capin.JoinToken(tok, s.deps.CACertHash), RegistrationExpiresAt: expires,
	})
}

// regenerateHostToken issues a new one-time registration token; any
// earlier one stops working. It is allowed for registered hosts too: an
// agent that lost its credential (or left it to expire) re-registers with
// it, which revokes the host's previous credential and certificate
// identity in the same step. The host keeps its id and its sandboxes, and
// its first heartbeat reconciles them.
//
// For a regular host only a platform admin may: whoever holds the token
// can register their own machine as the host and receive every team's
// sandboxes.
func (s *Server) regenerateHostToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, typ, err := s.ownHost(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer func() { s.audit(ctx, "host", id.String(), "regenerate_token", err, nil) }()
	if err = needAdmin(ctx, "issuing a host registration token"); err != nil {
		writeError(w, r, err)
		return
	}
	if err = needPlatformFor(ctx, typ, "issuing a registration token for a regular host"); err != nil {
		writeError(w, r, err)
		return
	}
	tok, hash := hostreg.NewRegistrationToken()
	expires := s.clk.Now().Add(hostreg.RegistrationTokenTTL)
	p := principal(ctx)
	_, err = s.q.SetHostRegistrationToken(ctx, store.SetHostRegistrationTokenParams{
		ID: id, TeamID: p.TeamID, RegistrationTokenHash: hash, RegistrationExpiresAt: expires,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = notFound("host", id.String())
		writeError(w, r, err)
		return
	}
	if err != nil {
		err = fmt.Errorf("set registration token of host %s: %w", id, err)
		writeError(w, r, err)
		return
	}
	h, err := s.q.GetTeamHost(ctx, store.GetTeamHostParams{ID: id, TeamID: p.TeamID})
	if err != nil {
		// Deleted in between; the token is useless then.
		err = fmt.Errorf("read host %s: %w", id, err)
		if errors.Is(err, pgx.ErrNoRows) {
			err = notFound("host", id.String())
		}
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.CreatedHost{
		Host: apiHostFor(p, h.Host, h.SandboxesRunning), RegistrationToken: capin.JoinToken(tok, s.deps.CACertHash), RegistrationExpiresAt: expires,
	})
}

// deleteHost marks the host deleted: it disappears from listings, its
// agent's next heartbeat is answered "host deleted" (the agent stops
// serving), and it can never register again. Refused while sandboxes that
// still hold resources are on it, unless force, which marks them stopped.
func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var (
		force   bool
		stopped []string
	)
	id, typ, err := s.ownHost(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer func() {
		s.audit(ctx, "host", id.String(), "delete", err,
			map[string]any{"force": force, "sandboxes_stopped": len(stopped)})
	}()
	if err = needAdmin(ctx, "removing a host"); err != nil {
		writeError(w, r, err)
		return
	}
	// Removing a regular host stops every team's sandboxes on it.
	if err = needPlatformFor(ctx, typ, "removing a regular host"); err != nil {
		writeError(w, r, err)
		return
	}
	if v := r.URL.Query().Get("force"); v != "" {
		if force, err = strconv.ParseBool(v); err != nil {
			err = invalid("force=%q: want true or false", v)
			writeError(w, r, err)
			return
		}
	}
	now := s.clk.Now()
	err = pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		// The row lock orders this against heartbeats and the host monitor.
		if _, err := q.LockTeamHost(ctx, store.LockTeamHostParams{ID: id, TeamID: principal(ctx).TeamID}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return notFound("host", id.String())
			}
			return fmt.Errorf("lock host %s: %w", id, err)
		}
		if !force {
			n, err := q.CountActiveHostSandboxes(ctx, id)
			if err != nil {
				return fmt.Errorf("count sandboxes of host %s: %w", id, err)
			}
			if n > 0 {
				return errdefs.New(errdefs.ErrFailedPrecondition,
					"host %s still has %d sandboxes (starting, running, paused, hibernated or missing); delete them first or pass force=true", id, n)
			}
		} else {
			var err error
			if stopped, err = q.StopActiveHostSandboxes(ctx, store.StopActiveHostSandboxesParams{HostID: id, Now: now}); err != nil {
				return fmt.Errorf("stop sandboxes of host %s: %w", id, err)
			}
		}
		if err := q.MarkHostDeleted(ctx, store.MarkHostDeletedParams{ID: id, Now: now}); err != nil {
			return fmt.Errorf("delete host %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	if len(stopped) > 0 {
		loggerFrom(r).Info("host deleted with force; its sandboxes marked stopped", "host_id", id, "sandbox_ids", stopped)
	}
	w.WriteHeader(http.StatusNoContent)
}

// ownHost returns the id in the path and the host's type once it names
// one of the caller's hosts. Only then are refusals audited: an id that is
// another team's must not appear in this team's audit log.
func (s *Server) ownHost(r *http.Request) (uuid.UUID, string, error) {
	id, err := hostIDParam(r)
	if err != nil {
		return uuid.Nil, "", err
	}
	h, err := s.q.GetTeamHost(r.Context(), store.GetTeamHostParams{ID: id, TeamID: principal(r.Context()).TeamID})
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, "", notFound("host", id.String())
	}
	if err != nil {
		return uuid.Nil, "", fmt.Errorf("get host %s: %w", id, err)
	}
	return id, h.Host.Type, nil
}

// needPlatformFor: every change to a regular host needs platform rights
// (ADR 0003), not just a role in the team that happens to own its record.
func needPlatformFor(ctx context.Context, hostType, doing string) error {
	if hostType == string(api.HostTypeRegular) && !principal(ctx).PlatformAdmin {
		return permissionDenied("%s needs a platform admin (it runs every team's sandboxes)", doing)
	}
	return nil
}

// hostIDParam: an id that is not a UUID names no host, so it answers like
// a missing one.
func hostIDParam(r *http.Request) (uuid.UUID, error) {
	v := chi.URLParam(r, "hostID")
	id, err := uuid.Parse(v)
	if err != nil {
		return uuid.Nil, notFound("host", v)
	}
	return id, nil
}

func hostIDOrEmpty(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

// apiHostFor is apiHost as p may see it: a regular host's address is the
// operator's network, shown to platform admins only.
func apiHostFor(p Principal, h store.Host, sandboxesRunning int32) api.Host {
	out := apiHost(h, sandboxesRunning)
	if h.Type == string(api.HostTypeRegular) && !p.PlatformAdmin {
		out.Address = nil
	}
	return out
}

func apiHost(h store.Host, sandboxesRunning int32) api.Host {
	out := api.Host{
		Id:                   h.ID,
		Type:                 api.HostType(h.Type),
		Status:               api.HostStatus(h.Status),
		CreatedAt:            h.CreatedAt,
		LastHeartbeatAt:      h.LastHeartbeatAt,
		Address:              hostOptString(h.Address),
		Arch:                 hostOptString(h.Arch),
		Vmm:                  hostOptString(h.Vmm),
		Accelerator:          hostOptString(h.Accelerator),
		KernelVersion:        hostOptString(h.KernelVersion),
		AgentVersion:         hostOptString(h.AgentVersion),
		Cpus:                 hostPtr(int(h.Cpus)),
		MemoryBytes:          hostPtr(h.MemoryBytes),
		DiskBytes:            hostPtr(h.DiskBytes),
		SandboxesRunning:     hostPtr(int(sandboxesRunning)),
		ReservedVcpus:        hostPtr(int(h.ReservedVcpus)),
		ReservedMemoryBytes:  hostPtr(h.ReservedMemoryBytes),
		MemoryAvailableBytes: hostPtr(h.MemoryAvailableBytes),
		DiskAvailableBytes:   hostPtr(h.DiskAvailableBytes),
	}
	return out
}

// optString leaves out what a pending host has not reported yet.
func hostOptString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func hostPtr[T any](v T) *T { return &v }

// hostFailure reports whether err is this control plane failing to reach
// a host agent (a dial, TLS or transport error, not an answer the agent
// sent), and the message tenants get instead. Such errors name addresses
// and networks the tenant must not learn about: a BYOC host's address is
// the tenant's choice, so echoing dial errors would make the control plane
// a port scanner. writeError logs the real error.
func hostFailure(err error) (string, bool) {
	var ce *connect.Error
	var ne net.Error
	var ue *url.Error
	transport := (errors.As(err, &ce) && !connect.IsWireError(ce)) || errors.As(err, &ne) || errors.As(err, &ue)
	switch {
	case !transport:
		return "", false
	case errors.Is(err, context.DeadlineExceeded):
		return "host did not answer in time", true
	}
	return "host unreachable", true
}
