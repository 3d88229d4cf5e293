// Package wrenntest is an in-memory fake of the Wrenn REST API for tests
// of code that uses the Go SDK or the CLI. It speaks the shapes in
// api/openapi.yaml (JSON bodies, error bodies, pagination, and the
// WebSocket frames of exec/stream, process reattach, pty and files/watch)
// over a real httptest server, keeps sandboxes, files and processes in
// memory, and records every request so tests can check what was sent.
//
// Commands do not run anywhere: Server.Exec decides what a command does
// (DefaultExec understands echo, cat, exit, stderr and sleep).
package wrenntest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn/wrenn/api"
)

// APIKey is the key the fake accepts unless Server.APIKey is changed.
const APIKey = "wrn_00000000000000000000000000000000"

// ExecFunc runs a command for the fake: it reads stdin, writes output and
// returns the exit code. It must return soon after ctx ends (the process
// was killed); the fake then reports exit code 137.
type ExecFunc func(ctx context.Context, req api.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) int

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	// Body is the request body when it was JSON (file uploads are not
	// kept here).
	Body []byte
}

// Fault makes matching requests fail with an API error.
type Fault struct {
	Method, Path  string // exact match on method and URL path
	Status        int
	Code, Message string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// Times is how many requests fail; zero means every one.
	Times int
}

// Server is the fake API. Set the exported fields before the first
// request.
type Server struct {
	// URL is the base URL to give the SDK (http://127.0.0.1:port).
	URL string
	// APIKey is the accepted credential (Bearer or X-API-Key).
	APIKey string
	// PageSize is the default page size of GET /v1/sandboxes.
	PageSize int
	// Exec runs commands; DefaultExec when nil.
	Exec ExecFunc

	hs *httptest.Server

	mu        sync.Mutex
	seq       int
	requests  []Request
	faults    []*Fault
	sandboxes map[string]*sandbox
	order     []string // creation order
	templates []api.Template
	hosts     map[string]*api.Host
	hostOrder []string
	ptys      []*PTYSession
}

type sandbox struct {
	info     api.Sandbox
	files    map[string]*entry
	procs    map[int]*proc
	nextPID  int
	watchers map[*watcher]struct{}
}

// New starts a fake API that stops when the test ends.
func New(t testing.TB) *Server {
	s := &Server{
		APIKey:    APIKey,
		PageSize:  100,
		sandboxes: map[string]*sandbox{},
		hosts:     map[string]*api.Host{},
		templates: []api.Template{
			{Name: "minimal", Builtin: true, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
			{Name: "python", Builtin: true, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
	}
	s.hs = httptest.NewServer(s.routes())
	s.URL = s.hs.URL
	t.Cleanup(s.hs.Close)
	return s
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// LastRequest returns the last request to method and path (zero if none).
func (s *Server) LastRequest(method, p string) Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.requests) - 1; i >= 0; i-- {
		if r := s.requests[i]; r.Method == method && r.Path == p {
			return r
		}
	}
	return Request{}
}

// AddFault makes matching requests fail until it has fired f.Times times.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// AddSandbox puts a sandbox in the fake as if created, filling required
// fields that info leaves empty, and returns it.
func (s *Server) AddSandbox(info api.Sandbox) api.Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addSandboxLocked(info).info
}

// SandboxState returns a sandbox's state and whether it exists.
func (s *Server) SandboxState(id string) (api.SandboxState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return "", false
	}
	return sb.info.State, true
}

// File returns a file's bytes in a sandbox and whether it exists.
func (s *Server) File(id, p string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.sandboxes[id]
	if !ok {
		return nil, false
	}
	e, ok := sb.files[path.Clean(p)]
	if !ok || e.dir {
		return nil, false
	}
	return bytes.Clone(e.data), true
}

