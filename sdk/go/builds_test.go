package wrenn_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/api"
	wrenn "github.com/wrenn/wrenn/sdk/go"
)

// tarFile is what the fake server saw of one tar entry.
type tarFile struct {
	Type     byte
	Mode     int64
	Link     string
	Content  string
	UID, GID int
}

// buildServer speaks the template build routes of api/openapi.yaml for one
// template "app" and one build.
type buildServer struct {
	t *testing.T

	mu sync.Mutex
	// Of the last POST /v1/templates:
	contentType string
	gzipped     bool
	files       map[string]tarFile
	order       []string
	query       url.Values
	registry    string
	// The build and its log.
	build   api.TemplateBuild
	logs    []api.TemplateBuildLogEntry
	logReqs []url.Values
	// cutAfter: the first followed log request sends this many entries and
	// half of the next, then breaks the connection. 0: no break.
	cutAfter int
	// hold: followed log requests stay open after the entries until the
	// client goes away (a build that never ends).
	hold     bool
	canceled int
}

func newBuildServer(t *testing.T) (*buildServer, *wrenn.Client) {
	s := &buildServer{t: t, build: api.TemplateBuild{
		Id: uuid.New(), Template: "app", Version: 3, Status: api.TemplateBuildStatusReady,
		RecipeFile: "Dockerfile", Steps: 4, CachedSteps: 1, CreatedAt: time.Now().UTC().Truncate(time.Second),
	}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c, err := wrenn.NewClient(wrenn.WithBaseURL(srv.URL), wrenn.WithAPIKey("wrn_test"), wrenn.WithEnv(func(string) string { return "" }))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

func (s *buildServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer wrn_test" {
		apiError(w, 401, "unauthenticated", "no key")
		return
	}
	buildPath := "/v1/templates/app/builds/" + s.build.Id.String()
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/templates":
		s.upload(w, r)
	case r.Method == "GET" && r.URL.Path == "/v1/templates/app/builds":
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"builds": []api.TemplateBuild{s.build}})
	case r.Method == "GET" && r.URL.Path == buildPath:
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(s.build)
	case r.Method == "DELETE" && r.URL.Path == buildPath:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.build.Status != api.TemplateBuildStatusBuilding {
			apiError(w, 409, "failed_precondition", "build already finished")
			return
		}
		s.canceled++
		s.build.Status = api.TemplateBuildStatusCanceled
		w.WriteHeader(204)
	case r.Method == "GET" && r.URL.Path == buildPath+"/logs":
		s.serveLogs(w, r)
	default:
		apiError(w, 404, "not_found", r.Method+" "+r.URL.Path)
	}
}

func (s *buildServer) upload(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name != "app" {
		_, _ = io.Copy(io.Discard, r.Body)
		apiError(w, 400, "invalid_argument", "name: want app")
		return
	}
	head := make([]byte, 2)
	n, _ := io.ReadFull(r.Body, head)
	br := io.MultiReader(bytes.NewReader(head[:n]), r.Body)
	gz := n == 2 && head[0] == 0x1f && head[1] == 0x8b
	if gz {
		zr, err := gzip.NewReader(br)
		if err != nil {
			apiError(w, 400, "invalid_argument", err.Error())
			return
		}
		br = zr
	}
	files := map[string]tarFile{}
	var order []string
	tr := tar.NewReader(br)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			apiError(w, 400, "invalid_argument", "tar: "+err.Error())
			return
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = tarFile{Type: h.Typeflag, Mode: h.Mode, Link: h.Linkname, Content: string(b), UID: h.Uid, GID: h.Gid}
		order = append(order, h.Name)
	}
	var reg string
	if h := r.Header.Get("X-Registry-Auth"); h != "" {
		raw, err := base64.URLEncoding.DecodeString(h)
		if err != nil {
			apiError(w, 400, "invalid_argument", "X-Registry-Auth: "+err.Error())
			return
		}
		reg = string(raw)
	}
	s.mu.Lock()
	s.contentType, s.gzipped, s.files, s.order, s.query, s.registry = r.Header.Get("Content-Type"), gz, files, order, r.URL.Query(), reg
	b := s.build
	s.mu.Unlock()
	b.Status = api.TemplateBuildStatusBuilding
	w.WriteHeader(202)
	_ = json.NewEncoder(w).Encode(b)
}

