package rest

// Identity and tenancy routes: the caller (/v1/me), teams, members, API
// keys and the audit log; and audit, which every mutating route calls.
//
// Who may do what:
//   - any member reads their team, its members and its API keys (never
//     the secrets);
//   - admins and owners add, re-role and remove members, create and
//     revoke API keys (a key acts as admin, so a member creating one would
//     be an escalation) and read the audit log;
//   - only owners grant or take away the owner role, and a team always
//     keeps one owner;
//   - any member may remove themselves (leave);
//   - API keys act as admin of their team but cannot create teams or
//     manage members (or invite): those need a person;
//   - API keys never carry platform rights unless a platform admin's
//     session created them with "platform": true.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
	// auditTimeout bounds an audit write, which outlives a cancelled request.
	auditTimeout = 5 * time.Second
)

func (s *Server) mountIdentity(r chi.Router) {
	r.Get("/me", s.getMe)
	r.Get("/teams", s.listTeams)
	r.Post("/teams", s.createTeam)
	r.Get("/teams/{teamID}", s.getTeam)
	r.Get("/teams/{teamID}/members", s.listMembers)
	r.Post("/teams/{teamID}/members", s.addMember)
	r.Patch("/teams/{teamID}/members/{userID}", s.updateMember)
	r.Delete("/teams/{teamID}/members/{userID}", s.removeMember)
	r.Get("/teams/{teamID}/invites", s.listInvites)
	r.Post("/teams/{teamID}/invites", s.createInvite)
	r.Delete("/teams/{teamID}/invites/{inviteID}", s.deleteInvite)
	r.Get("/api-keys", s.listAPIKeys)
	r.Post("/api-keys", s.createAPIKey)
	r.Delete("/api-keys/{keyID}", s.revokeAPIKey)
	r.Get("/audit-logs", s.listAuditLogs)
}

// audit records a mutating action by the request's principal in its
// team's log: err nil is a success, otherwise a failure. detail is
// optional. A failed write is logged, never returned: auditing must not
// fail the request it describes.
//
// Not-found failures are not recorded: nothing was touched, and the id
// the caller named may be another team's, which this team's log must not
// show (tenant isolation covers the audit log too).
func (s *Server) audit(ctx context.Context, resourceType, resourceID, action string, err error, detail map[string]any) {
	s.auditIn(ctx, principal(ctx).TeamID, resourceType, resourceID, action, err, detail)
}

