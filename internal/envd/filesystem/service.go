// Package filesystem serves envd's Filesystem Connect RPC service: stat,
// list, make, move and remove entries, and watch directories for changes,
// each acting as the user the request names.
package filesystem

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/envd/identity"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
)

const (
	// defaultKeepAlive is how long a WatchDir stream may stay silent before
	// envd sends a KeepAlive. It is below the 60 s idle timeout common to
	// proxies between the SDK and the sandbox.
	defaultKeepAlive = 50 * time.Second
	// defaultMaxBuffered caps the events one polling watcher holds between
	// two GetWatcherEvents calls.
	defaultMaxBuffered = 4096
)

// Service implements filesystemconnect.FilesystemHandler.
type Service struct {
	logger *slog.Logger
	defs   *defaults.Defaults

	// keepAlive and maxBuffered are fields so tests can shrink them.
	keepAlive   time.Duration
	maxBuffered int

	// done is closed by Close; every watcher goroutine and stream selects
	// on it. active counts them so Close can wait for them to let go of
	// their inotify descriptors.
	done      chan struct{}
	closeOnce sync.Once
	active    sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	watchers map[string]*pollWatcher
}

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// NewService returns a Service that acts as the user each request names,
// falling back to defs.User().
func NewService(logger *slog.Logger, defs *defaults.Defaults) *Service {
	return &Service{
		logger:      logger,
		defs:        defs,
		keepAlive:   defaultKeepAlive,
		maxBuffered: defaultMaxBuffered,
		done:        make(chan struct{}),
		watchers:    map[string]*pollWatcher{},
	}
}

// Close stops every watcher (streaming and polling) and waits for them to
// release their inotify descriptors. Open WatchDir streams end with
// Unavailable. Calling it again does nothing.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for _, pw := range s.watchers {
			pw.cancel()
		}
		s.watchers = map[string]*pollWatcher{}
		s.mu.Unlock()
		close(s.done)
	})
	s.active.Wait()
	return nil
}

// user resolves the account a request acts as.
func (s *Service) user(h http.Header) (identity.User, error) {
	name, err := identity.NameFromRequest(h, s.defs.User())
	if err != nil {
		return identity.User{}, err
	}
	return identity.Lookup(name)
}
