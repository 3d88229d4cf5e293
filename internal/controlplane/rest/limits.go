package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/internal/controlplane/quota"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

func (s *Server) mountLimits(r chi.Router) {
	r.Get("/teams/{teamID}/limits", s.sbHandler(s.getTeamLimits))
	r.Put("/teams/{teamID}/limits", s.sbHandler(s.putTeamLimits))
}

// quota is the enforcer with the configured defaults.
func (s *Server) quota() quota.Enforcer { return quota.Enforcer{Defaults: s.deps.TeamLimits} }

// hasPlatformRights reports whether the principal may act on the platform
// as a whole (here: set any team's limits). The one place that decides it
// for quotas, so a change in how platform rights are granted is one edit.
func hasPlatformRights(p Principal) bool { return p.PlatformAdmin }

// teamLimitsJSON is GET/PUT /v1/teams/{teamID}/limits's answer.
type teamLimitsJSON struct {
	TeamID uuid.UUID `json:"team_id"`
	// Limits are in force: the overrides, else the defaults. 0: unlimited.
	Limits quota.Limits `json:"limits"`
	// Overrides are the team's own values; null: the default.
	Overrides quota.Overrides `json:"overrides"`
	Usage     quota.Amount    `json:"usage"`
}

// getTeamLimits: any member of the team (or a platform admin) may read.
func (s *Server) getTeamLimits(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var team uuid.UUID
	if hasPlatformRights(principal(ctx)) {
		id, err := s.existingTeam(ctx, r)
		if err != nil {
			return err
		}
		team = id
	} else {
		id, _, err := s.teamAccess(r)
		if err != nil {
			return err
		}
		team = id
	}
	rep, err := s.quota().Load(ctx, s.q, team)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, teamLimitsJSON{TeamID: team, Limits: rep.Limits, Overrides: rep.Overrides, Usage: rep.Usage})
	return nil
}

// putTeamLimits replaces a team's overrides (a field left out or null goes
// back to the default). Platform admins only: a team cannot raise its own.
func (s *Server) putTeamLimits(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	if !hasPlatformRights(principal(ctx)) {
		// Another team's limits answer like a missing team; one's own
		// cannot be raised from inside the team.
		if _, _, err := s.teamAccess(r); err != nil {
			return err
		}
		return errdefs.New(errdefs.ErrPermissionDenied, "setting team limits needs platform rights")
	}
	team, err := s.existingTeam(ctx, r)
	if err != nil {
		return err
	}
	var body quota.Overrides
	defer func() { s.audit(ctx, "team", team.String(), "set_limits", err, map[string]any{"overrides": body}) }()
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if err := body.Validate(); err != nil {
		return err
	}
	if _, err := s.q.SetTeamLimits(ctx, store.SetTeamLimitsParams{
		TeamID: team, MaxSandboxes: body.MaxSandboxes, MaxVcpus: body.MaxVCPUs, MaxMemoryMb: body.MaxMemoryMB,
		MaxDiskMb: body.MaxDiskMB, MaxTemplates: body.MaxTemplates, Now: s.clk.Now(),
	}); err != nil {
		return fmt.Errorf("set limits of team %s: %w", team, err)
	}
	rep, err := s.quota().Load(ctx, s.q, team)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, teamLimitsJSON{TeamID: team, Limits: rep.Limits, Overrides: rep.Overrides, Usage: rep.Usage})
	return nil
}

// existingTeam is the path's team, which must exist.
func (s *Server) existingTeam(ctx context.Context, r *http.Request) (uuid.UUID, error) {
	id, err := pathUUID(r, "teamID")
	if err != nil {
		return uuid.Nil, err
	}
	if _, err := s.q.GetTeam(ctx, id); errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, notFound("team", id.String())
	} else if err != nil {
		return uuid.Nil, fmt.Errorf("get team %s: %w", id, err)
	}
	return id, nil
}