// auditIn is audit into a given team's log (for routes that act on a team
// named in the path).
func (s *Server) auditIn(ctx context.Context, teamID uuid.UUID, resourceType, resourceID, action string, err error, detail map[string]any) {
	p := principal(ctx)
	log := s.log.With("resource_type", resourceType, "resource_id", resourceID, "action", action)
	if errors.Is(err, errdefs.ErrNotFound) {
		return
	}
	if teamID == uuid.Nil {
		// Nothing to attribute it to (e.g. a user in no team).
		log.Debug("audit entry without a team dropped")
		return
	}
	d := make(map[string]any, len(detail)+2)
	for k, v := range detail {
		d[k] = v
	}
	outcome := "success"
	if err != nil {
		outcome = "failure"
		d["error_code"] = errdefs.Code(err)
		if errdefs.HTTPStatus(err) < 500 {
			d["error"] = err.Error()
		}
	}
	body, jerr := json.Marshal(d)
	if jerr != nil {
		log.Error("encode audit detail", "err", jerr)
		body = []byte("{}")
	}
	actorType, actorID := p.ActorType(), p.ActorID()
	if actorID == "" {
		actorType = "system"
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if werr := s.q.InsertAuditLog(ctx, store.InsertAuditLogParams{
		TeamID: teamID, ActorType: actorType, ActorID: actorID,
		ResourceType: resourceType, ResourceID: resourceID, Action: action,
		Outcome: outcome, Detail: body,
	}); werr != nil {
		log.Error("write audit log", "team_id", teamID, "err", werr)
	}
}

// idString is id as text, or "" for the nil id (nothing was created).
func idString(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func apiUser(u store.User) api.User {
	return api.User{Id: u.ID, Email: u.Email, Name: u.Name, CreatedAt: u.CreatedAt}
}

func apiTeam(t store.Team, role Role) api.Team {
	out := api.Team{Id: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}
	if role != "" {
		r := api.Role(role)
		out.Role = &r
	}
	return out
}

func apiKeyOut(k store.ApiKey) api.APIKey {
	return api.APIKey{
		Id: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedBy: k.CreatedBy,
		CreatedAt: k.CreatedAt, LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt,
		Platform: k.Platform,
	}
}

func apiMember(m store.GetTeamMemberRow) api.Member {
	return api.Member{UserId: m.UserID, Email: m.Email, Name: m.Name, Role: api.Role(m.Role), CreatedAt: m.CreatedAt}
}

func parseRole(s api.Role) (Role, error) {
	switch r := Role(s); r {
	case RoleOwner, RoleAdmin, RoleMember:
		return r, nil
	}
	return "", invalid("role %q: want owner, admin or member", s)
}

func pathUUID(r *http.Request, name string) (uuid.UUID, error) {
	v := chi.URLParam(r, name)
	id, err := uuid.Parse(v)
	if err != nil {
		return uuid.Nil, invalid("%s %q is not a valid id", name, v)
	}
	return id, nil
}

// needRole fails unless the principal has at least min in its team.
func needRole(p Principal, min Role, doing string) error {
	if !p.Role.atLeast(min) {
		return permissionDenied("%s needs the %s role or higher (you are %s)", doing, min, p.Role)
	}
	return nil
}

// teamAccess resolves the team in the path to the caller's role there.
// Teams the caller is not in answer 404 like missing ones.
func (s *Server) teamAccess(r *http.Request) (uuid.UUID, Role, error) {
	id, err := pathUUID(r, "teamID")
	if err != nil {
		return uuid.Nil, "", err
	}
	p := principal(r.Context())
	if id == p.TeamID && p.TeamID != uuid.Nil {
		return id, p.Role, nil
	}
	if p.UserID == nil {
		// An API key reaches only its own team.
		return uuid.Nil, "", notFound("team", id.String())
	}
	role, err := s.q.GetMemberRole(r.Context(), store.GetMemberRoleParams{TeamID: id, UserID: *p.UserID})
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, "", notFound("team", id.String())
	}
	if err != nil {
		return uuid.Nil, "", fmt.Errorf("look up membership of team %s: %w", id, err)
	}
	return id, Role(role), nil
}

func (s *Server) getMe(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principal(ctx)
	me := api.Me{Role: api.Role(p.Role), Teams: []api.Team{}, PlatformAdmin: p.PlatformAdmin}
	if p.APIKeyID != nil {
		t, err := s.q.GetTeam(ctx, p.TeamID)
		if err != nil {
			writeError(w, r, fmt.Errorf("get team %s: %w", p.TeamID, err))
			return
		}
		me.ApiKeyId = p.APIKeyID
		me.Team = apiTeam(t, p.Role)
		me.Teams = append(me.Teams, me.Team)
		writeJSON(w, http.StatusOK, me)
		return
	}
	u, err := s.q.GetUser(ctx, *p.UserID)
	if err != nil {
		writeError(w, r, fmt.Errorf("get user %s: %w", *p.UserID, err))
		return
	}
	au := apiUser(u)
	me.User = &au
	teams, err := s.userTeams(ctx, *p.UserID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	me.Teams = teams
	for _, t := range teams {
		if t.Id == p.TeamID {
			me.Team = t
		}
	}
	writeJSON(w, http.StatusOK, me)
}

func (s *Server) userTeams(ctx context.Context, userID uuid.UUID) ([]api.Team, error) {
	rows, err := s.q.ListUserTeams(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list teams of user %s: %w", userID, err)
	}
	out := make([]api.Team, 0, len(rows))
	for _, t := range rows {
		out = append(out, apiTeam(store.Team{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}, Role(t.Role)))
	}
	return out, nil
}

func (s *Server) listTeams(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principal(ctx)
	var teams []api.Team
	if p.APIKeyID != nil {
		t, err := s.q.GetTeam(ctx, p.TeamID)
		if err != nil {
			writeError(w, r, fmt.Errorf("get team %s: %w", p.TeamID, err))
			return
		}
		teams = []api.Team{apiTeam(t, p.Role)}
	} else {
		var err error
		if teams, err = s.userTeams(ctx, *p.UserID); err != nil {
			writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"teams": teams})
}

type createTeamRequest struct {
	Name string `json:"name"`
}

func (s *Server) createTeam(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principal(ctx)
	team, err := s.doCreateTeam(w, r, p)
	auditTeam := p.TeamID
	if err == nil {
		auditTeam = team.ID
	}
	s.auditIn(ctx, auditTeam, "team", idString(team.ID), "create", err, map[string]any{"name": team.Name})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiTeam(team, RoleOwner))
}

func (s *Server) doCreateTeam(w http.ResponseWriter, r *http.Request, p Principal) (store.Team, error) {
	if p.UserID == nil {
		return store.Team{}, permissionDenied("API keys cannot create teams: log in as a user")
	}
	var req createTeamRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return store.Team{}, err
	}
	name := strings.TrimSpace(req.Name)
	if name == "" || utf8.RuneCountInString(name) > maxNameLen {
		return store.Team{Name: req.Name}, invalid("team name must be 1 to %d characters", maxNameLen)
	}
	var team store.Team
	err := s.inTx(r.Context(), func(q *store.Queries) error {
		var err error
		if team, err = q.CreateTeam(r.Context(), name); err != nil {
			return fmt.Errorf("create team: %w", err)
		}
		_, err = q.AddTeamMember(r.Context(), store.AddTeamMemberParams{TeamID: team.ID, UserID: *p.UserID, Role: string(RoleOwner)})
		if err != nil {
			return fmt.Errorf("add team owner: %w", err)
		}
		return nil
	})
	return team, err
}