func (s *Server) addSandboxLocked(info api.Sandbox) *sandbox {
	s.seq++
	if info.Id == "" {
		info.Id = fmt.Sprintf("sbx%05d", s.seq)
	}
	if info.Template == "" {
		info.Template = "minimal"
	}
	if info.State == "" {
		info.State = api.SandboxStateRunning
	}
	if info.Vcpus == 0 {
		info.Vcpus = 1
	}
	if info.MemoryMb == 0 {
		info.MemoryMb = 512
	}
	if info.DiskMb == 0 {
		info.DiskMb = 2048
	}
	if info.TimeoutSec == 0 {
		info.TimeoutSec = 300
	}
	if info.OnTimeout == "" {
		info.OnTimeout = api.Kill
	}
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	if info.CreatedAt.IsZero() {
		info.CreatedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(s.seq) * time.Second)
	}
	sb := &sandbox{
		info:     info,
		files:    map[string]*entry{"/": {dir: true}, "/home": {dir: true}, "/home/user": {dir: true}},
		procs:    map[int]*proc{},
		nextPID:  100,
		watchers: map[*watcher]struct{}{},
	}
	s.sandboxes[info.Id] = sb
	s.order = append(s.order, info.Id)
	return sb
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/me", s.me)
	mux.HandleFunc("POST /v1/sandboxes", s.createSandbox)
	mux.HandleFunc("GET /v1/sandboxes", s.listSandboxes)
	mux.HandleFunc("GET /v1/sandboxes/{id}", s.getSandbox)
	mux.HandleFunc("DELETE /v1/sandboxes/{id}", s.deleteSandbox)
	mux.HandleFunc("POST /v1/sandboxes/{id}/pause", s.pauseSandbox)
	mux.HandleFunc("POST /v1/sandboxes/{id}/hibernate", s.hibernateSandbox)
	mux.HandleFunc("POST /v1/sandboxes/{id}/resume", s.resumeSandbox)
	mux.HandleFunc("POST /v1/sandboxes/{id}/fork", s.forkSandbox)
	mux.HandleFunc("POST /v1/sandboxes/{id}/timeout", s.setTimeout)
	mux.HandleFunc("PUT /v1/sandboxes/{id}/network", s.setNetwork)
	mux.HandleFunc("GET /v1/sandboxes/{id}/metrics", s.metrics)
	mux.HandleFunc("GET /v1/sandboxes/{id}/logs", s.logs)
	mux.HandleFunc("POST /v1/sandboxes/{id}/exec", s.exec)
	mux.HandleFunc("GET /v1/sandboxes/{id}/exec/stream", s.execStream)
	mux.HandleFunc("GET /v1/sandboxes/{id}/processes", s.listProcesses)
	mux.HandleFunc("POST /v1/sandboxes/{id}/processes/{sel}/signal", s.signalProcess)
	mux.HandleFunc("GET /v1/sandboxes/{id}/processes/{sel}/stream", s.reattach)
	mux.HandleFunc("GET /v1/sandboxes/{id}/pty", s.pty)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files", s.readFile)
	mux.HandleFunc("PUT /v1/sandboxes/{id}/files", s.writeFile)
	mux.HandleFunc("DELETE /v1/sandboxes/{id}/files", s.removeFile)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/list", s.listFiles)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/stat", s.statFile)
	mux.HandleFunc("POST /v1/sandboxes/{id}/files/mkdir", s.makeDir)
	mux.HandleFunc("POST /v1/sandboxes/{id}/files/move", s.moveFile)
	mux.HandleFunc("GET /v1/sandboxes/{id}/files/watch", s.watch)
	mux.HandleFunc("GET /v1/templates", s.listTemplates)
	mux.HandleFunc("DELETE /v1/templates/{name}", s.deleteTemplate)
	mux.HandleFunc("GET /v1/hosts", s.listHosts)
	mux.HandleFunc("POST /v1/hosts", s.createHost)
	mux.HandleFunc("DELETE /v1/hosts/{id}", s.deleteHost)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	return s.middleware(mux)
}

// middleware records the request, checks the credentials and fires
// faults before the route runs.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			rec.Body = b
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		fault := s.takeFaultLocked(r)
		key := s.APIKey
		s.mu.Unlock()

		got := r.Header.Get("X-API-Key")
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = b
		}
		if got != key {
			writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or invalid API key")
			return
		}
		if fault != nil {
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			writeError(w, fault.Status, fault.Code, fault.Message)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) takeFaultLocked(r *http.Request) *Fault {
	for i, f := range s.faults {
		if f.Method != r.Method || f.Path != r.URL.Path {
			continue
		}
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
		}
		c := *f
		return &c
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b api.Error
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid_argument", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// lookup returns the sandbox named in the path, or answers 404. The
// caller holds s.mu.
func (s *Server) lookupLocked(w http.ResponseWriter, r *http.Request) *sandbox {
	id := r.PathValue("id")
	sb, ok := s.sandboxes[id]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("sandbox %q not found", id))
		return nil
	}
	return sb
}

// TeamName is the name of the fake's one team.
const TeamName = "fake-team"

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	team := api.Team{Name: TeamName, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	team.Id[15] = 1
	keyID := team.Id
	keyID[14] = 1
	writeJSON(w, http.StatusOK, api.Me{ApiKeyId: &keyID, Role: api.RoleAdmin, Team: team, Teams: []api.Team{team}})
}

