package wrenn

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/wrenn/wrenn/api"
)

// TemplateBuild is one build of a template version: its status, steps and,
// when it failed, the error naming the recipe line.
type TemplateBuild = api.TemplateBuild

// BuildLogEntry is one line of a build's log.
type BuildLogEntry = api.TemplateBuildLogEntry

// ErrBuildCanceled is what WaitBuild returns (wrapped) for a build that was
// canceled before it finished.
var ErrBuildCanceled = errors.New("build canceled")

// RegistryAuth is a login for one OCI registry, used by a recipe's
// `FROM <image>`: a username and password, or a token. It is sent with
// the build request only; the server neither stores nor logs it.
type RegistryAuth struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
}

// BuildOptions tune Templates.Build and BuildFromReader.
type BuildOptions struct {
	// File is the recipe's path inside the build context (slash
	// separated). Empty: the server takes the first of Dockerfile,
	// wrenn.yaml, wrenn.yml and wrenn.json that exists.
	File string
	// Args are values for the recipe's ARGs.
	Args map[string]string
	// Registries maps a registry host (e.g. "ghcr.io", "127.0.0.1:5000")
	// to its login.
	Registries map[string]RegistryAuth
}

// defaultRecipes are the names the server looks for when File is empty,
// in its order.
var defaultRecipes = []string{"Dockerfile", "wrenn.yaml", "wrenn.yml", "wrenn.json"}

// Build uploads contextDir as the build context of a new version of the
// template name and returns the queued build; follow it with WaitBuild or
// BuildLogs. The directory is sent as a gzip'd tar stream, produced while
// it is uploaded (never held in memory): regular files and directories
// with their modes, symlinks as links (not followed), owners zeroed; other
// file types (sockets, devices) are left out. What the context's
// .dockerignore excludes is not sent (the server would ignore it anyway),
// except the recipe and .dockerignore themselves.
func (t *Templates) Build(ctx context.Context, name, contextDir string, opts BuildOptions) (*TemplateBuild, error) {
	st, err := os.Stat(contextDir)
	if err != nil {
		return nil, fmt.Errorf("build template %s: build context: %w", name, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("build template %s: build context %s is not a directory", name, contextDir)
	}
	// A context given through a symlink (macOS's /tmp, a "current" link)
	// is walked from its target: WalkDir does not follow a root link.
	if contextDir, err = filepath.EvalSymlinks(contextDir); err != nil {
		return nil, fmt.Errorf("build template %s: build context: %w", name, err)
	}
	keep, err := recipeNames(contextDir, opts.File)
	if err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	ignore, err := readDockerignore(contextDir)
	if err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		zw := gzip.NewWriter(pw)
		err := writeContextTar(ctx, zw, contextDir, ignore, keep)
		if err == nil {
			err = zw.Close()
		}
		// A nil error ends the body; any other fails the upload with it.
		pw.CloseWithError(err)
		done <- err
	}()
	b, err := t.postBuild(ctx, name, pr, "application/gzip", opts)
	// The server may answer before reading everything (a bad name, say):
	// unblock the writer so it ends.
	pr.Close()
	werr := <-done
	if err != nil {
		if werr != nil && ctx.Err() == nil && !errors.Is(werr, io.ErrClosedPipe) {
			return nil, fmt.Errorf("build template %s: packing build context %s: %w", name, contextDir, werr)
		}
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	return b, nil
}

// BuildFromReader is Build for a ready build context: r is a tar stream,
// gzip-compressed or not.
func (t *Templates) BuildFromReader(ctx context.Context, name string, r io.Reader, opts BuildOptions) (*TemplateBuild, error) {
	br := bufio.NewReader(r)
	ct := "application/x-tar"
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		ct = "application/gzip"
	}
	b, err := t.postBuild(ctx, name, br, ct, opts)
	if err != nil {
		return nil, fmt.Errorf("build template %s: %w", name, err)
	}
	return b, nil
}

// postBuild sends POST /v1/templates once: a streamed body cannot be
// replayed, so unlike callIdempotent it never retries.
func (t *Templates) postBuild(ctx context.Context, name string, body io.Reader, contentType string, opts BuildOptions) (*TemplateBuild, error) {
	q := url.Values{"name": {name}}
	if opts.File != "" {
		q.Set("file", opts.File)
	}
	for _, k := range slices.Sorted(maps.Keys(opts.Args)) {
		q.Add("build_arg", k+"="+opts.Args[k])
	}
	req, err := t.c.newRequest(ctx, http.MethodPost, "/v1/templates", q, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if len(opts.Registries) > 0 {
		h, err := registryAuthHeader(opts.Registries)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Registry-Auth", h)
	}
	resp, err := t.c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out TemplateBuild
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode POST /v1/templates response: %w", err)
	}
	return &out, nil
}