func (s *Server) getTeam(w http.ResponseWriter, r *http.Request) {
	id, role, err := s.teamAccess(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	t, err := s.q.GetTeam(r.Context(), id)
	if errors.Is(err, pgx.ErrNoRows) {
		err = notFound("team", id.String())
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiTeam(t, role))
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	id, _, err := s.teamAccess(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	rows, err := s.q.ListTeamMembers(r.Context(), id)
	if err != nil {
		writeError(w, r, fmt.Errorf("list members of team %s: %w", id, err))
		return
	}
	out := make([]api.Member, 0, len(rows))
	for _, m := range rows {
		out = append(out, apiMember(store.GetTeamMemberRow(m)))
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": out})
}

// memberAccess is teamAccess for routes that change membership: the
// caller must be a person (not an API key). It returns the team and the
// caller's role; the audit team is where to record the attempt.
func (s *Server) memberAccess(r *http.Request) (team, auditTeam uuid.UUID, role Role, err error) {
	p := principal(r.Context())
	team, role, err = s.teamAccess(r)
	if err != nil {
		return uuid.Nil, p.TeamID, "", err
	}
	if p.UserID == nil {
		return team, team, role, permissionDenied("API keys cannot manage members: log in as a user")
	}
	return team, team, role, nil
}

type addMemberRequest struct {
	Email string   `json:"email"`
	Role  api.Role `json:"role"`
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	detail := map[string]any{}
	m, auditTeam, err := s.doAddMember(w, r, detail)
	s.auditIn(ctx, auditTeam, "member", idString(m.UserID), "add", err, detail)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, apiMember(m))
}

func (s *Server) doAddMember(w http.ResponseWriter, r *http.Request, detail map[string]any) (store.GetTeamMemberRow, uuid.UUID, error) {
	var none store.GetTeamMemberRow
	team, auditTeam, role, err := s.memberAccess(r)
	detail["team_id"] = chi.URLParam(r, "teamID")
	if err != nil {
		return none, auditTeam, err
	}
	if err := needRole(Principal{Role: role}, RoleAdmin, "adding members"); err != nil {
		return none, auditTeam, err
	}
	var req addMemberRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return none, auditTeam, err
	}
	newRole, err := parseRole(req.Role)
	if err != nil {
		return none, auditTeam, err
	}
	detail["role"], detail["email"] = string(newRole), req.Email
	if newRole == RoleOwner && role != RoleOwner {
		return none, auditTeam, permissionDenied("only owners can add owners")
	}
	email := strings.TrimSpace(req.Email)
	if email == "" || len(email) > maxEmailLen {
		return none, auditTeam, invalid("email is required")
	}
	ctx := r.Context()
	u, err := s.q.GetUserByEmail(ctx, email)
	if errors.Is(err, pgx.ErrNoRows) {
		return none, auditTeam, errdefs.New(errdefs.ErrNotFound, "no user with email %q: they must sign up first", email)
	}
	if err != nil {
		return none, auditTeam, fmt.Errorf("look up user by email: %w", err)
	}
	_, err = s.q.AddTeamMember(ctx, store.AddTeamMemberParams{TeamID: team, UserID: u.ID, Role: string(newRole)})
	if isUniqueViolation(err) {
		return store.GetTeamMemberRow{UserID: u.ID}, auditTeam, errdefs.New(errdefs.ErrAlreadyExists, "%s is already a member of this team", email)
	}
	if err != nil {
		return none, auditTeam, fmt.Errorf("add member to team %s: %w", team, err)
	}
	m, err := s.q.GetTeamMember(ctx, store.GetTeamMemberParams{TeamID: team, UserID: u.ID})
	if err != nil {
		return none, auditTeam, fmt.Errorf("read back member: %w", err)
	}
	return m, auditTeam, nil
}

type updateMemberRequest struct {
	Role api.Role `json:"role"`
}

func (s *Server) updateMember(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	detail := map[string]any{"team_id": chi.URLParam(r, "teamID")}
	m, auditTeam, err := s.doUpdateMember(w, r, detail)
	s.auditIn(ctx, auditTeam, "member", chi.URLParam(r, "userID"), "update_role", err, detail)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiMember(m))
}