func between(v *int, lo, hi int) bool { return v == nil || (*v >= lo && *v <= hi) }

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req api.CreateSandboxRequest
	if !decode(w, r, &req) {
		return
	}
	if !between(req.Vcpus, 1, 16) || !between(req.MemoryMb, 128, 65536) || !between(req.DiskMb, 256, 524288) || !between(req.TimeoutSec, 1, 86400) {
		writeError(w, http.StatusBadRequest, "invalid_argument", "vcpus, memory_mb, disk_mb or timeout_sec out of range")
		return
	}
	info := api.Sandbox{Network: req.Network, PublicPorts: req.PublicPorts}
	if req.Template != nil {
		info.Template = *req.Template
	}
	if req.Vcpus != nil {
		info.Vcpus = *req.Vcpus
	}
	if req.MemoryMb != nil {
		info.MemoryMb = *req.MemoryMb
	}
	if req.DiskMb != nil {
		info.DiskMb = *req.DiskMb
	}
	if req.TimeoutSec != nil {
		info.TimeoutSec = *req.TimeoutSec
	}
	if req.OnTimeout != nil {
		info.OnTimeout = *req.OnTimeout
	}
	if req.Metadata != nil {
		info.Metadata = *req.Metadata
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if info.Template != "" && !s.hasTemplateLocked(info.Template) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("template %q not found", info.Template))
		return
	}
	sb := s.addSandboxLocked(info)
	out := sb.info
	out.AccessToken = ptr("tok-" + sb.info.Id)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) hasTemplateLocked(name string) bool {
	for _, t := range s.templates {
		if t.Name == name {
			return true
		}
	}
	return false
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := s.PageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "invalid_argument", "limit must be 1-1000")
			return
		}
		limit = n
	}
	offset := 0
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "c"))
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "invalid_argument", "bad cursor")
			return
		}
		offset = n
	}
	states := map[api.SandboxState]bool{}
	if v := q.Get("state"); v != "" {
		for _, st := range strings.Split(v, ",") {
			if !api.SandboxState(st).Valid() {
				writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("unknown state %q", st))
				return
			}
			states[api.SandboxState(st)] = true
		}
	}
	meta := map[string]string{}
	for _, kv := range q["metadata"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			writeError(w, http.StatusBadRequest, "invalid_argument", "metadata filter must be key=value")
			return
		}
		meta[k] = v
	}
	s.mu.Lock()
	var match []api.Sandbox
	for i := len(s.order) - 1; i >= 0; i-- {
		sb, ok := s.sandboxes[s.order[i]]
		if !ok {
			continue
		}
		st := sb.info.State
		if len(states) > 0 && !states[st] || len(states) == 0 && st == api.SandboxStateStopped {
			continue
		}
		ok = true
		for k, v := range meta {
			if sb.info.Metadata[k] != v {
				ok = false
			}
		}
		if ok {
			match = append(match, sb.info)
		}
	}
	s.mu.Unlock()
	out := struct {
		Sandboxes  []api.Sandbox `json:"sandboxes"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}{Sandboxes: []api.Sandbox{}}
	if offset < len(match) {
		end := min(offset+limit, len(match))
		out.Sandboxes = match[offset:end]
		if end < len(match) {
			out.NextCursor = "c" + strconv.Itoa(end)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.lookupLocked(w, r); sb != nil {
		writeJSON(w, http.StatusOK, sb.info)
	}
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	for _, p := range sb.procs {
		p.kill()
	}
	delete(s.sandboxes, sb.info.Id)
	w.WriteHeader(http.StatusNoContent)
}

// transition moves the named sandbox to to when it is in one of from.
func (s *Server) transition(w http.ResponseWriter, r *http.Request, to api.SandboxState, from ...api.SandboxState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	if !slices.Contains(from, sb.info.State) {
		writeError(w, http.StatusConflict, "failed_precondition", fmt.Sprintf("sandbox %q is %s, not %v", sb.info.Id, sb.info.State, from))
		return
	}
	sb.info.State = to
	writeJSON(w, http.StatusOK, sb.info)
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, api.SandboxStatePaused, api.SandboxStateRunning)
}

func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, api.SandboxStateRunning, api.SandboxStatePaused, api.SandboxStateHibernated)
}

func (s *Server) hibernateSandbox(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, api.SandboxStateHibernated, api.SandboxStateRunning, api.SandboxStatePaused)
}

func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request) {
	var req api.ForkSandboxJSONBody
	if !decode(w, r, &req) {
		return
	}
	n := 1
	if req.Count != nil {
		n = *req.Count
	}
	if n < 1 || n > 20 {
		writeError(w, http.StatusBadRequest, "invalid_argument", "count must be 1-20")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.lookupLocked(w, r)
	if src == nil {
		return
	}
	if src.info.State != api.SandboxStateRunning && src.info.State != api.SandboxStatePaused {
		writeError(w, http.StatusConflict, "failed_precondition", "only running or paused sandboxes fork")
		return
	}
	out := struct {
		Sandboxes []api.Sandbox `json:"sandboxes"`
	}{}
	for range n {
		info := src.info
		info.Id, info.CreatedAt, info.State = "", time.Time{}, api.SandboxStateRunning
		info.ForkedFrom = ptr(src.info.Id)
		info.Metadata = map[string]string{}
		for k, v := range src.info.Metadata {
			info.Metadata[k] = v
		}
		sb := s.addSandboxLocked(info)
		for p, e := range src.files {
			c := *e
			c.data = bytes.Clone(e.data)
			sb.files[p] = &c
		}
		d := sb.info
		d.AccessToken = ptr("tok-" + d.Id)
		out.Sandboxes = append(out.Sandboxes, d)
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request) {
	var req api.SetSandboxTimeoutJSONBody
	if !decode(w, r, &req) {
		return
	}
	if req.TimeoutSec < 1 || req.TimeoutSec > 86400 {
		writeError(w, http.StatusBadRequest, "invalid_argument", "timeout_sec must be 1-86400")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	sb.info.TimeoutSec = req.TimeoutSec
	if req.OnTimeout != nil {
		sb.info.OnTimeout = *req.OnTimeout
	}
	writeJSON(w, http.StatusOK, sb.info)
}

func (s *Server) setNetwork(w http.ResponseWriter, r *http.Request) {
	var req api.NetworkPolicy
	if !decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.lookupLocked(w, r); sb != nil {
		sb.info.Network = &req
		writeJSON(w, http.StatusOK, sb.info)
	}
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.lookupLocked(w, r); sb != nil {
		mem := int64(sb.info.MemoryMb) << 20
		writeJSON(w, http.StatusOK, api.SandboxMetrics{VmmMemoryBytes: &mem, GuestMemTotalBytes: &mem})
	}
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb := s.lookupLocked(w, r)
	s.mu.Unlock()
	if sb == nil {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "[    0.000000] Linux version fake\nenvd: ready in sandbox %s\n", sb.info.Id)
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"templates": s.templates})
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range s.templates {
		if t.Name != name {
			continue
		}
		if t.Builtin {
			writeError(w, http.StatusForbidden, "permission_denied", fmt.Sprintf("template %q is built in", name))
			return
		}
		s.templates = append(s.templates[:i], s.templates[i+1:]...)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("template %q not found", name))
}

// AddTemplate adds a team template.
func (s *Server) AddTemplate(t api.Template) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.templates = append(s.templates, t)
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hosts := []api.Host{}
	for _, id := range s.hostOrder {
		if h, ok := s.hosts[id]; ok {
			hosts = append(hosts, *h)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": hosts})
}

func (s *Server) createHost(w http.ResponseWriter, r *http.Request) {
	var req api.CreateHostRequest
	if !decode(w, r, &req) {
		return
	}
	if !req.Type.Valid() {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("host type %q: want regular or byoc", req.Type))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	var id [16]byte
	id[15] = byte(s.seq)
	id[6], id[8] = 0x40, 0x80
	h := &api.Host{Id: id, Type: api.HostType(req.Type), Status: api.HostStatusPending, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.hosts[h.Id.String()] = h
	s.hostOrder = append(s.hostOrder, h.Id.String())
	writeJSON(w, http.StatusCreated, api.CreatedHost{
		Host:                  *h,
		RegistrationToken:     fmt.Sprintf("wrr_%032d", s.seq),
		RegistrationExpiresAt: h.CreatedAt.Add(time.Hour),
	})
}

// SetHostRunning sets how many sandboxes a host reports running, so that
// removing it without force is refused.
func (s *Server) SetHostRunning(id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.hosts[id]; ok {
		h.SandboxesRunning = &n
	}
}

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[id]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("host %q not found", id))
		return
	}
	if h.SandboxesRunning != nil && *h.SandboxesRunning > 0 && r.URL.Query().Get("force") != "true" {
		writeError(w, http.StatusConflict, "failed_precondition", fmt.Sprintf("host %q runs %d sandboxes; use force", id, *h.SandboxesRunning))
		return
	}
	delete(s.hosts, id)
	w.WriteHeader(http.StatusNoContent)
}

func ptr[T any](v T) *T { return &v }