// registryAuthHeader encodes logins as X-Registry-Auth: base64 (URL
// alphabet, padded, as Docker's clients send it) of {host: login}.
func registryAuthHeader(regs map[string]RegistryAuth) (string, error) {
	for host, a := range regs {
		if host == "" {
			return "", errors.New("registry login: empty registry host")
		}
		if a.Token == "" && a.Username == "" {
			return "", fmt.Errorf("registry login for %s: want a username and password or a token", host)
		}
	}
	b, err := json.Marshal(regs)
	if err != nil {
		return "", fmt.Errorf("encode registry logins: %w", err)
	}
	return base64.URLEncoding.EncodeToString(b), nil
}

// recipeNames returns the context paths that are always sent: the recipe
// (File, or every default name) and .dockerignore. With File empty it
// checks that one of the default recipes exists, so a wrong directory
// fails before anything is uploaded.
func recipeNames(dir, file string) (map[string]bool, error) {
	keep := map[string]bool{".dockerignore": true}
	if file != "" {
		clean := filepath.ToSlash(filepath.Clean(filepath.FromSlash(file)))
		keep[clean] = true
		if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(clean))); err != nil {
			return nil, fmt.Errorf("recipe %s in %s: %w", file, dir, err)
		}
		return keep, nil
	}
	found := false
	for _, n := range defaultRecipes {
		keep[n] = true
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("no Dockerfile, wrenn.yaml, wrenn.yml or wrenn.json in %s (name the recipe with File)", dir)
	}
	return keep, nil
}

// readDockerignore parses dir/.dockerignore with the matcher Docker uses;
// nil when there is none.
func readDockerignore(dir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading .dockerignore: %w", err)
	}
	if len(patterns) == 0 {
		return nil, nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	return pm, nil
}