func (s *Server) doUpdateMember(w http.ResponseWriter, r *http.Request, detail map[string]any) (store.GetTeamMemberRow, uuid.UUID, error) {
	var none store.GetTeamMemberRow
	team, auditTeam, role, err := s.memberAccess(r)
	if err != nil {
		return none, auditTeam, err
	}
	if err := needRole(Principal{Role: role}, RoleAdmin, "changing roles"); err != nil {
		return none, auditTeam, err
	}
	target, err := pathUUID(r, "userID")
	if err != nil {
		return none, auditTeam, err
	}
	var req updateMemberRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return none, auditTeam, err
	}
	newRole, err := parseRole(req.Role)
	if err != nil {
		return none, auditTeam, err
	}
	detail["role"] = string(newRole)
	ctx := r.Context()
	var m store.GetTeamMemberRow
	err = s.inTx(ctx, func(q *store.Queries) error {
		cur, err := lockMember(ctx, q, team, target)
		if err != nil {
			return err
		}
		detail["previous_role"] = cur.Role
		if (Role(cur.Role) == RoleOwner || newRole == RoleOwner) && role != RoleOwner {
			return permissionDenied("only owners can grant or take away the owner role")
		}
		if Role(cur.Role) == RoleOwner && newRole != RoleOwner {
			if err := keepsAnOwner(ctx, q, team); err != nil {
				return err
			}
		}
		if err := q.UpdateTeamMemberRole(ctx, store.UpdateTeamMemberRoleParams{TeamID: team, UserID: target, Role: string(newRole)}); err != nil {
			return fmt.Errorf("update role: %w", err)
		}
		m = cur
		m.Role = string(newRole)
		return nil
	})
	return m, auditTeam, err
}

// lockMember locks the team's membership (so concurrent changes cannot
// both remove the last owner) and returns the target member.
func lockMember(ctx context.Context, q *store.Queries, team, user uuid.UUID) (store.GetTeamMemberRow, error) {
	if _, err := q.LockTeam(ctx, team); err != nil {
		return store.GetTeamMemberRow{}, fmt.Errorf("lock team %s: %w", team, err)
	}
	m, err := q.GetTeamMember(ctx, store.GetTeamMemberParams{TeamID: team, UserID: user})
	if errors.Is(err, pgx.ErrNoRows) {
		return m, notFound("member", user.String())
	}
	if err != nil {
		return m, fmt.Errorf("get member %s: %w", user, err)
	}
	return m, nil
}

