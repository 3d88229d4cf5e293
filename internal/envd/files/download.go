package files

import (
	"fmt"
	"mime"
	"net/http"
	"os"
	"path/filepath"

	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/errdefs"
)

// download streams one regular file. http.ServeContent copies it in small
// chunks, so memory does not grow with the file, and answers Range and
// conditional requests for free.
func (h *handler) download(w http.ResponseWriter, r *http.Request) {
	u, err := h.user(r)
	if err != nil {
		envdhttp.WriteError(w, err)
		return
	}
	raw := r.URL.Query().Get("path")
	if raw == "" {
		envdhttp.WriteError(w, errdefs.New(errdefs.ErrInvalidArgument, "the path query parameter is required"))
		return
	}
	p := u.Resolve(raw)
	// Stat before opening: opening a FIFO would block until a writer came.
	fi, err := os.Stat(p)
	if err != nil {
		envdhttp.WriteError(w, fmt.Errorf("download %s: %w", p, errdefs.FromOS(err)))
		return
	}
	if err := checkDownloadable(p, fi.Mode()); err != nil {
		envdhttp.WriteError(w, err)
		return
	}
	if !allowed(fi, u, accessRead) {
		envdhttp.WriteError(w, errdefs.New(errdefs.ErrPermissionDenied, "download %s: user %s may not read it", p, u.Name))
		return
	}
	f, err := os.Open(p)
	if err != nil {
		envdhttp.WriteError(w, fmt.Errorf("download %s: %w", p, errdefs.FromOS(err)))
		return
	}
	defer f.Close()
	// Check the opened file too: the path may have been swapped meanwhile.
	fi, err = f.Stat()
	if err != nil {
		envdhttp.WriteError(w, fmt.Errorf("download %s: %w", p, errdefs.FromOS(err)))
		return
	}
	if err := checkDownloadable(p, fi.Mode()); err != nil {
		envdhttp.WriteError(w, err)
		return
	}
	name := filepath.Base(p)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

func checkDownloadable(p string, mode os.FileMode) error {
	switch {
	case mode.IsDir():
		return errdefs.New(errdefs.ErrInvalidArgument, "download %s: it is a directory", p)
	case !mode.IsRegular():
		return errdefs.New(errdefs.ErrInvalidArgument, "download %s: not a regular file", p)
	}
	return nil
}
