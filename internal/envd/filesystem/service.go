// Package filesystem serves envd's Filesystem Connect RPC service: stat,
// list, make, move and remove entries, and watch directories for changes,
// each acting as the user the request names.
package filesystem

import (
	"log/slog"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
)

// Service implements filesystemconnect.FilesystemHandler.
type Service struct {
	filesystemconnect.UnimplementedFilesystemHandler

	logger *slog.Logger
	defs   *defaults.Defaults
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// NewService returns a Service that acts as the user each request names,
// falling back to defs.User().
func NewService(logger *slog.Logger, defs *defaults.Defaults) *Service {
	return &Service{logger: logger, defs: defs}
}

// Close stops every watcher (streaming and polling).
func (s *Service) Close() error { return nil }