// keepsAnOwner fails when the team has only one owner (who is about to
// stop being one).
func keepsAnOwner(ctx context.Context, q *store.Queries, team uuid.UUID) error {
	n, err := q.CountTeamOwners(ctx, team)
	if err != nil {
		return fmt.Errorf("count owners: %w", err)
	}
	if n <= 1 {
		return errdefs.New(errdefs.ErrFailedPrecondition, "a team must keep at least one owner: make someone else owner first")
	}
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	detail := map[string]any{"team_id": chi.URLParam(r, "teamID")}
	auditTeam, err := s.doRemoveMember(r, detail)
	s.auditIn(ctx, auditTeam, "member", chi.URLParam(r, "userID"), "remove", err, detail)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) doRemoveMember(r *http.Request, detail map[string]any) (uuid.UUID, error) {
	team, auditTeam, role, err := s.memberAccess(r)
	if err != nil {
		return auditTeam, err
	}
	target, err := pathUUID(r, "userID")
	if err != nil {
		return auditTeam, err
	}
	self := *principal(r.Context()).UserID == target
	if !self {
		if err := needRole(Principal{Role: role}, RoleAdmin, "removing members"); err != nil {
			return auditTeam, err
		}
	}
	ctx := r.Context()
	return auditTeam, s.inTx(ctx, func(q *store.Queries) error {
		cur, err := lockMember(ctx, q, team, target)
		if err != nil {
			return err
		}
		detail["role"] = cur.Role
		if Role(cur.Role) == RoleOwner {
			if role != RoleOwner {
				return permissionDenied("only owners can remove owners")
			}
			if err := keepsAnOwner(ctx, q, team); err != nil {
				return err
			}
		}
		if err := q.DeleteTeamMember(ctx, store.DeleteTeamMemberParams{TeamID: team, UserID: target}); err != nil {
			return fmt.Errorf("remove member: %w", err)
		}
		return nil
	})
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	keys, err := s.q.ListAPIKeys(r.Context(), p.TeamID)
	if err != nil {
		writeError(w, r, fmt.Errorf("list api keys: %w", err))
		return
	}
	out := make([]api.APIKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, apiKeyOut(k))
	}
	writeJSON(w, http.StatusOK, map[string]any{"api_keys": out})
}

type createAPIKeyRequest struct {
	Name string `json:"name"`
	// Platform asks for a key with platform rights (regular hosts); only
	// a platform admin's session may.
	Platform bool `json:"platform"`
	// Format is the key's shape: "wrenn" (default) or "e2b" (e2b_ + 40
	// hex, what E2B's SDKs expect).
	Format string `json:"format"`
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	k, secret, err := s.doCreateAPIKey(w, r)
	s.audit(ctx, "api_key", idString(k.ID), "create", err, map[string]any{"name": k.Name, "prefix": k.Prefix, "platform": k.Platform})
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := apiKeyOut(k)
	writeJSON(w, http.StatusCreated, api.CreatedAPIKey{
		Id: out.Id, Name: out.Name, Prefix: out.Prefix, CreatedBy: out.CreatedBy, CreatedAt: out.CreatedAt,
		Platform: out.Platform, Key: secret,
	})
}

func (s *Server) doCreateAPIKey(w http.ResponseWriter, r *http.Request) (store.ApiKey, string, error) {
	p := principal(r.Context())
	if err := needRole(p, RoleAdmin, "creating API keys"); err != nil {
		return store.ApiKey{}, "", err
	}
	var req createAPIKeyRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return store.ApiKey{}, "", err
	}
	name := strings.TrimSpace(req.Name)
	if utf8.RuneCountInString(name) > maxNameLen {
		return store.ApiKey{}, "", invalid("name is longer than %d characters", maxNameLen)
	}
	// A key with platform rights is made on purpose, by a logged-in person
	// who has them; a key cannot mint one. It stops carrying them when its
	// creator is demoted (GetAPIKeyByHash).
	if req.Platform && (p.UserID == nil || !p.PlatformAdmin) {
		return store.ApiKey{Name: name, Platform: true}, "", permissionDenied("only a platform admin, logged in (not with an API key), may create a key with platform rights")
	}
	format, ok := auth.ParseKeyFormat(req.Format)
	if !ok {
		return store.ApiKey{Name: name}, "", invalid("format %q: must be wrenn or e2b", req.Format)
	}
	gen, err := auth.GenerateAPIKeyIn(format)
	if err != nil {
		return store.ApiKey{}, "", err
	}
	k, err := s.q.CreateAPIKey(r.Context(), store.CreateAPIKeyParams{
		TeamID: p.TeamID, CreatedBy: p.UserID, Name: name, Prefix: gen.Prefix, KeyHash: gen.Hash,
		Platform: req.Platform,
	})
	if err != nil {
		return store.ApiKey{Name: name}, "", fmt.Errorf("store api key: %w", err)
	}
	return k, gen.Key, nil
}

func (s *Server) revokeAPIKey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	err := s.doRevokeAPIKey(r)
	s.audit(ctx, "api_key", chi.URLParam(r, "keyID"), "revoke", err, nil)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) doRevokeAPIKey(r *http.Request) error {
	p := principal(r.Context())
	if err := needRole(p, RoleAdmin, "revoking API keys"); err != nil {
		return err
	}
	id, err := pathUUID(r, "keyID")
	if err != nil {
		return err
	}
	_, err = s.q.RevokeAPIKey(r.Context(), store.RevokeAPIKeyParams{Now: s.clk.Now(), ID: id, TeamID: p.TeamID})
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("API key", id.String())
	}
	if err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	return nil
}