// writeContextTar writes dir as a tar stream to w: names relative to dir,
// in lexical order, directories ending in "/". Paths ignore excludes are
// skipped unless keep names them; an excluded directory is still entered
// when ignore has "!" exceptions that may re-include something under it
// (its own entry is left out; the server creates parents).
func writeContextTar(ctx context.Context, w io.Writer, dir string, ignore *patternmatcher.PatternMatcher, keep map[string]bool) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, walkErr error) error {
		if walkErr != nil {
			return walkErr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if ignore != nil && !keep[rel] {
			excluded, err := ignore.MatchesOrParentMatches(rel)
			if err != nil {
				return fmt.Errorf(".dockerignore: %w", err)
			}
			if excluded {
				if d.IsDir() && !ignore.Exclusions() && !keepsUnder(keep, rel) {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return addTarEntry(tw, p, rel, info)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// keepsUnder says whether a path of keep lies under directory dir.
func keepsUnder(keep map[string]bool, dir string) bool {
	for k := range keep {
		if strings.HasPrefix(k, dir+"/") {
			return true
		}
	}
	return false
}

// addTarEntry writes one file, directory or symlink. The header is built
// by hand rather than with tar.FileInfoHeader so that no owner name is
// looked up: owners are zeroed anyway.
func addTarEntry(tw *tar.Writer, p, rel string, info fs.FileInfo) error {
	m := info.Mode()
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(m.Perm()),
		ModTime: info.ModTime().Truncate(time.Second),
	}
	if m&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch {
	case m.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		return tw.WriteHeader(hdr)
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return tw.WriteHeader(hdr)
	case m.IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		// CopyN: a file that grows while it is read is cut at the size in
		// its header; one that shrinks fails instead of corrupting the tar.
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("reading %s: %w", rel, err)
		}
		return nil
	}
	return nil // sockets, pipes and devices have no place in an image
}

// Builds returns the template's builds, newest first.
func (t *Templates) Builds(ctx context.Context, name string) ([]TemplateBuild, error) {
	var out struct {
		Builds []TemplateBuild `json:"builds"`
	}
	if err := t.c.call(ctx, "GET", "/v1/templates/"+seg(name)+"/builds", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("list builds of template %s: %w", name, err)
	}
	return out.Builds, nil
}

// GetBuild returns one build of the template.
func (t *Templates) GetBuild(ctx context.Context, name, id string) (*TemplateBuild, error) {
	var out TemplateBuild
	if err := t.c.call(ctx, "GET", buildPath(name, id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get build %s of template %s: %w", id, name, err)
	}
	return &out, nil
}

// CancelBuild stops a running build; a finished one is a conflict error.
func (t *Templates) CancelBuild(ctx context.Context, name, id string) error {
	if err := t.c.call(ctx, "DELETE", buildPath(name, id), nil, nil, nil); err != nil {
		return fmt.Errorf("cancel build %s of template %s: %w", id, name, err)
	}
	return nil
}

func buildPath(name, id string) string {
	return "/v1/templates/" + seg(name) + "/builds/" + seg(id)
}

// BuildLogStream reads a build's log entries as the server sends them.
// Call Next until it returns false, then Err, and Close in every case.
type BuildLogStream struct {
	body io.ReadCloser
	dec  *json.Decoder
	done bool  // the stream ended, cleanly or not
	err  error // what ended it, nil at a clean end
}

// BuildLogs opens the build's log from sequence number offset (0: from the
// start). With follow the stream lasts until the build ends; otherwise it
// ends with the entries there are now.
func (t *Templates) BuildLogs(ctx context.Context, name, id string, offset int, follow bool) (*BuildLogStream, error) {
	q := url.Values{}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	if follow {
		q.Set("follow", "true")
	}
	req, err := t.c.newRequest(ctx, "GET", buildPath(name, id)+"/logs", q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := t.c.do(req)
	if err != nil {
		return nil, fmt.Errorf("logs of build %s of template %s: %w", id, name, err)
	}
	return &BuildLogStream{body: resp.Body, dec: json.NewDecoder(resp.Body)}, nil
}

// Next returns the next entry, or false at the end of the stream or on an
// error (see Err).
func (s *BuildLogStream) Next() (BuildLogEntry, bool) {
	if s.done {
		return BuildLogEntry{}, false
	}
	var e BuildLogEntry
	if err := s.dec.Decode(&e); err != nil {
		s.done = true
		if !errors.Is(err, io.EOF) { // a cut mid-entry is ErrUnexpectedEOF
			s.err = fmt.Errorf("reading build log: %w", err)
		}
		return BuildLogEntry{}, false
	}
	return e, true
}

// Err returns the error that ended the stream, nil when it ended cleanly.
func (s *BuildLogStream) Err() error { return s.err }

// Close ends the stream.
func (s *BuildLogStream) Close() error { return s.body.Close() }

// waitAttempts bounds WaitBuild's reconnections in a row that bring no
// new log entry.
const waitAttempts = 6

// WaitBuild follows the build's log until the build ends, calling onLog
// (if not nil) for every entry once, in order, and returns the final
// build. A log stream that breaks is reopened from the entry after the
// last one seen. A build that failed returns it with an error wrapping
// an *Error whose Code and Message are the build's error_code and error;
// a canceled one with ErrBuildCanceled.
func (t *Templates) WaitBuild(ctx context.Context, name, id string, onLog func(BuildLogEntry)) (*TemplateBuild, error) {
	next := 0 // the first sequence number not yet seen
	failures := 0
	wait := retryFirstWait
	for {
		progressed, streamErr := t.followOnce(ctx, name, id, &next, true, onLog)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if streamErr != nil && !retryable(streamErr) {
			return nil, streamErr
		}
		if streamErr == nil {
			// The server ends a followed stream when the build ends; check
			// that it did rather than trust a connection that just closed.
			b, err := t.GetBuild(ctx, name, id)
			if err != nil {
				if !retryable(err) {
					return nil, err
				}
				streamErr = err
			} else if b.Status != api.TemplateBuildStatusBuilding {
				// Entries written between the stream's end and the status.
				if _, err := t.followOnce(ctx, name, id, &next, false, onLog); err != nil && ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return b, buildResult(b)
			}
		}
		if progressed {
			failures, wait = 0, retryFirstWait
		}
		failures++
		if failures >= waitAttempts {
			if streamErr == nil {
				streamErr = errors.New("log stream keeps ending while the build runs")
			}
			return nil, fmt.Errorf("follow build %s of template %s: %w", id, name, streamErr)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
		wait = min(2*wait, retryMaxWait)
	}
}

// followOnce reads one log stream from *next, hands on the entries not seen yet and advances *next. It
// reports whether any entry was new and the error that ended the stream.
func (t *Templates) followOnce(ctx context.Context, name, id string, next *int, follow bool, onLog func(BuildLogEntry)) (bool, error) {
	st, err := t.BuildLogs(ctx, name, id, *next, follow)
	if err != nil {
		return false, err
	}
	defer st.Close()
	progressed := false
	for {
		e, ok := st.Next()
		if !ok {
			break
		}
		if e.Seq < *next {
			continue // a server that ignored offset, or a replay
		}
		*next, progressed = e.Seq+1, true
		if onLog != nil {
			onLog(e)
		}
	}
	return progressed, st.Err()
}

// buildResult is WaitBuild's error for a finished build.
func buildResult(b *TemplateBuild) error {
	switch b.Status {
	case api.TemplateBuildStatusFailed:
		e := &Error{Code: "internal", Message: "build failed"}
		if b.ErrorCode != nil && *b.ErrorCode != "" {
			e.Code = *b.ErrorCode
		}
		if b.Error != nil && *b.Error != "" {
			e.Message = *b.Error
		}
		return fmt.Errorf("build %s of template %s version %d failed: %w", b.Id, b.Template, b.Version, e)
	case api.TemplateBuildStatusCanceled:
		return fmt.Errorf("build %s of template %s version %d: %w", b.Id, b.Template, b.Version, ErrBuildCanceled)
	}
	return nil
}
