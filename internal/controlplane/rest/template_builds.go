package rest

// Template builds: POST /v1/templates takes a recipe and its build context
// as a tar stream, checks the recipe and hands the build to the sandbox
// service, which runs it on a host in the background. The build's log is
// read (or followed) as NDJSON.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/controlplane/sandboxes"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/store"
	"github.com/wrenn/wrenn/internal/templates/buildctx"
	"github.com/wrenn/wrenn/internal/templates/hostbuild"
	"github.com/wrenn/wrenn/internal/templates/recipe"
	hostagentv1 "github.com/wrenn/wrenn/proto/hostagent/v1"
)

const (
	// maxBuildContextBytes bounds an uploaded build context (as sent).
	maxBuildContextBytes = 512 << 20
	// maxBuildArgs bounds build_arg parameters.
	maxBuildArgs = 100
	// buildLogPage is how many log entries one read of the store takes.
	buildLogPage = 500
	// buildLogPoll is how often a followed log looks for new lines.
	buildLogPoll = 250 * time.Millisecond
)

func (s *Server) mountTemplateBuilds(r chi.Router) {
	r.Post("/templates", s.sbHandler(s.buildTemplate))
	r.Get("/templates/{templateName}/builds", s.sbHandler(s.listTemplateBuilds))
	r.Get("/templates/{templateName}/builds/{buildID}", s.sbHandler(s.getTemplateBuild))
	r.Delete("/templates/{templateName}/builds/{buildID}", s.sbHandler(s.cancelTemplateBuild))
	r.Get("/templates/{templateName}/builds/{buildID}/logs", s.sbHandler(s.templateBuildLogs))
}

func (s *Server) buildTemplate(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	q := r.URL.Query()
	name := q.Get("name")
	if !templateNameRE.MatchString(name) {
		return invalid("name %q: must match %s", name, templateNameRE)
	}
	if err := checkContextType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	args, err := buildArgs(q["build_arg"])
	if err != nil {
		return err
	}
	creds, err := registryAuth(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		return err
	}
	// The context goes to a file (the build reads it after this request
	// has been answered) and is unpacked here once, to check it and read
	// the recipe: a bad recipe is this request's 400, not a failed build.
	f, err := os.CreateTemp("", "wrenn-build-*.tar")
	if err != nil {
		return fmt.Errorf("store build context: %w", err)
	}
	keep := false
	defer func() {
		f.Close()
		if !keep {
			os.Remove(f.Name())
		}
	}()
	n, err := io.Copy(f, io.LimitReader(r.Body, maxBuildContextBytes+1))
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "read build context: %v", err)
	}
	if n > maxBuildContextBytes {
		return errdefs.New(errdefs.ErrTooLarge, "build context is over %d MiB", maxBuildContextBytes>>20)
	}
	if n == 0 {
		return invalid("empty body: send the build context as a tar stream")
	}
	rec, file, err := checkRecipe(ctx, f.Name(), q.Get("file"), args)
	if err != nil {
		return err
	}
	team := principal(ctx).TeamID
	defer func() {
		s.audit(ctx, "template", name, "build", err, map[string]any{"from": fromText(rec.From), "recipe": file})
	}()
	keep = true // StartBuild owns the file now
	b, err := s.sandboxes.StartBuild(ctx, team, sandboxes.BuildSpec{
		Name: name, Recipe: rec, RecipeFile: file, Args: args, Credentials: creds, ContextPath: f.Name(),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, buildJSON(b))
	return nil
}

// checkContextType accepts a tar or a gzipped tar (or bytes of no stated
// type: the magic decides).
func checkContextType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return invalid("Content-Type %q: %v", ct, err)
	}
	switch mt {
	case "application/x-tar", "application/tar", "application/gzip", "application/x-gzip", "application/octet-stream":
		return nil
	}
	return invalid("Content-Type %q: send the build context as application/x-tar or application/gzip", ct)
}

func buildArgs(raw []string) (map[string]string, error) {
	if len(raw) > maxBuildArgs {
		return nil, invalid("at most %d build_arg parameters", maxBuildArgs)
	}
	args := map[string]string{}
	for _, kv := range raw {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, invalid("build_arg %q: want KEY=value", kv)
		}
		args[k] = v
	}
	return args, nil
}

