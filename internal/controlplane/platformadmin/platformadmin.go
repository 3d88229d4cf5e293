// Package platformadmin makes, lists and removes the installation's
// platform admins: the people who may add and manage regular hosts, which
// run every team's sandboxes (ADR 0003). It is `wrenn-cp admin`; nothing
// else grants platform rights (signing up never does).
package platformadmin

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

// Password bounds, the same as signup's.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 200
)

// DefaultTeamName is the team a newly created admin owns, so they can log
// in and work (hosts belong to a team).
const DefaultTeamName = "admin"

// Action is what Ensure did.
type Action string

const (
	Created  Action = "created"  // a new user, platform admin, owner of a new team
	Promoted Action = "promoted" // an existing user became platform admin
	Already  Action = "unchanged"
)

// Request says whom to make platform admin.
type Request struct {
	Email string
	// Password is required to create the user. For an existing user it is
	// set only when ResetPassword.
	Password      string
	ResetPassword bool
	// TeamName names the team a created user owns (default DefaultTeamName).
	TeamName string
}

// Result is what Ensure did.
type Result struct {
	Action Action
	User   store.User
	// TeamID is the new team's, when Action is Created.
	TeamID string
	// PasswordSet: the password was set (Created, or ResetPassword).
	PasswordSet bool
}

func (r Result) String() string {
	var s string
	switch r.Action {
	case Created:
		s = fmt.Sprintf("created platform admin %s (user %s), owner of team %s", r.User.Email, r.User.ID, r.TeamID)
	case Promoted:
		s = fmt.Sprintf("promoted existing user %s (user %s) to platform admin", r.User.Email, r.User.ID)
	default:
		s = fmt.Sprintf("%s (user %s) is already a platform admin", r.User.Email, r.User.ID)
	}
	if r.PasswordSet && r.Action != Created {
		s += "; password reset"
	}
	return s
}

func checkEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	a, err := mail.ParseAddress(email)
	if email == "" || len(email) > 254 || err != nil || a.Address != email || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "email %q is not a valid address (want name@example.com)", email)
	}
	return email, nil
}

func checkPassword(pw string) error {
	if n := utf8.RuneCountInString(pw); n < MinPasswordLen || n > MaxPasswordLen {
		return errdefs.New(errdefs.ErrInvalidArgument, "password must be %d to %d characters", MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// Ensure makes req.Email a platform admin: it creates the user (with a team
// they own) when there is none, else promotes them. Running it again
// changes nothing. One transaction.
func Ensure(ctx context.Context, pool *pgxpool.Pool, req Request) (Result, error) {
	email, err := checkEmail(req.Email)
	if err != nil {
		return Result{}, err
	}
	teamName := strings.TrimSpace(req.TeamName)
	if teamName == "" {
		teamName = DefaultTeamName
	}
	if utf8.RuneCountInString(teamName) > 100 {
		return Result{}, errdefs.New(errdefs.ErrInvalidArgument, "team name is longer than 100 characters")
	}
	var hash string
	if req.Password != "" {
		if err := checkPassword(req.Password); err != nil {
			return Result{}, err
		}
		if hash, err = auth.HashPassword(req.Password, auth.DefaultParams); err != nil {
			return Result{}, fmt.Errorf("hash password: %w", err)
		}
	}
	var res Result
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		u, err := q.GetUserByEmail(ctx, email)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if hash == "" {
				return errdefs.New(errdefs.ErrInvalidArgument, "no user %s yet: a password is needed to create one", email)
			}
			if u, err = q.CreateUser(ctx, store.CreateUserParams{Email: email, Name: "Platform admin", PasswordHash: hash}); err != nil {
				return fmt.Errorf("create user %s: %w", email, err)
			}
			team, err := q.CreateTeam(ctx, teamName)
			if err != nil {
				return fmt.Errorf("create team: %w", err)
			}
			if _, err := q.AddTeamMember(ctx, store.AddTeamMemberParams{TeamID: team.ID, UserID: u.ID, Role: "owner"}); err != nil {
				return fmt.Errorf("add team owner: %w", err)
			}
			res = Result{Action: Created, TeamID: team.ID.String(), PasswordSet: true}
		case err != nil:
			return fmt.Errorf("look up user %s: %w", email, err)
		case u.PlatformAdmin:
			res = Result{Action: Already}
		default:
			res = Result{Action: Promoted}
		}
		if res.Action != Created && req.ResetPassword {
			if hash == "" {
				return errdefs.New(errdefs.ErrInvalidArgument, "--reset-password needs a password")
			}
			if err := q.SetUserPassword(ctx, store.SetUserPasswordParams{ID: u.ID, PasswordHash: hash}); err != nil {
				return fmt.Errorf("set password of %s: %w", email, err)
			}
			res.PasswordSet = true
		}
		if u, err = q.SetPlatformAdmin(ctx, store.SetPlatformAdminParams{ID: u.ID, PlatformAdmin: true}); err != nil {
			return fmt.Errorf("make %s platform admin: %w", email, err)
		}
		res.User = u
		return nil
	})
	return res, err
}

// Demote takes platform rights away from email. Its platform API keys stop
// carrying them at once (they need a creator who is a platform admin). It
// reports whether the user was one.
func Demote(ctx context.Context, pool *pgxpool.Pool, email string) (bool, error) {
	q := store.New(pool)
	u, err := q.GetUserByEmail(ctx, strings.TrimSpace(email))
	if errors.Is(err, pgx.ErrNoRows) {
		return false, errdefs.New(errdefs.ErrNotFound, "no user with email %q", email)
	}
	if err != nil {
		return false, fmt.Errorf("look up user %s: %w", email, err)
	}
	if _, err := q.SetPlatformAdmin(ctx, store.SetPlatformAdminParams{ID: u.ID, PlatformAdmin: false}); err != nil {
		return false, fmt.Errorf("demote %s: %w", email, err)
	}
	return u.PlatformAdmin, nil
}

// List returns the platform admins, oldest first.
func List(ctx context.Context, pool *pgxpool.Pool) ([]store.User, error) {
	us, err := store.New(pool).ListPlatformAdmins(ctx)
	if err != nil {
		return nil, fmt.Errorf("list platform admins: %w", err)
	}
	return us, nil
}
