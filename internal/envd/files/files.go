// Package files serves envd's /files HTTP route, E2B's contract for moving
// file contents in and out of a sandbox: GET streams one file down, POST
// stores one or more uploaded files atomically. Both act as the user the
// request names and keep memory flat whatever the file size.
package files

import (
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"syscall"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/envd/identity"
)

type handler struct {
	logger *slog.Logger
	defs   *defaults.Defaults
}

// NewHandler returns the handler for GET and POST /files. Request bodies
// are not size-capped (files can be large); header sizes are left to the
// http.Server's MaxHeaderBytes.
func NewHandler(logger *slog.Logger, defs *defaults.Defaults) http.Handler {
	return &handler{logger: logger, defs: defs}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		h.download(w, r)
	case http.MethodPost:
		h.upload(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		envdhttp.WriteJSON(w, http.StatusMethodNotAllowed, envdhttp.ErrorBody{
			Code:    http.StatusMethodNotAllowed,
			Kind:    "invalid_argument",
			Message: "method " + r.Method + " is not allowed on /files; use GET or POST",
		})
	}
}

// user resolves who the request acts as: E2B's `username` query parameter
// wins over the Authorization header, which wins over the default user.
func (h *handler) user(r *http.Request) (identity.User, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		var err error
		if name, err = identity.NameFromRequest(r.Header, h.defs.User()); err != nil {
			return identity.User{}, err
		}
	}
	return identity.Lookup(name)
}

// Access bits as they sit in each of the owner/group/other triads.
const (
	accessRead  = 4
	accessWrite = 2
)

// allowed reports whether u may access fi in the way want asks. envd runs as
// root in the guest, so without this check every user could read and
// overwrite every file; it applies the classic owner/group/other mode bits
// (ACLs are not consulted). An unprivileged envd leaves the decision to the
// kernel, which already applies its own identity.
func allowed(fi fs.FileInfo, u identity.User, want uint32) bool {
	if os.Geteuid() != 0 || u.UID == 0 {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := uint32(fi.Mode().Perm())
	switch {
	case st.Uid == u.UID:
		return (perm>>6)&want == want
	case inGroup(st.Gid, u):
		return (perm>>3)&want == want
	}
	return perm&want == want
}

func inGroup(gid uint32, u identity.User) bool {
	if gid == u.GID {
		return true
	}
	for _, g := range u.Groups {
		if g == gid {
			return true
		}
	}
	return false
}