// registryAuth decodes X-Registry-Auth: base64 of a JSON object mapping
// a registry host to a login (docker build's X-Registry-Config shape).
// The secrets go to the build's host and nowhere else.
func registryAuth(h string) ([]*hostagentv1.RegistryCredential, error) {
	if h == "" {
		return nil, nil
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(h); err == nil {
			break
		}
	}
	if err != nil {
		return nil, invalid("X-Registry-Auth: not base64")
	}
	var logins map[string]struct {
		Username      string `json:"username"`
		Password      string `json:"password"`
		Token         string `json:"token"`
		IdentityToken string `json:"identitytoken"`
	}
	if err := json.Unmarshal(raw, &logins); err != nil {
		return nil, invalid("X-Registry-Auth: want base64 of {\"registry\": {\"username\": ..., \"password\": ...}}")
	}
	var out []*hostagentv1.RegistryCredential
	for reg, l := range logins {
		if reg == "" || (l.Username == "" && l.Token == "" && l.IdentityToken == "") {
			return nil, invalid("X-Registry-Auth: registry %q has no username or token", reg)
		}
		tok := l.Token
		if tok == "" {
			tok = l.IdentityToken
		}
		out = append(out, &hostagentv1.RegistryCredential{Registry: reg, Username: l.Username, Password: l.Password, Token: tok})
	}
	return out, nil
}

// checkRecipe unpacks the context at path into a temporary directory and
// parses its recipe.
func checkRecipe(ctx context.Context, path, file string, args map[string]string) (*recipe.Recipe, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("open build context: %w", err)
	}
	defer f.Close()
	dir, err := os.MkdirTemp("", "wrenn-buildctx-")
	if err != nil {
		return nil, "", fmt.Errorf("unpack build context: %w", err)
	}
	defer os.RemoveAll(dir)
	bctx, err := buildctx.Unpack(ctx, f, dir, buildctx.Limits{})
	if err != nil {
		return nil, "", fmt.Errorf("build context: %w", err)
	}
	defer bctx.Close()
	file, data, err := hostbuild.ReadRecipe(bctx, file)
	if err != nil {
		return nil, "", err
	}
	rec, err := recipe.ParseWith(file, data, bctx, recipe.Options{Args: args})
	if err != nil {
		return nil, "", err
	}
	return rec, file, nil
}

func fromText(f recipe.From) string {
	if f.Image != "" {
		return f.Image
	}
	if f.Version > 0 {
		return fmt.Sprintf("%s:%d", f.Template, f.Version)
	}
	return f.Template
}

