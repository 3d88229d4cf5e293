package rest

// STUB (owned by the hosts work): /v1/hosts routes.

import "github.com/go-chi/chi/v5"

func (s *Server) mountHosts(r chi.Router) {}
