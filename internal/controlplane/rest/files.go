package rest

// Files in a sandbox, through its envd. Uploads and downloads stream end
// to end (client -> control plane -> agent -> envd and back) and are never
// held in memory whole.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/go-chi/chi/v5"

	"github.com/wrenn/wrenn/api"
	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/proto/envd/filesystem"
)

// maxUploadBytes caps one upload.
const maxUploadBytes int64 = 10 << 30

func (s *Server) mountFiles(r chi.Router) {
	const one = "/sandboxes/{sandboxID}/files"
	r.Get(one, s.sbHandler(s.readFile))
	r.Put(one, s.sbHandler(s.writeFile))
	r.Delete(one, s.sbHandler(s.removeFile))
	r.Get(one+"/list", s.sbHandler(s.listFiles))
	r.Get(one+"/stat", s.sbHandler(s.statFile))
	r.Post(one+"/mkdir", s.sbHandler(s.makeDir))
	r.Post(one+"/move", s.sbHandler(s.moveFile))
	r.Get(one+"/watch", s.sbHandler(s.watchDir))
}

// checkPath validates a guest path (relative ones are relative to the
// user's home).
func checkPath(name, p string) error {
	if p == "" {
		return invalid("%s is required", name)
	}
	if strings.ContainsRune(p, 0) || len(p) > 4096 {
		return invalid("%s %q: not a path", name, p)
	}
	return nil
}

func queryPath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	return p, checkPath("path", p)
}

func fsErr(what string, err error) error {
	return fmt.Errorf("%s: %w", what, errdefs.FromConnect(err))
}

func fileInfoJSON(e *filesystem.EntryInfo) api.FileInfo {
	out := api.FileInfo{Name: e.GetName(), Path: e.GetPath(), Type: api.Other}
	switch e.GetType() {
	case filesystem.FileType_FILE_TYPE_FILE:
		out.Type = api.File
	case filesystem.FileType_FILE_TYPE_DIRECTORY:
		out.Type = api.Dir
	case filesystem.FileType_FILE_TYPE_SYMLINK:
		out.Type = api.Symlink
	}
	size, mode := e.GetSize(), int(e.GetMode())
	out.Size, out.Mode = &size, &mode
	if t := e.GetModifiedTime(); t != nil {
		mt := t.AsTime()
		out.ModifiedAt = &mt
	}
	return out
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	path, err := queryPath(r)
	if err != nil {
		return err
	}
	body, err := ec.Download(r.Context(), path)
	if err != nil {
		return err
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	// A sandbox's bytes on the API's origin (cookiesession.go).
	isolateGuestContent(w.Header())
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, body); err != nil {
		// The status is out; cutting the connection is the only way to
		// tell the client the body is incomplete.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// limitedBody reads at most limit bytes and fails once there is more.
type limitedBody struct {
	r    io.Reader
	left int64
	over bool
}

var errUploadTooLarge = errdefs.New(errdefs.ErrTooLarge, "upload over %d bytes", maxUploadBytes)

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Only a byte past the limit makes the upload too large.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			l.over = true
			return 0, errUploadTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	path := r.URL.Query().Get("path")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "write_file", err, map[string]any{"path": path}) }()
	if err := checkPath("path", path); err != nil {
		return err
	}
	if r.ContentLength > maxUploadBytes {
		return errUploadTooLarge
	}
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	body := &limitedBody{r: r.Body, left: maxUploadBytes}
	if err := ec.Upload(ctx, path, body); err != nil {
		if body.over {
			return errUploadTooLarge
		}
		return err
	}
	st, err := ec.Filesystem().Stat(ctx, connect.NewRequest(&filesystem.StatRequest{Path: path}))
	if err != nil {
		return fsErr("stat "+path, err)
	}
	writeJSON(w, http.StatusOK, fileInfoJSON(st.Msg.GetEntry()))
	return nil
}

