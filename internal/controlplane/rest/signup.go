package rest

// Who may sign up (WRENN_SIGNUP), team invitations, and the signup
// transaction. Signing up never grants platform rights: only
// `wrenn-cp admin` makes a platform admin.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// SignupMode is who may create an account with POST /v1/auth/signup.
type SignupMode string

const (
	// SignupClosed: nobody; accounts come from `wrenn-cp admin` and team
	// admins add existing users. The default (Deps.Signup "" too).
	SignupClosed SignupMode = "closed"
	// SignupInvite: only with an invitation a team admin created
	// (POST /v1/teams/{teamID}/invites); the new user joins that team.
	SignupInvite SignupMode = "invite"
	// SignupOpen: anyone who can reach the API.
	SignupOpen SignupMode = "open"
)

const (
	// inviteTTL is how long an invitation can be used.
	inviteTTL = 7 * 24 * time.Hour
	// invitePrefix marks invitation tokens (like wrn_ for API keys).
	invitePrefix = "wri_"
)

func (s *Server) signupMode() SignupMode {
	switch s.deps.Signup {
	case SignupOpen, SignupInvite:
		return s.deps.Signup
	}
	return SignupClosed
}

// signupAllowed is checked before anything costly (a password hash): a
// closed installation refuses at once, an invite-only one wants a token.
func (s *Server) signupAllowed(inviteToken *string) error {
	switch s.signupMode() {
	case SignupOpen:
		return nil
	case SignupInvite:
		if inviteToken == nil || strings.TrimSpace(*inviteToken) == "" {
			return permissionDenied("signup needs an invitation: ask a team admin for an invite_token")
		}
		return nil
	}
	return permissionDenied("signup is closed: ask the operator or a team admin for an account")
}

var errBadInvite = permissionDenied("the invitation is invalid, expired, already used or for another email")

// createAccount creates the user and either joins the team of the
// invitation (when inviteToken is set) or creates a team of their own,
// in one transaction. It returns the team the session acts for and the
// user's role there.
func (s *Server) createAccount(ctx context.Context, email, name, hash, teamName string, inviteToken *string) (store.User, store.Team, Role, error) {
	var (
		user store.User
		team store.Team
		role = RoleOwner
	)
	err := s.inTx(ctx, func(q *store.Queries) error {
		var err error
		user, err = q.CreateUser(ctx, store.CreateUserParams{Email: email, Name: name, PasswordHash: hash})
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrAlreadyExists, "email %q is already registered", email)
		}
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		if inviteToken != nil && strings.TrimSpace(*inviteToken) != "" {
			inv, err := q.UseTeamInvite(ctx, store.UseTeamInviteParams{
				TokenHash: hashInvite(strings.TrimSpace(*inviteToken)), Now: s.clk.Now(), UsedBy: &user.ID,
			})
			if errors.Is(err, pgx.ErrNoRows) {
				return errBadInvite
			}
			if err != nil {
				return fmt.Errorf("use invitation: %w", err)
			}
			if !strings.EqualFold(inv.Email, email) {
				return errBadInvite
			}
			if team, err = q.GetTeam(ctx, inv.TeamID); err != nil {
				return fmt.Errorf("get team %s of invitation: %w", inv.TeamID, err)
			}
			role = Role(inv.Role)
		} else if team, err = q.CreateTeam(ctx, teamName); err != nil {
			return fmt.Errorf("create team: %w", err)
		}
		if _, err = q.AddTeamMember(ctx, store.AddTeamMemberParams{TeamID: team.ID, UserID: user.ID, Role: string(role)}); err != nil {
			return fmt.Errorf("add team member: %w", err)
		}
		return nil
	})
	return user, team, role, err
}

func hashInvite(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func newInviteToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return invitePrefix + hex.EncodeToString(b)
}

type createInviteRequest struct {
	Email string   `json:"email"`
	Role  api.Role `json:"role"`
}

func apiInvite(i store.TeamInvite) api.Invite {
	return api.Invite{
		Id: i.ID, TeamId: i.TeamID, Email: i.Email, Role: api.Role(i.Role),
		CreatedBy: i.CreatedBy, CreatedAt: i.CreatedAt, ExpiresAt: i.ExpiresAt,
	}
}

