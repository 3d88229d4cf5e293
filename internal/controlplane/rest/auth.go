package rest

// STUB (owned by the identity work): authentication, rate limits, signup/login.

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *Server) mountPublicAuth(r chi.Router) {}

func (s *Server) authenticate(next http.Handler) http.Handler { return next }

func (s *Server) rateLimit(next http.Handler) http.Handler { return next }
