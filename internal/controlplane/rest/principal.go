package rest

import (
	"context"

	"github.com/google/uuid"
)

// Role is a team member's role. API keys act as admin of their team
// (they cannot manage members).
type Role string

const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// atLeast reports whether r grants at least min.
func (r Role) atLeast(min Role) bool {
	rank := map[Role]int{RoleMember: 1, RoleAdmin: 2, RoleOwner: 3}
	return rank[r] >= rank[min]
}

// Principal is who a request acts as and for which team.
type Principal struct {
	TeamID uuid.UUID
	Role   Role
	// Exactly one of UserID and APIKeyID is set.
	UserID   *uuid.UUID
	APIKeyID *uuid.UUID
	// PlatformAdmin may add and manage regular hosts (ADR 0003), which run
	// every team's sandboxes: a session of a user `wrenn-cp admin` made a
	// platform admin, or an API key such a user created with
	// "platform": true. Other keys have only their team's rights, whoever
	// created them.
	PlatformAdmin bool
}

// ActorType and ActorID name the principal in the audit log.
func (p Principal) ActorType() string {
	if p.APIKeyID != nil {
		return "api_key"
	}
	return "user"
}

func (p Principal) ActorID() string {
	if p.APIKeyID != nil {
		return p.APIKeyID.String()
	}
	if p.UserID != nil {
		return p.UserID.String()
	}
	return ""
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principal returns the request's authenticated principal; routes behind
// s.authenticate always have one.
func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}