// inviteAccess: inviting is managing members, so it needs a person
// (not an API key) with the admin role or higher in the team.
func (s *Server) inviteAccess(r *http.Request, doing string) (team, auditTeam uuid.UUID, role Role, err error) {
	team, auditTeam, role, err = s.memberAccess(r)
	if err != nil {
		return team, auditTeam, role, err
	}
	return team, auditTeam, role, needRole(Principal{Role: role}, RoleAdmin, doing)
}

// createInvite answers a one-time token that lets email sign up into the
// team with role, even when signup is otherwise by invitation only.
func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var (
		inv  store.TeamInvite
		body createInviteRequest
	)
	team, auditTeam, role, err := s.inviteAccess(r, "inviting members")
	defer func() {
		s.auditIn(ctx, auditTeam, "invite", idString(inv.ID), "create", err,
			map[string]any{"email": body.Email, "role": string(body.Role)})
	}()
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err = decodeJSON(w, r, &body, false); err != nil {
		writeError(w, r, err)
		return
	}
	var newRole Role
	if body.Role == "" {
		body.Role = api.RoleMember
	}
	if newRole, err = parseRole(body.Role); err != nil {
		writeError(w, r, err)
		return
	}
	if newRole == RoleOwner && role != RoleOwner {
		err = permissionDenied("only owners can invite owners")
		writeError(w, r, err)
		return
	}
	var email string
	if email, err = validEmail(body.Email); err != nil {
		writeError(w, r, err)
		return
	}
	tok := newInviteToken()
	inv, err = s.q.CreateTeamInvite(ctx, store.CreateTeamInviteParams{
		TeamID: team, Email: email, Role: string(newRole), TokenHash: hashInvite(tok),
		CreatedBy: principal(ctx).UserID, ExpiresAt: s.clk.Now().Add(inviteTTL),
	})
	if err != nil {
		err = fmt.Errorf("create invitation: %w", err)
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.CreatedInvite{
		Id: inv.ID, TeamId: inv.TeamID, Email: inv.Email, Role: api.Role(inv.Role),
		CreatedBy: inv.CreatedBy, CreatedAt: inv.CreatedAt, ExpiresAt: inv.ExpiresAt, Token: tok,
	})
}

// listInvites lists the team's open invitations (never their tokens).
func (s *Server) listInvites(w http.ResponseWriter, r *http.Request) {
	team, _, _, err := s.inviteAccess(r, "listing invitations")
	if err != nil {
		writeError(w, r, err)
		return
	}
	rows, err := s.q.ListTeamInvites(r.Context(), store.ListTeamInvitesParams{TeamID: team, Now: s.clk.Now()})
	if err != nil {
		writeError(w, r, fmt.Errorf("list invitations of team %s: %w", team, err))
		return
	}
	out := make([]api.Invite, 0, len(rows))
	for _, i := range rows {
		out = append(out, apiInvite(i))
	}
	writeJSON(w, http.StatusOK, map[string]any{"invites": out})
}

// deleteInvite withdraws an unused invitation.
func (s *Server) deleteInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	team, auditTeam, _, err := s.inviteAccess(r, "withdrawing invitations")
	defer func() { s.auditIn(ctx, auditTeam, "invite", chi.URLParam(r, "inviteID"), "delete", err, nil) }()
	if err != nil {
		writeError(w, r, err)
		return
	}
	var id uuid.UUID
	if id, err = uuid.Parse(chi.URLParam(r, "inviteID")); err != nil {
		err = notFound("invite", chi.URLParam(r, "inviteID"))
		writeError(w, r, err)
		return
	}
	_, err = s.q.DeleteTeamInvite(ctx, store.DeleteTeamInviteParams{ID: id, TeamID: team})
	if errors.Is(err, pgx.ErrNoRows) {
		err = notFound("invite", id.String())
	} else if err != nil {
		err = fmt.Errorf("delete invitation %s: %w", id, err)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