func (s *buildServer) serveLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	off, _ := strconv.Atoi(q.Get("offset"))
	follow := q.Get("follow") == "true"
	s.mu.Lock()
	s.logReqs = append(s.logReqs, q)
	first := len(s.logReqs) == 1
	logs := append([]api.TemplateBuildLogEntry(nil), s.logs...)
	cut, hold := s.cutAfter, s.hold
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	sent := 0
	for _, e := range logs {
		if e.Seq < off {
			continue
		}
		line, _ := json.Marshal(e)
		if follow && first && cut > 0 && sent == cut {
			_, _ = w.Write(line[:len(line)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection breaks mid-entry
		}
		_, _ = w.Write(append(line, '\n'))
		sent++
	}
	w.(http.Flusher).Flush()
	if follow && hold {
		<-r.Context().Done()
	}
}

// writeTree makes a build context with a symlink, modes, a .dockerignore
// and what it excludes.
func writeTree(t *testing.T) string {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask-proof
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM minimal\nCOPY . /app\n", 0o644)
	write("bin/run.sh", "#!/bin/sh\necho hi\n", 0o755)
	write("data.txt", "private", 0o600)
	write(".dockerignore", "secret*\nnode_modules\n*.log\n!keep.log\n", 0o644)
	write("secret.env", "TOKEN=1", 0o644)
	write("node_modules/x/index.js", "x", 0o644)
	write("debug.log", "noise", 0o644)
	write("keep.log", "kept", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildUploadsContext(t *testing.T) {
	s, c := newBuildServer(t)
	dir := filepath.Join(t.TempDir(), "ctx-link") // through a symlink, to check the root link is followed
	if err := os.Symlink(writeTree(t), dir); err != nil {
		t.Fatal(err)
	}
	b, err := c.Templates.Build(context.Background(), "app", dir, wrenn.BuildOptions{
		Args:       map[string]string{"B": "x=y", "A": "1"},
		Registries: map[string]wrenn.RegistryAuth{"127.0.0.1:5000": {Username: "u", Password: "p:w/+"}, "ghcr.io": {Token: "tok"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Id != s.build.Id || b.Status != api.TemplateBuildStatusBuilding || b.Version != 3 {
		t.Errorf("build = %+v", b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.gzipped || s.contentType != "application/gzip" {
		t.Errorf("gzip %v, Content-Type %q", s.gzipped, s.contentType)
	}
	want := map[string]tarFile{
		"Dockerfile":    {Type: tar.TypeReg, Mode: 0o644, Content: "FROM minimal\nCOPY . /app\n"},
		".dockerignore": {Type: tar.TypeReg, Mode: 0o644, Content: "secret*\nnode_modules\n*.log\n!keep.log\n"},
		"bin/":          {Type: tar.TypeDir, Mode: 0o755},
		"bin/run.sh":    {Type: tar.TypeReg, Mode: 0o755, Content: "#!/bin/sh\necho hi\n"},
		"data.txt":      {Type: tar.TypeReg, Mode: 0o600, Content: "private"},
		"empty/":        {Type: tar.TypeDir, Mode: 0o750},
		"keep.log":      {Type: tar.TypeReg, Mode: 0o644, Content: "kept"},
		"link":          {Type: tar.TypeSymlink, Mode: 0o777, Link: "data.txt"},
	}
	if !reflect.DeepEqual(s.files, want) {
		t.Errorf("tar entries:\n got %+v\nwant %+v", s.files, want)
	}
	if got := s.order; !reflect.DeepEqual(got, []string{".dockerignore", "Dockerfile", "bin/", "bin/run.sh", "data.txt", "empty/", "keep.log", "link"}) {
		t.Errorf("tar order = %v", got)
	}
	if s.query.Get("name") != "app" || s.query.Has("file") || !reflect.DeepEqual(s.query["build_arg"], []string{"A=1", "B=x=y"}) {
		t.Errorf("query = %v", s.query)
	}
	var reg map[string]map[string]string
	if err := json.Unmarshal([]byte(s.registry), &reg); err != nil {
		t.Fatalf("X-Registry-Auth JSON: %v (%q)", err, s.registry)
	}
	if !reflect.DeepEqual(reg, map[string]map[string]string{"127.0.0.1:5000": {"username": "u", "password": "p:w/+"}, "ghcr.io": {"token": "tok"}}) {
		t.Errorf("registry logins = %v", reg)
	}
}

// A recipe named with File is sent even when .dockerignore excludes it
// and its directory.
func TestBuildKeepsNamedRecipe(t *testing.T) {
	s, c := newBuildServer(t)
	dir := t.TempDir()
	_ = os.MkdirAll(filepath.Join(dir, "ci"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "ci", "Dockerfile.prod"), []byte("FROM minimal\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "ci", "other"), []byte("x"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("ci\n"), 0o644)
	if _, err := c.Templates.Build(context.Background(), "app", dir, wrenn.BuildOptions{File: "ci/Dockerfile.prod"}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files["ci/Dockerfile.prod"]; !ok || len(s.files) != 2 || s.query.Get("file") != "ci/Dockerfile.prod" {
		t.Errorf("files %v, query %v", s.order, s.query)
	}
}

func TestBuildFromReaderPlainTar(t *testing.T) {
	s, c := newBuildServer(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "wrenn.yaml", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("from:"))
	_ = tw.Close()
	if _, err := c.Templates.BuildFromReader(context.Background(), "app", &buf, wrenn.BuildOptions{File: "wrenn.yaml"}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gzipped || s.contentType != "application/x-tar" || s.files["wrenn.yaml"].Content != "from:" || s.registry != "" {
		t.Errorf("gzip %v, type %q, files %v, registry %q", s.gzipped, s.contentType, s.files, s.registry)
	}
}

func TestBuildErrors(t *testing.T) {
	s, c := newBuildServer(t)
	ctx := context.Background()
	dir := writeTree(t)
	_, err := c.Templates.Build(ctx, "Bad_Name", dir, wrenn.BuildOptions{})
	if !wrenn.IsInvalidArgument(err) || !strings.Contains(err.Error(), "name: want app") {
		t.Errorf("bad name: %v", err)
	}
	empty := t.TempDir()
	if _, err := c.Templates.Build(ctx, "app", empty, wrenn.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "no Dockerfile") {
		t.Errorf("no recipe: %v", err)
	}
	if _, err := c.Templates.Build(ctx, "app", filepath.Join(empty, "nope"), wrenn.BuildOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := c.Templates.Build(ctx, "app", dir, wrenn.BuildOptions{Registries: map[string]wrenn.RegistryAuth{"r.io": {}}}); err == nil || !strings.Contains(err.Error(), "r.io") {
		t.Errorf("empty login: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files != nil {
		t.Errorf("a refused build reached the server: %v", s.order)
	}
}

// An unreadable file fails the upload with the packing error, not a vague
// transport one.
func TestBuildUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode; cannot make one unreadable")
	}
	_, c := newBuildServer(t)
	dir := writeTree(t)
	if err := os.Chmod(filepath.Join(dir, "data.txt"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := c.Templates.Build(context.Background(), "app", dir, wrenn.BuildOptions{})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "packing build context") {
		t.Errorf("err = %v", err)
	}
}

func logEntries(n int) []api.TemplateBuildLogEntry {
	var out []api.TemplateBuildLogEntry
	for i := 1; i <= n; i++ {
		step, steps := (i+1)/2, (n+1)/2
		out = append(out, api.TemplateBuildLogEntry{Seq: i, Time: time.Now().UTC(), Step: &step, Steps: &steps, Phase: api.TemplateBuildLogEntryPhaseStep, Text: fmt.Sprintf("line %d %s", i, strings.Repeat("x", 40))})
	}
	return out
}

// TestWaitBuildResumes: the followed stream breaks mid-entry; WaitBuild
// reconnects from the next sequence number and hands every entry on once.
func TestWaitBuildResumes(t *testing.T) {
	s, c := newBuildServer(t)
	s.logs, s.cutAfter = logEntries(7), 3
	var seen []int
	b, err := c.Templates.WaitBuild(context.Background(), "app", s.build.Id.String(), func(e wrenn.BuildLogEntry) { seen = append(seen, e.Seq) })
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != api.TemplateBuildStatusReady || b.Version != 3 {
		t.Errorf("build = %+v", b)
	}
	if !reflect.DeepEqual(seen, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("entries = %v", seen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.logReqs) < 2 || s.logReqs[0].Get("follow") != "true" || s.logReqs[0].Has("offset") || s.logReqs[1].Get("offset") != "4" || s.logReqs[1].Get("follow") != "true" {
		t.Errorf("log requests = %v", s.logReqs)
	}
}

func TestWaitBuildFailed(t *testing.T) {
	s, c := newBuildServer(t)
	s.logs = logEntries(2)
	msg, code := "Dockerfile:3: RUN false: exit status 1\n  last output", "invalid_argument"
	s.build.Status, s.build.Error, s.build.ErrorCode = api.TemplateBuildStatusFailed, &msg, &code
	b, err := c.Templates.WaitBuild(context.Background(), "app", s.build.Id.String(), nil)
	if b == nil || b.Status != api.TemplateBuildStatusFailed {
		t.Fatalf("build = %+v", b)
	}
	var apiErr *wrenn.Error
	if !wrenn.IsInvalidArgument(err) || !errors.As(err, &apiErr) || apiErr.Message != msg {
		t.Errorf("err = %v", err)
	}

	s.mu.Lock()
	s.build.Status, s.build.Error, s.build.ErrorCode = api.TemplateBuildStatusCanceled, nil, nil
	s.mu.Unlock()
	if _, err := c.Templates.WaitBuild(context.Background(), "app", s.build.Id.String(), nil); !errors.Is(err, wrenn.ErrBuildCanceled) {
		t.Errorf("canceled build: %v", err)
	}
	if _, err := c.Templates.WaitBuild(context.Background(), "app", uuid.NewString(), nil); !wrenn.IsNotFound(err) {
		t.Errorf("unknown build: %v", err)
	}
}

// TestWaitBuildContextAndCancel: a wait ends with its context; the build is
// then canceled with DELETE, and a second cancel is a conflict.
func TestWaitBuildContextAndCancel(t *testing.T) {
	s, c := newBuildServer(t)
	s.logs, s.hold = logEntries(2), true
	s.build.Status = api.TemplateBuildStatusBuilding
	id := s.build.Id.String()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan int, 10)
	go func() {
		<-got
		<-got
		cancel() // after both entries arrived
	}()
	start := time.Now()
	_, err := c.Templates.WaitBuild(ctx, "app", id, func(e wrenn.BuildLogEntry) { got <- e.Seq })
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("wait = %v after %v", err, time.Since(start))
	}
	if err := c.Templates.CancelBuild(context.Background(), "app", id); err != nil {
		t.Fatal(err)
	}
	if err := c.Templates.CancelBuild(context.Background(), "app", id); !wrenn.IsConflict(err) {
		t.Errorf("second cancel: %v", err)
	}
	if s.canceled != 1 {
		t.Errorf("canceled %d times", s.canceled)
	}
}

func TestBuildsAndLogs(t *testing.T) {
	s, c := newBuildServer(t)
	s.logs = logEntries(3)
	ctx := context.Background()
	bs, err := c.Templates.Builds(ctx, "app")
	if err != nil || len(bs) != 1 || bs[0].Id != s.build.Id {
		t.Fatalf("builds = %v, %v", bs, err)
	}
	b, err := c.Templates.GetBuild(ctx, "app", s.build.Id.String())
	if err != nil || b.CachedSteps != 1 {
		t.Fatalf("get = %+v, %v", b, err)
	}
	st, err := c.Templates.BuildLogs(ctx, "app", s.build.Id.String(), 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var seqs []int
	for e, ok := st.Next(); ok; e, ok = st.Next() {
		seqs = append(seqs, e.Seq)
	}
	if st.Err() != nil || !reflect.DeepEqual(seqs, []int{2, 3}) {
		t.Errorf("logs = %v, %v", seqs, st.Err())
	}
	if q := s.logReqs[0]; q.Get("offset") != "2" || q.Has("follow") {
		t.Errorf("logs query = %v", q)
	}
	if _, err := c.Templates.Builds(ctx, "other"); !wrenn.IsNotFound(err) {
		t.Errorf("builds of unknown template: %v", err)
	}
}

// TestWaitBuildStreamEndsEarly: a followed stream that ends cleanly while
// the build still runs (a control plane restarting, say) is reopened; the
// wait ends only when GET says the build ended.
func TestWaitBuildStreamEndsEarly(t *testing.T) {
	s, c := newBuildServer(t)
	s.logs = logEntries(2)
	s.build.Status = api.TemplateBuildStatusBuilding
	var seen []int
	onLog := func(e wrenn.BuildLogEntry) {
		seen = append(seen, e.Seq)
		if e.Seq == 2 {
			// The build goes on after the first stream ended: more entries
			// and then the end, seen only by a reconnecting client.
			go func() {
				time.Sleep(50 * time.Millisecond)
				s.mu.Lock()
				s.logs = logEntries(4)
				s.build.Status = api.TemplateBuildStatusReady
				s.mu.Unlock()
			}()
		}
	}
	b, err := c.Templates.WaitBuild(context.Background(), "app", s.build.Id.String(), onLog)
	if err != nil || b.Status != api.TemplateBuildStatusReady {
		t.Fatalf("wait = %+v, %v", b, err)
	}
	if !reflect.DeepEqual(seen, []int{1, 2, 3, 4}) {
		t.Errorf("entries = %v", seen)
	}
}

// ExampleTemplates_Build builds a template from a directory holding a
// Dockerfile and prints its log until the new version is ready.
func ExampleTemplates_Build() {
	ctx := context.Background()
	client, err := wrenn.NewClient()
	if err != nil {
		panic(err)
	}
	b, err := client.Templates.Build(ctx, "py-data", "./py-data", wrenn.BuildOptions{
		Args: map[string]string{"PYTHON_VERSION": "3.12"},
	})
	if err != nil {
		panic(err)
	}
	final, err := client.Templates.WaitBuild(ctx, "py-data", b.Id.String(), func(e wrenn.BuildLogEntry) {
		fmt.Println(e.Text)
	})
	if err != nil {
		panic(err) // a failed step: err's *wrenn.Error names the recipe line
	}
	fmt.Printf("py-data version %d ready\n", final.Version)
}
