package rest

// STUB (owned by the identity work): me, teams, members, API keys, audit log.

import (
	"context"

	"github.com/go-chi/chi/v5"
)

func (s *Server) mountIdentity(r chi.Router) {}

// audit records a mutating action by the request's principal: err nil is a
// success, otherwise a failure. detail is optional.
func (s *Server) audit(ctx context.Context, resourceType, resourceID, action string, err error, detail map[string]any) {
}