func buildJSON(b store.TemplateBuild) api.TemplateBuild {
	out := api.TemplateBuild{
		Id: b.ID, Template: b.TemplateName, Version: int(b.Version), Status: api.TemplateBuildStatus(b.Status),
		Error: b.Error, ErrorCode: b.ErrorCode, RecipeFile: b.RecipeFile, Steps: int(b.Steps),
		CachedSteps: int(b.CachedSteps), CreatedAt: b.CreatedAt, FinishedAt: b.FinishedAt,
	}
	if b.FromRef != "" {
		out.From = &b.FromRef
	}
	if b.CurrentStep > 0 {
		out.CurrentStep = ptrTo(int(b.CurrentStep))
	}
	if b.Status == sandboxes.BuildReady || b.Status == sandboxes.BuildRetired {
		out.ImageBytes = &b.ImageBytes
		out.Digest = b.Digest
		out.Snapshot = &b.Snapshot
	}
	if b.FinishedAt != nil {
		out.DurationSeconds = ptrTo(float32(b.FinishedAt.Sub(b.CreatedAt).Seconds()))
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// teamBuild loads the caller's build of template name; another team's
// answers exactly like a missing one.
func (s *Server) teamBuild(ctx context.Context, name, id string) (store.TemplateBuild, error) {
	if !templateNameRE.MatchString(name) {
		return store.TemplateBuild{}, invalid("template name %q: must match %s", name, templateNameRE)
	}
	bid, err := uuid.Parse(id)
	if err != nil {
		return store.TemplateBuild{}, notFound("build", id)
	}
	b, err := s.q.GetTemplateBuild(ctx, store.GetTemplateBuildParams{ID: bid, TeamID: principal(ctx).TeamID, TemplateName: name})
	return b, store.Found(err, "build", id)
}

func (s *Server) listTemplateBuilds(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := chi.URLParam(r, "templateName")
	if !templateNameRE.MatchString(name) {
		return invalid("template name %q: must match %s", name, templateNameRE)
	}
	bs, err := s.q.ListTemplateBuilds(ctx, store.ListTemplateBuildsParams{TeamID: principal(ctx).TeamID, TemplateName: name, MaxRows: 1000})
	if err != nil {
		return fmt.Errorf("list builds: %w", err)
	}
	if len(bs) == 0 {
		return notFound("template", name)
	}
	out := make([]api.TemplateBuild, len(bs))
	for i, b := range bs {
		out[i] = buildJSON(b)
	}
	writeJSON(w, http.StatusOK, map[string]any{"builds": out})
	return nil
}

func (s *Server) getTemplateBuild(w http.ResponseWriter, r *http.Request) error {
	b, err := s.teamBuild(r.Context(), chi.URLParam(r, "templateName"), chi.URLParam(r, "buildID"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, buildJSON(b))
	return nil
}

func (s *Server) cancelTemplateBuild(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	b, err := s.teamBuild(ctx, chi.URLParam(r, "templateName"), chi.URLParam(r, "buildID"))
	if err != nil {
		return err
	}
	defer func() {
		s.audit(ctx, "template", b.TemplateName, "cancel_build", err, map[string]any{"build_id": b.ID})
	}()
	if err := s.sandboxes.CancelBuild(ctx, b); err != nil {
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			return errdefs.New(errdefs.ErrAlreadyExists, "%v", err) // 409: it ended
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// templateBuildLogs writes the build's log as NDJSON from offset; with
// follow, it waits for new lines until the build has ended and its last
// line is out.
func (s *Server) templateBuildLogs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	b, err := s.teamBuild(ctx, chi.URLParam(r, "templateName"), chi.URLParam(r, "buildID"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	from := 0
	if v := q.Get("offset"); v != "" {
		if from, err = strconv.Atoi(v); err != nil || from < 0 {
			return invalid("offset %q: want a number from 0", v)
		}
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		if follow, err = strconv.ParseBool(v); err != nil {
			return invalid("follow %q: want true or false", v)
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(bw)
	tick := time.NewTicker(buildLogPoll)
	defer tick.Stop()
	for {
		// The status first: a build seen ended has written its last line.
		ended := b.Status != sandboxes.BuildBuilding
		if !ended {
			cur, err := s.q.GetTemplateBuild(ctx, store.GetTemplateBuildParams{ID: b.ID, TeamID: b.TeamID, TemplateName: b.TemplateName})
			if err != nil {
				return nil // the response has started: end it
			}
			ended = cur.Status != sandboxes.BuildBuilding
		}
		for {
			lines, err := s.q.TemplateBuildLogs(ctx, store.TemplateBuildLogsParams{BuildID: b.ID, FromSeq: int32(from), MaxRows: buildLogPage})
			if err != nil {
				return nil
			}
			for _, l := range lines {
				e := api.TemplateBuildLogEntry{Seq: int(l.Seq), Time: l.At, Phase: api.TemplateBuildLogEntryPhase(l.Phase), Text: l.Text}
				if l.Step > 0 {
					e.Step, e.Steps = ptrTo(int(l.Step)), ptrTo(int(l.Steps))
				}
				if l.Cached {
					e.Cached = ptrTo(true)
				}
				if err := enc.Encode(e); err != nil {
					return nil
				}
				from = int(l.Seq) + 1
			}
			if len(lines) < buildLogPage {
				break
			}
		}
		if err := bw.Flush(); err != nil {
			return nil
		}
		if flusher != nil {
			flusher.Flush()
		}
		if !follow || ended {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
