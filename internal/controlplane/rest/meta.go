package rest

// STUB (owned by the identity work): /openapi.yaml, /docs, /metrics, /healthz.

import "github.com/go-chi/chi/v5"

func (s *Server) mountMeta(r chi.Router) {}
