package wrenntest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// entry is a file or directory in a fake sandbox.
type entry struct {
	dir  bool
	data []byte
	mod  time.Time
}

// watcher is one files/watch socket.
type watcher struct {
	dir       string
	recursive bool
	ch        chan api.FileEvent
}

var fakeTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func info(p string, e *entry) api.FileInfo {
	fi := api.FileInfo{Name: path.Base(p), Path: p, Type: api.File, ModifiedAt: ptr(fakeTime)}
	mode := 0o644
	if e.dir {
		fi.Type, mode = api.Dir, 0o755
	}
	fi.Mode = &mode
	fi.Size = ptr(int64(len(e.data)))
	return fi
}

// cleanPath checks the path query or body field: absolute, cleaned.
func cleanPath(w http.ResponseWriter, p string) (string, bool) {
	if !strings.HasPrefix(p, "/") {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("path %q: want an absolute path", p))
		return "", false
	}
	return path.Clean(p), true
}

// notifyLocked tells the sandbox's watchers about a change to p.
func (sb *sandbox) notifyLocked(typ api.FileEventType, p string) {
	for wt := range sb.watchers {
		rel, ok := strings.CutPrefix(p, strings.TrimSuffix(wt.dir, "/")+"/")
		if !ok || (!wt.recursive && strings.Contains(rel, "/")) {
			continue
		}
		select {
		case wt.ch <- api.FileEvent{Type: typ, Name: rel}:
		default: // a slow watcher loses events, as a real one would
		}
	}
}

// mkdirAllLocked creates p and its parents; false if a file is in the way.
func (sb *sandbox) mkdirAllLocked(p string) bool {
	if e, ok := sb.files[p]; ok {
		return e.dir
	}
	if p != "/" && !sb.mkdirAllLocked(path.Dir(p)) {
		return false
	}
	sb.files[p] = &entry{dir: true, mod: fakeTime}
	sb.notifyLocked(api.Create, p)
	return true
}

func (s *Server) fileTarget(w http.ResponseWriter, r *http.Request, p string) (*sandbox, string, bool) {
	p, ok := cleanPath(w, p)
	if !ok {
		return nil, "", false
	}
	sb := s.lookupLocked(w, r)
	return sb, p, sb != nil
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb, p, ok := s.fileTarget(w, r, r.URL.Query().Get("path"))
	var data []byte
	if ok {
		e, found := sb.files[p]
		switch {
		case !found:
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such file", p))
			ok = false
		case e.dir:
			writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("%s is a directory", p))
			ok = false
		default:
			data = e.data // entries are replaced, never changed in place
		}
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	p, ok := cleanPath(w, r.URL.Query().Get("path"))
	if !ok {
		return
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r.Body); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_argument", "read upload: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(w, r)
	if sb == nil {
		return
	}
	if e, ok := sb.files[p]; ok && e.dir {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("%s is a directory", p))
		return
	}
	if !sb.mkdirAllLocked(path.Dir(p)) {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("a parent of %s is a file", p))
		return
	}
	_, existed := sb.files[p]
	e := &entry{data: buf.Bytes(), mod: fakeTime}
	sb.files[p] = e
	if !existed {
		sb.notifyLocked(api.Create, p)
	}
	sb.notifyLocked(api.Write, p)
	writeJSON(w, http.StatusOK, info(p, e))
}

func (s *Server) removeFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, p, ok := s.fileTarget(w, r, r.URL.Query().Get("path"))
	if !ok {
		return
	}
	if _, found := sb.files[p]; !found {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such file or directory", p))
		return
	}
	for q := range sb.files {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(sb.files, q)
			sb.notifyLocked(api.Remove, q)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	depth := 1
	if v := r.URL.Query().Get("depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10 {
			writeError(w, http.StatusBadRequest, "invalid_argument", "depth must be 1-10")
			return
		}
		depth = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, p, ok := s.fileTarget(w, r, r.URL.Query().Get("path"))
	if !ok {
		return
	}
	if e, found := sb.files[p]; !found || !e.dir {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such directory", p))
		return
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	entries := []api.FileInfo{}
	for q, e := range sb.files {
		rel, ok := strings.CutPrefix(q, prefix)
		if !ok || rel == "" || strings.Count(rel, "/") >= depth {
			continue
		}
		entries = append(entries, info(q, e))
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

func (s *Server) statFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, p, ok := s.fileTarget(w, r, r.URL.Query().Get("path"))
	if !ok {
		return
	}
	e, found := sb.files[p]
	if !found {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such file or directory", p))
		return
	}
	writeJSON(w, http.StatusOK, info(p, e))
}

func (s *Server) makeDir(w http.ResponseWriter, r *http.Request) {
	var req api.MakeDirJSONBody
	if !decode(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, p, ok := s.fileTarget(w, r, req.Path)
	if !ok {
		return
	}
	if _, found := sb.files[p]; found {
		writeError(w, http.StatusConflict, "already_exists", fmt.Sprintf("%s exists", p))
		return
	}
	if !sb.mkdirAllLocked(p) {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("a parent of %s is a file", p))
		return
	}
	writeJSON(w, http.StatusCreated, info(p, sb.files[p]))
}

func (s *Server) moveFile(w http.ResponseWriter, r *http.Request) {
	var req api.MoveFileJSONBody
	if !decode(w, r, &req) {
		return
	}
	to, ok := cleanPath(w, req.To)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, from, ok := s.fileTarget(w, r, req.From)
	if !ok {
		return
	}
	if _, found := sb.files[from]; !found {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such file or directory", from))
		return
	}
	if !sb.mkdirAllLocked(path.Dir(to)) {
		writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("a parent of %s is a file", to))
		return
	}
	for q, e := range sb.files {
		if q == from || strings.HasPrefix(q, from+"/") {
			delete(sb.files, q)
			sb.files[to+strings.TrimPrefix(q, from)] = e
		}
	}
	sb.notifyLocked(api.Rename, from)
	sb.notifyLocked(api.Create, to)
	writeJSON(w, http.StatusOK, info(to, sb.files[to]))
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sb, p, ok := s.fileTarget(w, r, r.URL.Query().Get("path"))
	if ok {
		if e, found := sb.files[p]; !found || !e.dir {
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s: no such directory", p))
			ok = false
		}
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	// Register before the handshake completes so that, once the client's
	// dial returns, every later change is seen.
	wt := &watcher{dir: p, recursive: r.URL.Query().Get("recursive") == "true", ch: make(chan api.FileEvent, 64)}
	s.mu.Lock()
	sb.watchers[wt] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(sb.watchers, wt)
		s.mu.Unlock()
	}()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	// CloseRead answers pings and notices the client going away.
	ctx := conn.CloseRead(r.Context())
	for {
		select {
		case ev := <-wt.ch:
			if err := writeFrame(ctx, conn, ev); err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
