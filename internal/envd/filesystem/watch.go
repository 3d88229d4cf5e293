package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	"github.com/wrenn/wrenn/internal/errdefs"
	pb "github.com/wrenn/wrenn/proto/envd/filesystem"
)

// dirWatcher turns inotify events under one directory into wire events.
// fsnotify watches single directories only, so for a recursive watch it
// adds every subdirectory itself, including ones created later.
type dirWatcher struct {
	logger       *slog.Logger
	fsw          *fsnotify.Watcher
	root         string
	recursive    bool
	includeEntry bool
	names        *names
}

// newDirWatcher starts watching root, which must be an existing directory
// (a symlink to one is accepted). The caller must close it.
func newDirWatcher(logger *slog.Logger, root string, recursive, includeEntry bool) (*dirWatcher, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", root, errdefs.FromOS(err))
	}
	if !fi.IsDir() {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "watch %s: not a directory", root)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: create inotify instance: %w", root, errdefs.FromOS(err))
	}
	w := &dirWatcher{
		logger: logger.With("path", root), fsw: fsw, root: root,
		recursive: recursive, includeEntry: includeEntry, names: newNames(),
	}
	if err := fsw.Add(root); err != nil {
		_ = fsw.Close()
		return nil, fmt.Errorf("watch %s: %w", root, errdefs.FromOS(err))
	}
	if recursive {
		if err := w.addTree(root, nil); err != nil {
			_ = fsw.Close()
			return nil, err
		}
	}
	return w, nil
}

func (w *dirWatcher) close() error { return w.fsw.Close() }

// addTree watches every real directory below dir (symlinks are not
// followed, so link cycles end the walk). When found is non-nil, each
// entry met on the way is reported to it: those entries may have appeared
// before their directory's watch existed (mkdir -p a/b/c; touch a/b/f), and
// inotify will never tell us about them.
func (w *dirWatcher) addTree(dir string, found func(path string)) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A subtree that vanished or is unreadable cannot be watched;
			// the rest still can.
			if p == dir && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("watch %s: %w", p, errdefs.FromOS(err))
			}
			return nil
		}
		if p == dir {
			return nil
		}
		if found != nil {
			found(p)
		}
		if d.IsDir() {
			if err := w.fsw.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("watch %s: %w", p, errdefs.FromOS(err))
			}
		}
		return nil
	})
}

// convert maps one inotify event to wire events (one per operation it
// carries) and, for a directory created under a recursive watch, starts
// watching it and reports what is already inside.
func (w *dirWatcher) convert(ev fsnotify.Event) []*pb.FilesystemEvent {
	var out []*pb.FilesystemEvent
	add := func(p string, t pb.EventType) {
		name, err := filepath.Rel(w.root, p)
		if err != nil {
			return
		}
		fe := &pb.FilesystemEvent{Name: name, Type: t}
		if w.includeEntry {
			if e, err := stat(p, w.names); err == nil {
				fe.Entry = e
			}
		}
		out = append(out, fe)
	}
	ops := []struct {
		op fsnotify.Op
		t  pb.EventType
	}{
		{fsnotify.Create, pb.EventType_EVENT_TYPE_CREATE},
		{fsnotify.Rename, pb.EventType_EVENT_TYPE_RENAME},
		{fsnotify.Chmod, pb.EventType_EVENT_TYPE_CHMOD},
		{fsnotify.Write, pb.EventType_EVENT_TYPE_WRITE},
		{fsnotify.Remove, pb.EventType_EVENT_TYPE_REMOVE},
	}
	for _, o := range ops {
		if ev.Has(o.op) {
			add(ev.Name, o.t)
		}
	}
	if w.recursive && ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			err := w.addTree(ev.Name, func(p string) { add(p, pb.EventType_EVENT_TYPE_CREATE) })
			if err != nil {
				w.logger.Warn("cannot watch new subdirectory", "dir", ev.Name, "error", err)
			}
			if err := w.fsw.Add(ev.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				w.logger.Warn("cannot watch new subdirectory", "dir", ev.Name, "error", err)
			}
		}
	}
	return out
}

// run delivers events until ctx ends, done closes, delivery fails or
// inotify fails. With idle > 0, onIdle is called whenever nothing has been
// delivered for that long.
func (w *dirWatcher) run(ctx context.Context, done <-chan struct{}, deliver func([]*pb.FilesystemEvent) error, idle time.Duration, onIdle func() error) error {
	var tick <-chan time.Time
	reset := func() {}
	if idle > 0 {
		t := time.NewTimer(idle)
		defer t.Stop()
		tick = t.C
		reset = func() { t.Reset(idle) }
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return errdefs.New(errdefs.ErrUnavailable, "envd is shutting down")
		case <-tick:
			if err := onIdle(); err != nil {
				return err
			}
			reset()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errdefs.New(errdefs.ErrUnavailable, "watch %s: watcher closed", w.root)
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// The kernel queue overflowed and some events are lost;
				// keep watching rather than end the client's stream.
				w.logger.Warn("inotify queue overflowed, events lost")
				continue
			}
			return fmt.Errorf("watch %s: %w", w.root, err)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errdefs.New(errdefs.ErrUnavailable, "watch %s: watcher closed", w.root)
			}
			if evs := w.convert(ev); len(evs) > 0 {
				if err := deliver(evs); err != nil {
					return err
				}
				reset()
			}
		}
	}
}

// WatchDir streams the changes under a directory: a StartEvent once the
// watch is in place, then one FilesystemEvent per change, and a KeepAlive
// after each quiet interval so idle proxies keep the stream open.
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[pb.WatchDirRequest], stream *connect.ServerStream[pb.WatchDirResponse]) error {
	u, err := s.user(req.Header())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	if !s.track() {
		return errdefs.ToConnect(errdefs.New(errdefs.ErrUnavailable, "envd is shutting down"))
	}
	defer s.active.Done()

	w, err := newDirWatcher(s.logger, u.Resolve(req.Msg.GetPath()), req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		return errdefs.ToConnect(err)
	}
	defer w.close()

	if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Start{Start: &pb.WatchDirResponse_StartEvent{}}}); err != nil {
		return errdefs.ToConnect(fmt.Errorf("send start event: %w", err))
	}
	deliver := func(evs []*pb.FilesystemEvent) error {
		for _, e := range evs {
			if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Filesystem{Filesystem: e}}); err != nil {
				return fmt.Errorf("send filesystem event: %w", err)
			}
		}
		return nil
	}
	keepAlive := func() error {
		if err := stream.Send(&pb.WatchDirResponse{Event: &pb.WatchDirResponse_Keepalive{Keepalive: &pb.WatchDirResponse_KeepAlive{}}}); err != nil {
			return fmt.Errorf("send keepalive: %w", err)
		}
		return nil
	}
	err = w.run(ctx, s.done, deliver, s.keepAliveFor(req.Header().Get("Keepalive-Ping-Interval")), keepAlive)
	if ctx.Err() != nil {
		// The client left; that is how every stream ends.
		return nil
	}
	return errdefs.ToConnect(err)
}

// keepAliveFor honours E2B's Keepalive-Ping-Interval request header
// (seconds) and otherwise uses the service's interval.
func (s *Service) keepAliveFor(header string) time.Duration {
	if secs, err := strconv.Atoi(header); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	return s.keepAlive
}

// track registers a watcher goroutine or stream with Close. It reports
// false once Close has begun.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}
