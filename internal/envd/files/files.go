// Package files serves envd's /files HTTP routes: download a file with GET
// and upload one or more with POST, as E2B's envd does.
package files

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/envd/envdhttp"
	"github.com/wrenn/wrenn/internal/errdefs"
)

type handler struct {
	logger *slog.Logger
	defs   *defaults.Defaults
}

// NewHandler returns the handler for GET and POST /files.
func NewHandler(logger *slog.Logger, defs *defaults.Defaults) http.Handler {
	return &handler{logger: logger, defs: defs}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	envdhttp.WriteError(w, errdefs.New(errdefs.ErrUnavailable, "%s", errors.New("files: not implemented yet").Error()))
}