// Audit-log cursors are opaque to clients: "a1." + the last id seen,
// base64url-encoded, so the encoding can change without breaking them.
const auditCursorPrefix = "a1."

func encodeAuditCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(auditCursorPrefix + strconv.FormatInt(id, 10)))
}

func decodeAuditCursor(c string) (int64, error) {
	bad := invalid("cursor %q is not one this API returned", c)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, bad
	}
	n, ok := strings.CutPrefix(string(raw), auditCursorPrefix)
	if !ok {
		return 0, bad
	}
	id, err := strconv.ParseInt(n, 10, 64)
	if err != nil || id <= 0 {
		return 0, bad
	}
	return id, nil
}

// pageLimit parses the limit query parameter (1..1000, default 100).
func pageLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultPageLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPageLimit {
		return 0, invalid("limit %q: want an integer from 1 to %d", v, maxPageLimit)
	}
	return n, nil
}

// auditFilters reads the audit list's optional filters; an absent or empty
// one stays nil (matches everything). Values are compared exactly, so a
// bad one only finds nothing, but the closed sets and times are checked
// so that a typo is a 400 rather than a silently empty log.
func auditFilters(q url.Values) (store.ListAuditLogsParams, error) {
	var f store.ListAuditLogsParams
	text := func(name string, max int, dst **string) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		if len(v) > max {
			return invalid("%s: at most %d bytes", name, max)
		}
		*dst = &v
		return nil
	}
	for _, t := range []struct {
		name string
		max  int
		dst  **string
	}{
		{"actor_type", 16, &f.ActorType}, {"actor_id", 200, &f.ActorID},
		{"resource_type", 64, &f.ResourceType}, {"resource_id", 200, &f.ResourceID},
		{"action", 64, &f.Action}, {"outcome", 16, &f.Outcome},
	} {
		if err := text(t.name, t.max, t.dst); err != nil {
			return f, err
		}
	}
	if f.ActorType != nil && !api.AuditEntryActorType(*f.ActorType).Valid() {
		return f, invalid("actor_type %q: want user, api_key, host or system", *f.ActorType)
	}
	if f.Outcome != nil && !api.AuditEntryOutcome(*f.Outcome).Valid() {
		return f, invalid("outcome %q: want success or failure", *f.Outcome)
	}
	for _, t := range []struct {
		name string
		dst  **time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := q.Get(t.name)
		if v == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, invalid("%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", t.name, v)
		}
		*t.dst = &at
	}
	if f.Since != nil && f.Until != nil && !f.Since.Before(*f.Until) {
		return f, invalid("since must be before until")
	}
	return f, nil
}

func (s *Server) listAuditLogs(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	if err := needRole(p, RoleAdmin, "reading the audit log"); err != nil {
		writeError(w, r, err)
		return
	}
	limit, err := pageLimit(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	before := int64(1<<63 - 1)
	if c := r.URL.Query().Get("cursor"); c != "" {
		if before, err = decodeAuditCursor(c); err != nil {
			writeError(w, r, err)
			return
		}
	}
	params, err := auditFilters(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	params.TeamID, params.BeforeID = p.TeamID, before
	// One extra row tells whether there is a next page.
	params.MaxRows = int32(limit + 1)
	rows, err := s.q.ListAuditLogs(r.Context(), params)
	if err != nil {
		writeError(w, r, fmt.Errorf("list audit log: %w", err))
		return
	}
	type page struct {
		Entries    []api.AuditEntry `json:"entries"`
		NextCursor string           `json:"next_cursor,omitempty"`
	}
	out := page{Entries: make([]api.AuditEntry, 0, min(len(rows), limit))}
	if len(rows) > limit {
		rows = rows[:limit]
		out.NextCursor = encodeAuditCursor(rows[len(rows)-1].ID)
	}
	for _, e := range rows {
		var detail map[string]any
		if err := json.Unmarshal(e.Detail, &detail); err != nil || detail == nil {
			detail = map[string]any{}
		}
		out.Entries = append(out.Entries, api.AuditEntry{
			Id: e.ID, ActorType: api.AuditEntryActorType(e.ActorType), ActorId: e.ActorID,
			ResourceType: e.ResourceType, ResourceId: e.ResourceID, Action: e.Action,
			Outcome: api.AuditEntryOutcome(e.Outcome), Detail: &detail, CreatedAt: e.CreatedAt,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
