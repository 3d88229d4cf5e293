package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/filesystem"
)

// pollWatcher buffers a dirWatcher's events until the client collects
// them with GetWatcherEvents.
//
// The buffer holds at most max events. When it is full, newer events are
// dropped (the buffered, older ones are kept, so the client sees an
// unbroken prefix of what happened) and the number dropped is logged
// with the next GetWatcherEvents. Clients that cannot afford gaps should
// poll more often or use the WatchDir stream.
type pollWatcher struct {
	id     string
	cancel context.CancelFunc
	stop   chan struct{} // closed when the goroutine has finished

	mu      sync.Mutex
	events  []*pb.FilesystemEvent
	max     int
	dropped int
	err     error // why the watcher stopped, if it did by itself
}

func (p *pollWatcher) deliver(evs []*pb.FilesystemEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evs {
		if len(p.events) >= p.max {
			p.dropped++
			continue
		}
		p.events = append(p.events, e)
	}
	return nil
}

// take returns and clears the buffered events.
func (p *pollWatcher) take() (events []*pb.FilesystemEvent, dropped int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	events, dropped, err = p.events, p.dropped, p.err
	p.events, p.dropped = nil, 0
	return events, dropped, err
}

// CreateWatcher starts a watcher whose events the client polls for.
func (s *Service) CreateWatcher(ctx context.Context, req *connect.Request[pb.CreateWatcherRequest]) (*connect.Response[pb.CreateWatcherResponse], error) {
	u, err := s.user(req.Header())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	w, err := newDirWatcher(s.logger, u.Resolve(req.Msg.GetPath()), req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	id, err := newWatcherID()
	if err != nil {
		_ = w.close()
		return nil, errdefs.ToConnect(err)
	}
	// The watcher outlives this request, so it runs under its own context,
	// cancelled by RemoveWatcher or Close.
	wctx, cancel := context.WithCancel(context.Background())
	pw := &pollWatcher{id: id, cancel: cancel, stop: make(chan struct{}), max: s.maxBuffered}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		_ = w.close()
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrUnavailable, "envd is shutting down"))
	}
	s.watchers[id] = pw
	s.active.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.active.Done()
		defer close(pw.stop)
		defer w.close()
		err := w.run(wctx, s.done, pw.deliver, 0, nil)
		if wctx.Err() == nil {
			pw.mu.Lock()
			pw.err = err
			pw.mu.Unlock()
		}
	}()
	return connect.NewResponse(&pb.CreateWatcherResponse{WatcherId: id}), nil
}

// GetWatcherEvents returns, and forgets, the events buffered since the
// previous call. If the watcher stopped by itself (its directory was
// removed, say), the buffered events are returned first and the reason on
// the call after.
func (s *Service) GetWatcherEvents(ctx context.Context, req *connect.Request[pb.GetWatcherEventsRequest]) (*connect.Response[pb.GetWatcherEventsResponse], error) {
	pw, err := s.watcher(req.Msg.GetWatcherId())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	events, dropped, werr := pw.take()
	if dropped > 0 {
		s.logger.Warn("watcher buffer full, events dropped", "watcher_id", pw.id, "dropped", dropped, "kept", len(events))
	}
	if len(events) == 0 && werr != nil {
		return nil, errdefs.ToConnect(werr)
	}
	return connect.NewResponse(&pb.GetWatcherEventsResponse{Events: events}), nil
}

// RemoveWatcher stops a watcher and waits for it to release its inotify
// descriptor.
func (s *Service) RemoveWatcher(ctx context.Context, req *connect.Request[pb.RemoveWatcherRequest]) (*connect.Response[pb.RemoveWatcherResponse], error) {
	id := req.Msg.GetWatcherId()
	s.mu.Lock()
	pw, ok := s.watchers[id]
	delete(s.watchers, id)
	s.mu.Unlock()
	if !ok {
		return nil, errdefs.ToConnect(errdefs.New(errdefs.ErrNotFound, "watcher %q not found", id))
	}
	pw.cancel()
	select {
	case <-pw.stop:
	case <-ctx.Done():
		return nil, errdefs.ToConnect(ctx.Err())
	}
	return connect.NewResponse(&pb.RemoveWatcherResponse{}), nil
}

func (s *Service) watcher(id string) (*pollWatcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pw, ok := s.watchers[id]
	if !ok {
		return nil, errdefs.New(errdefs.ErrNotFound, "watcher %q not found", id)
	}
	return pw, nil
}

func newWatcherID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