func (s *Server) removeFile(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	path := r.URL.Query().Get("path")
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "remove_file", err, map[string]any{"path": path}) }()
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	if err := checkPath("path", path); err != nil {
		return err
	}
	if _, err := ec.Filesystem().Remove(ctx, connect.NewRequest(&filesystem.RemoveRequest{Path: path})); err != nil {
		return fsErr("remove "+path, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	path, err := queryPath(r)
	if err != nil {
		return err
	}
	depth := uint32(1)
	if v := r.URL.Query().Get("depth"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 1 || n > 10 {
			return invalid("depth %q: must be 1-10", v)
		}
		depth = uint32(n)
	}
	resp, err := ec.Filesystem().ListDir(r.Context(), connect.NewRequest(&filesystem.ListDirRequest{Path: path, Depth: depth}))
	if err != nil {
		return fsErr("list "+path, err)
	}
	entries := make([]api.FileInfo, len(resp.Msg.GetEntries()))
	for i, e := range resp.Msg.GetEntries() {
		entries[i] = fileInfoJSON(e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
	return nil
}

func (s *Server) statFile(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	path, err := queryPath(r)
	if err != nil {
		return err
	}
	resp, err := ec.Filesystem().Stat(r.Context(), connect.NewRequest(&filesystem.StatRequest{Path: path}))
	if err != nil {
		return fsErr("stat "+path, err)
	}
	writeJSON(w, http.StatusOK, fileInfoJSON(resp.Msg.GetEntry()))
	return nil
}

func (s *Server) makeDir(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	var body api.MakeDirJSONBody
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() { s.audit(ctx, "sandbox", id, "make_dir", err, map[string]any{"path": body.Path}) }()
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if err := checkPath("path", body.Path); err != nil {
		return err
	}
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	resp, err := ec.Filesystem().MakeDir(ctx, connect.NewRequest(&filesystem.MakeDirRequest{Path: body.Path}))
	if err != nil {
		return fsErr("make directory "+body.Path, err)
	}
	writeJSON(w, http.StatusCreated, fileInfoJSON(resp.Msg.GetEntry()))
	return nil
}

func (s *Server) moveFile(w http.ResponseWriter, r *http.Request) (err error) {
	ctx := r.Context()
	id := chi.URLParam(r, "sandboxID")
	var body api.MoveFileJSONBody
	sb, err := s.teamSandbox(ctx, id)
	if err != nil {
		return err
	}
	defer func() {
		s.audit(ctx, "sandbox", id, "move_file", err, map[string]any{"from": body.From, "to": body.To})
	}()
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if err := checkPath("from", body.From); err != nil {
		return err
	}
	if err := checkPath("to", body.To); err != nil {
		return err
	}
	ec, err := s.sandboxEnvd(ctx, sb)
	if err != nil {
		return err
	}
	resp, err := ec.Filesystem().Move(ctx, connect.NewRequest(&filesystem.MoveRequest{Source: body.From, Destination: body.To}))
	if err != nil {
		return fsErr("move "+body.From, err)
	}
	writeJSON(w, http.StatusOK, fileInfoJSON(resp.Msg.GetEntry()))
	return nil
}

var fileEventTypes = map[filesystem.EventType]api.FileEventType{
	filesystem.EventType_EVENT_TYPE_CREATE: api.Create,
	filesystem.EventType_EVENT_TYPE_WRITE:  api.Write,
	filesystem.EventType_EVENT_TYPE_REMOVE: api.Remove,
	filesystem.EventType_EVENT_TYPE_RENAME: api.Rename,
	filesystem.EventType_EVENT_TYPE_CHMOD:  api.Chmod,
}

// watchDir streams FileEvent text frames for changes under a directory
// until the client closes. The watch is set up before the upgrade, so a
// missing directory answers 404 as plain HTTP.
func (s *Server) watchDir(w http.ResponseWriter, r *http.Request) error {
	_, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	path, err := queryPath(r)
	if err != nil {
		return err
	}
	recursive := false
	if v := r.URL.Query().Get("recursive"); v != "" {
		if recursive, err = strconv.ParseBool(v); err != nil {
			return invalid("recursive %q: want true or false", v)
		}
	}
	if !isWebSocket(r) {
		return errNeedWebSocket
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stream, err := ec.Filesystem().WatchDir(ctx, connect.NewRequest(&filesystem.WatchDirRequest{Path: path, Recursive: recursive}))
	if err != nil {
		return fsErr("watch "+path, err)
	}
	defer stream.Close()
	// The first message is the watch's start (or its failure).
	if !stream.Receive() {
		err := stream.Err()
		if err == nil {
			err = errdefs.New(errdefs.ErrUnavailable, "envd ended the watch of %s at once", path)
		}
		return fsErr("watch "+path, err)
	}
	c, err := s.acceptWS(w, r)
	if err != nil {
		return nil
	}
	defer c.CloseNow()
	// The client sends nothing; CloseRead notices when it closes.
	stop := context.AfterFunc(c.CloseRead(ctx), cancel)
	defer stop()
	for {
		if ev := stream.Msg().GetFilesystem(); ev != nil {
			typ, ok := fileEventTypes[ev.GetType()]
			if ok {
				if err := writeFrame(ctx, c, api.FileEvent{Type: typ, Name: ev.GetName()}); err != nil {
					return nil
				}
			}
		}
		if !stream.Receive() {
			break
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	err = stream.Err()
	if err == nil {
		err = errdefs.New(errdefs.ErrUnavailable, "envd ended the watch of %s", path)
	}
	s.wsFail(ctx, c, fsErr("watch "+path, err))
	return nil
}
