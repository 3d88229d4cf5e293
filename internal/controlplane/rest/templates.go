package rest

// Templates: built-in ones are the base images of the online hosts a team
// may use (never stored, never deletable: deleting one answers 403
// permission_denied); a team's own come from snapshots and live in the
// templates table, their files on the host that took the snapshot.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
)

func (s *Server) mountTemplates(r chi.Router) {
	r.Get("/templates", s.sbHandler(s.listTemplates))
	r.Get("/templates/{templateName}", s.sbHandler(s.getTemplate))
	r.Delete("/templates/{templateName}", s.sbHandler(s.deleteTemplate))
}

func templateJSON(t store.Template) api.Template {
	out := api.Template{Name: t.Name, Snapshot: t.Snapshot, CreatedAt: t.CreatedAt, SourceSandboxId: t.SourceSandboxID,
		Status: api.TemplateStatus(t.Status)}
	if t.DiskBytes > 0 {
		out.DiskBytes = &t.DiskBytes
	}
	if t.Vcpus > 0 {
		out.Vcpus, out.MemoryMb = ptrTo(int(t.Vcpus)), ptrTo(int(t.MemoryMb))
	}
	return out
}

// teamTemplateJSON is templateJSON with a built template's current
// version.
func (s *Server) teamTemplateJSON(ctx context.Context, t store.Template) api.Template {
	out := templateJSON(t)
	if t.BuildID != nil && t.TeamID != nil {
		if b, err := s.q.GetTemplateBuild(ctx, store.GetTemplateBuildParams{ID: *t.BuildID, TeamID: *t.TeamID, TemplateName: t.Name}); err == nil {
			out.BuildId, out.Version = &b.ID, ptrTo(int(b.Version))
		}
	}
	return out
}

func builtinJSON(b store.BuiltinTemplatesRow) api.Template {
	return api.Template{Name: b.Name, Builtin: true, CreatedAt: b.CreatedAt, Status: api.TemplateStatusReady}
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	team := principal(ctx).TeamID
	builtins, err := s.q.BuiltinTemplates(ctx, team)
	if err != nil {
		return fmt.Errorf("list built-in templates: %w", err)
	}
	own, err := s.q.ListTeamTemplates(ctx, team)
	if err != nil {
		return fmt.Errorf("list templates: %w", err)
	}
	out := make([]api.Template, 0, len(builtins)+len(own))
	for _, b := range builtins {
		out = append(out, builtinJSON(b))
	}
	for _, t := range own {
		out = append(out, s.teamTemplateJSON(ctx, t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": out})
	return nil
}

// findTemplate returns the team's template or, failing that, the built-in
// one of that name.
func (s *Server) findTemplate(ctx context.Context, name string) (*store.Template, *store.BuiltinTemplatesRow, error) {
	if !templateNameRE.MatchString(name) {
		return nil, nil, invalid("template name %q: must match %s", name, templateNameRE)
	}
	team := principal(ctx).TeamID
	t, err := s.q.GetTeamTemplate(ctx, store.GetTeamTemplateParams{TeamID: team, Name: name})
	switch {
	case err == nil:
		return &t, nil, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, nil, fmt.Errorf("look up template %s: %w", name, err)
	}
	builtins, err := s.q.BuiltinTemplates(ctx, team)
	if err != nil {
		return nil, nil, fmt.Errorf("list built-in templates: %w", err)
	}
	for _, b := range builtins {
		if b.Name == name {
			return nil, &b, nil
		}
	}
	return nil, nil, notFound("template", name)
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) error {
	t, b, err := s.findTemplate(r.Context(), chi.URLParam(r, "templateName"))
	if err != nil {
		return err
	}
	if b != nil {
		writeJSON(w, http.StatusOK, builtinJSON(*b))
		return nil
	}
	writeJSON(w, http.StatusOK, s.teamTemplateJSON(r.Context(), *t))
	return nil
}

// deleteTemplate removes a team template's files from its host, then its
// row. A host that no longer holds them is fine; an unreachable one keeps
// the row (503) so the files are not orphaned unseen.
func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	if err := s.deleteTeamTemplate(r.Context(), chi.URLParam(r, "templateName"), nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteTeamTemplate deletes the caller's template name (a built-in one
// is 403) and audits it once it is known to be the caller's, with detail.
func (s *Server) deleteTeamTemplate(ctx context.Context, name string, detail map[string]any) (err error) {
	t, b, err := s.findTemplate(ctx, name)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "template", name, "delete", err, detail) }()
	if b != nil {
		return errdefs.New(errdefs.ErrPermissionDenied, "template %q is built in and cannot be deleted", name)
	}
	return s.sandboxes.DeleteTemplate(ctx, *t)
}
