package rest

// STUB (owned by the sandboxes work): sandboxes, processes, files,
// templates, and the port proxy.

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *Server) mountSandboxes(r chi.Router) {}

func (s *Server) mountProcesses(r chi.Router) {}

func (s *Server) mountFiles(r chi.Router) {}

func (s *Server) mountTemplates(r chi.Router) {}

func (s *Server) mountPortProxy(r chi.Router) {}

// hostProxy serves {port}-{sandboxID}.{domain} before routing.
func (s *Server) hostProxy(next http.Handler) http.Handler { return next }
