package filesystem

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	pb "github.com/wrenn/wrenn/proto/envd/filesystem"
	"github.com/wrenn/wrenn/proto/envd/filesystem/filesystemconnect"
)

// harness serves a Service over real HTTP, as envd does, and talks to it
// with the generated Connect client.
type harness struct {
	svc    *Service
	client filesystemconnect.FilesystemClient
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	svc := NewService(slog.New(slog.DiscardHandler), defaults.New(me.Username, ""))
	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(svc))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("close service: %v", err)
		}
		srv.Close()
	})
	return &harness{svc: svc, client: filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL)}
}

// req builds a request, acting as user when it is not empty.
func req[T any](msg *T, asUser string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if asUser != "" {
		r.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(asUser+":")))
	}
	return r
}

func wantCode(t *testing.T, err error, want connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestStat(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "f.txt")
	writeFile(t, file, "hello")
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("missing", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	me, _ := user.Current()
	grp, _ := user.LookupGroupId(me.Gid)

	t.Run("file", func(t *testing.T) {
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: file}, ""))
		if err != nil {
			t.Fatal(err)
		}
		e := res.Msg.GetEntry()
		if e.GetName() != "f.txt" || e.GetPath() != file || e.GetType() != pb.FileType_FILE_TYPE_FILE || e.GetSize() != 5 {
			t.Fatalf("entry = %v", e)
		}
		if e.GetMode() != 0o640 || e.GetPermissions() != "-rw-r-----" {
			t.Fatalf("mode = %o %q, want 0640 -rw-r-----", e.GetMode(), e.GetPermissions())
		}
		if e.GetOwner() != me.Username || e.GetGroup() != grp.Name {
			t.Fatalf("owner %q:%q, want %q:%q", e.GetOwner(), e.GetGroup(), me.Username, grp.Name)
		}
		if !e.GetModifiedTime().AsTime().Equal(mtime) {
			t.Fatalf("mtime = %v, want %v", e.GetModifiedTime().AsTime(), mtime)
		}
		if e.SymlinkTarget != nil {
			t.Fatalf("regular file has symlink target %q", e.GetSymlinkTarget())
		}
	})
	t.Run("directory", func(t *testing.T) {
		if err := os.Chmod(dir, 0o710); err != nil {
			t.Fatal(err)
		}
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: dir}, ""))
		if err != nil {
			t.Fatal(err)
		}
		e := res.Msg.GetEntry()
		if e.GetType() != pb.FileType_FILE_TYPE_DIRECTORY || fs.FileMode(e.GetMode()) != fs.ModeDir|0o710 || e.GetPermissions() != "drwx--x---" {
			t.Fatalf("entry = %v", e)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: filepath.Join(dir, "link")}, ""))
		if err != nil {
			t.Fatal(err)
		}
		e := res.Msg.GetEntry()
		if e.GetType() != pb.FileType_FILE_TYPE_SYMLINK || e.GetSymlinkTarget() != file || fs.FileMode(e.GetMode())&fs.ModeSymlink == 0 {
			t.Fatalf("entry = %v", e)
		}
	})
	t.Run("dangling symlink", func(t *testing.T) {
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: filepath.Join(dir, "dangling")}, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetEntry().GetSymlinkTarget(); got != filepath.Join(dir, "missing") {
			t.Fatalf("target = %q", got)
		}
	})
	t.Run("home", func(t *testing.T) {
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: "~"}, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetEntry().GetPath(); got != me.HomeDir {
			t.Fatalf("~ resolved to %q, want %q", got, me.HomeDir)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: filepath.Join(dir, "nope")}, ""))
		wantCode(t, err, connect.CodeNotFound)
	})
	t.Run("unknown user", func(t *testing.T) {
		_, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: dir}, "no-such-user-xyz"))
		wantCode(t, err, connect.CodeInvalidArgument)
	})
}

func TestMakeDir(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "file"), "x")
	tests := []struct {
		name string
		path string
		code connect.Code // 0 means success
	}{
		{"with parents", filepath.Join(dir, "a", "b", "c"), 0},
		{"exists", filepath.Join(dir, "a", "b"), connect.CodeAlreadyExists},
		{"file in the way", filepath.Join(dir, "file"), connect.CodeInvalidArgument},
		{"file as parent", filepath.Join(dir, "file", "sub"), connect.CodeInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.client.MakeDir(context.Background(), req(&pb.MakeDirRequest{Path: tc.path}, ""))
			if tc.code != 0 {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e := res.Msg.GetEntry(); e.GetPath() != tc.path || e.GetType() != pb.FileType_FILE_TYPE_DIRECTORY {
				t.Fatalf("entry = %v", e)
			}
			if fi, err := os.Stat(tc.path); err != nil || !fi.IsDir() {
				t.Fatalf("directory not created: %v", err)
			}
		})
	}
}

func TestMove(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.txt")
	writeFile(t, src, "data")
	t.Run("creates destination parents", func(t *testing.T) {
		dst := filepath.Join(dir, "x", "y", "dst.txt")
		res, err := h.client.Move(context.Background(), req(&pb.MoveRequest{Source: src, Destination: dst}, ""))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.GetEntry().GetPath() != dst || res.Msg.GetEntry().GetSize() != 4 {
			t.Fatalf("entry = %v", res.Msg.GetEntry())
		}
		if _, err := os.Stat(src); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("source still there: %v", err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != "data" {
			t.Fatalf("destination = %q, %v", b, err)
		}
	})
	t.Run("missing source", func(t *testing.T) {
		_, err := h.client.Move(context.Background(), req(&pb.MoveRequest{Source: filepath.Join(dir, "nope"), Destination: filepath.Join(dir, "z")}, ""))
		wantCode(t, err, connect.CodeNotFound)
	})
	t.Run("directory onto non-empty directory", func(t *testing.T) {
		for _, d := range []string{"d1", "d2/full"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		_, err := h.client.Move(context.Background(), req(&pb.MoveRequest{Source: filepath.Join(dir, "d1"), Destination: filepath.Join(dir, "d2")}, ""))
		wantCode(t, err, connect.CodeAlreadyExists)
	})
}

func TestListDir(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	for _, d := range []string{"a/b/c", "z"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "f"), "1")
	writeFile(t, filepath.Join(dir, "a", "g"), "22")
	writeFile(t, filepath.Join(dir, "a", "b", "c", "deep"), "333")
	// A link back to the top: following it would loop for ever.
	if err := os.Symlink(dir, filepath.Join(dir, "a", "loop")); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(t.TempDir(), "top")
	if err := os.Symlink(dir, top); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		path  string
		depth uint32
		want  []string // relative to dir, in order
		code  connect.Code
	}{
		{"depth 0 means 1", dir, 0, []string{"a", "f", "z"}, 0},
		{"depth 1", dir, 1, []string{"a", "f", "z"}, 0},
		{"depth 2", dir, 2, []string{"a", "a/b", "a/g", "a/loop", "f", "z"}, 0},
		{"deep, symlink loop not followed", dir, 100, []string{"a", "a/b", "a/b/c", "a/b/c/deep", "a/g", "a/loop", "f", "z"}, 0},
		{"file", filepath.Join(dir, "f"), 1, nil, connect.CodeInvalidArgument},
		{"missing", filepath.Join(dir, "nope"), 1, nil, connect.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.client.ListDir(context.Background(), req(&pb.ListDirRequest{Path: tc.path, Depth: tc.depth}, ""))
			if tc.code != 0 {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range res.Msg.GetEntries() {
				rel, _ := filepath.Rel(dir, e.GetPath())
				got = append(got, rel)
				if e.GetName() != filepath.Base(e.GetPath()) || e.GetOwner() == "" || e.GetPermissions() == "" || e.GetModifiedTime() == nil {
					t.Errorf("incomplete entry %v", e)
				}
				if rel == "a/loop" && (e.GetType() != pb.FileType_FILE_TYPE_SYMLINK || e.GetSymlinkTarget() != dir) {
					t.Errorf("loop entry = %v", e)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("entries = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("through a symlinked directory", func(t *testing.T) {
		res, err := h.client.ListDir(context.Background(), req(&pb.ListDirRequest{Path: top, Depth: 1}, ""))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range res.Msg.GetEntries() {
			got = append(got, e.GetPath())
		}
		// Paths stay under the path the client asked for.
		want := []string{filepath.Join(top, "a"), filepath.Join(top, "f"), filepath.Join(top, "z")}
		if !slices.Equal(got, want) {
			t.Fatalf("entries = %v, want %v", got, want)
		}
	})
}

func TestRemove(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tree", "sub", "f"), "x")
	keep := filepath.Join(dir, "keep")
	writeFile(t, keep, "x")
	if err := os.Symlink(keep, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		code connect.Code
	}{
		{"recursive directory", filepath.Join(dir, "tree"), 0},
		{"symlink, not its target", filepath.Join(dir, "link"), 0},
		{"missing", filepath.Join(dir, "nope"), connect.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.Remove(context.Background(), req(&pb.RemoveRequest{Path: tc.path}, ""))
			if tc.code != 0 {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(tc.path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s still exists: %v", tc.path, err)
			}
		})
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("symlink target was removed: %v", err)
	}
}

func TestOwnershipAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown to another user is only possible as root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("needs a \"nobody\" account: " + err.Error())
	}
	h := newHarness(t)
	dir := t.TempDir()
	mk := filepath.Join(dir, "m1", "m2")
	if _, err := h.client.MakeDir(context.Background(), req(&pb.MakeDirRequest{Path: mk}, "nobody")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "src"), "x")
	if _, err := h.client.Move(context.Background(), req(&pb.MoveRequest{Source: filepath.Join(dir, "src"), Destination: filepath.Join(dir, "p1", "dst")}, "nobody")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "m1"), mk, filepath.Join(dir, "p1")} {
		res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: p}, ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetEntry().GetOwner(); got != nobody.Username {
			t.Errorf("%s owned by %q, want %q", p, got, nobody.Username)
		}
	}
	// The temp dir itself existed already and keeps its owner.
	res, err := h.client.Stat(context.Background(), req(&pb.StatRequest{Path: dir}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetEntry().GetOwner(); got != "root" {
		t.Errorf("existing parent now owned by %q, want root", got)
	}
}

// drain reads a server stream in the background until it ends.
func drain(t *testing.T, stream *connect.ServerStreamForClient[pb.WatchDirResponse]) (<-chan *pb.WatchDirResponse, <-chan error) {
	t.Helper()
	msgs := make(chan *pb.WatchDirResponse, 1024)
	done := make(chan error, 1)
	go func() {
		defer close(msgs)
		for stream.Receive() {
			msgs <- stream.Msg()
		}
		done <- stream.Err()
	}()
	return msgs, done
}

// waitEvent reads msgs until an event matching name and type arrives.
func waitEvent(t *testing.T, msgs <-chan *pb.WatchDirResponse, name string, typ pb.EventType) *pb.FilesystemEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("stream ended before %v %q; saw %v", typ, name, seen)
			}
			if fe := m.GetFilesystem(); fe != nil {
				seen = append(seen, fe.GetType().String()+" "+fe.GetName())
				if fe.GetName() == name && fe.GetType() == typ {
					return fe
				}
			}
		case <-deadline:
			t.Fatalf("no %v %q within 10s; saw %v", typ, name, seen)
		}
	}
}

func startWatch(t *testing.T, h *harness, r *pb.WatchDirRequest) (<-chan *pb.WatchDirResponse, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := h.client.WatchDir(ctx, req(r, ""))
	if err != nil {
		t.Fatal(err)
	}
	msgs, done := drain(t, stream)
	select {
	case m := <-msgs:
		if m.GetStart() == nil {
			t.Fatalf("first message = %v, want start", m)
		}
	case err := <-done:
		t.Fatalf("stream ended before start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no start event within 10s")
	}
	return msgs, done
}

func TestWatchDir(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	msgs, _ := startWatch(t, h, &pb.WatchDirRequest{Path: dir, IncludeEntry: true})

	p := filepath.Join(dir, "f")
	writeFile(t, p, "")
	if e := waitEvent(t, msgs, "f", pb.EventType_EVENT_TYPE_CREATE); e.GetEntry().GetPath() != p {
		t.Fatalf("create event entry = %v", e.GetEntry())
	}
	if err := os.WriteFile(p, []byte("more"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, msgs, "f", pb.EventType_EVENT_TYPE_WRITE); e.GetEntry() == nil {
		t.Fatal("write event has no entry")
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, msgs, "f", pb.EventType_EVENT_TYPE_CHMOD)
	if err := os.Rename(p, filepath.Join(dir, "g")); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, msgs, "f", pb.EventType_EVENT_TYPE_RENAME); e.Entry != nil {
		t.Fatalf("renamed-away entry still has info %v", e.GetEntry())
	}
	waitEvent(t, msgs, "g", pb.EventType_EVENT_TYPE_CREATE)
	if err := os.Remove(filepath.Join(dir, "g")); err != nil {
		t.Fatal(err)
	}
	if e := waitEvent(t, msgs, "g", pb.EventType_EVENT_TYPE_REMOVE); e.Entry != nil {
		t.Fatalf("removed entry still has info %v", e.GetEntry())
	}
}

func TestWatchDirRecursive(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	msgs, _ := startWatch(t, h, &pb.WatchDirRequest{Path: dir, Recursive: true})

	writeFile(t, filepath.Join(dir, "old", "f"), "x")
	waitEvent(t, msgs, "old/f", pb.EventType_EVENT_TYPE_CREATE)

	// A directory created after the watch started is watched too, and so
	// is what lands in it before its watch can be added.
	if err := os.MkdirAll(filepath.Join(dir, "new", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, msgs, "new", pb.EventType_EVENT_TYPE_CREATE)
	waitEvent(t, msgs, "new/deeper", pb.EventType_EVENT_TYPE_CREATE)
	writeFile(t, filepath.Join(dir, "new", "deeper", "late"), "x")
	waitEvent(t, msgs, "new/deeper/late", pb.EventType_EVENT_TYPE_CREATE)
	if err := os.WriteFile(filepath.Join(dir, "new", "deeper", "late"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, msgs, "new/deeper/late", pb.EventType_EVENT_TYPE_WRITE)
}

func TestWatchDirNonRecursiveIgnoresSubdirs(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	msgs, _ := startWatch(t, h, &pb.WatchDirRequest{Path: dir})
	writeFile(t, filepath.Join(dir, "sub", "hidden"), "x")
	// A later top-level event proves the stream is live; anything about
	// sub/hidden must have arrived before it, since inotify keeps order.
	writeFile(t, filepath.Join(dir, "marker"), "x")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			fe := m.GetFilesystem()
			if fe.GetName() == "sub/hidden" {
				t.Fatalf("non-recursive watch reported %v", fe)
			}
			if fe.GetName() == "marker" {
				return
			}
		case <-deadline:
			t.Fatal("no marker event within 10s")
		}
	}
}

func TestWatchDirErrors(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "x")
	tests := []struct {
		name string
		path string
		code connect.Code
	}{
		{"missing", filepath.Join(dir, "nope"), connect.CodeNotFound},
		{"file", filepath.Join(dir, "f"), connect.CodeInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name+" stream", func(t *testing.T) {
			stream, err := h.client.WatchDir(context.Background(), req(&pb.WatchDirRequest{Path: tc.path}, ""))
			if err == nil {
				for stream.Receive() {
					t.Fatalf("got message %v", stream.Msg())
				}
				err = stream.Err()
			}
			wantCode(t, err, tc.code)
		})
		t.Run(tc.name+" polling", func(t *testing.T) {
			_, err := h.client.CreateWatcher(context.Background(), req(&pb.CreateWatcherRequest{Path: tc.path}, ""))
			wantCode(t, err, tc.code)
		})
	}
}

func TestWatchDirKeepAlive(t *testing.T) {
	h := newHarness(t)
	h.svc.keepAlive = 20 * time.Millisecond
	msgs, _ := startWatch(t, h, &pb.WatchDirRequest{Path: t.TempDir()})
	deadline := time.After(10 * time.Second)
	for n := 0; n < 2; {
		select {
		case m := <-msgs:
			if m.GetKeepalive() == nil {
				t.Fatalf("idle stream sent %v", m)
			}
			n++
		case <-deadline:
			t.Fatal("fewer than 2 keepalives within 10s")
		}
	}
}

func TestCloseEndsStreams(t *testing.T) {
	h := newHarness(t)
	_, done := startWatch(t, h, &pb.WatchDirRequest{Path: t.TempDir()})
	if _, err := h.client.CreateWatcher(context.Background(), req(&pb.CreateWatcherRequest{Path: t.TempDir()}, "")); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		wantCode(t, err, connect.CodeUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10s after Close")
	}
	_, err := h.client.CreateWatcher(context.Background(), req(&pb.CreateWatcherRequest{Path: t.TempDir()}, ""))
	wantCode(t, err, connect.CodeUnavailable)
}

// pollUntil calls GetWatcherEvents until an event matching name and type
// shows up, returning everything collected.
func pollUntil(t *testing.T, h *harness, id, name string, typ pb.EventType) []*pb.FilesystemEvent {
	t.Helper()
	var all []*pb.FilesystemEvent
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		res, err := h.client.GetWatcherEvents(context.Background(), req(&pb.GetWatcherEventsRequest{WatcherId: id}, ""))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res.Msg.GetEvents()...)
		for _, e := range res.Msg.GetEvents() {
			if e.GetName() == name && e.GetType() == typ {
				return all
			}
		}
		pause()
	}
	t.Fatalf("no %v %q within 10s; got %v", typ, name, all)
	return nil
}

func TestPollingWatcher(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	res, err := h.client.CreateWatcher(context.Background(), req(&pb.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true}, ""))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetWatcherId()

	writeFile(t, filepath.Join(dir, "f"), "x")
	evs := pollUntil(t, h, id, "f", pb.EventType_EVENT_TYPE_CREATE)
	if evs[0].GetEntry().GetName() != "f" {
		t.Fatalf("event without entry: %v", evs[0])
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, h, id, "sub", pb.EventType_EVENT_TYPE_CREATE)
	writeFile(t, filepath.Join(dir, "sub", "g"), "x")
	got := pollUntil(t, h, id, "sub/g", pb.EventType_EVENT_TYPE_CREATE)
	for _, e := range got {
		if e.GetName() == "f" && e.GetType() == pb.EventType_EVENT_TYPE_CREATE {
			t.Fatalf("event returned twice: %v", e)
		}
	}

	if _, err := h.client.RemoveWatcher(context.Background(), req(&pb.RemoveWatcherRequest{WatcherId: id}, "")); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.GetWatcherEvents(context.Background(), req(&pb.GetWatcherEventsRequest{WatcherId: id}, ""))
	wantCode(t, err, connect.CodeNotFound)
	_, err = h.client.RemoveWatcher(context.Background(), req(&pb.RemoveWatcherRequest{WatcherId: id}, ""))
	wantCode(t, err, connect.CodeNotFound)
}

func TestPollingWatcherOverflowKeepsOldest(t *testing.T) {
	h := newHarness(t)
	h.svc.maxBuffered = 3
	dir := t.TempDir()
	res, err := h.client.CreateWatcher(context.Background(), req(&pb.CreateWatcherRequest{Path: dir}, ""))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetWatcherId()
	names := []string{"a", "b", "c", "d", "e"}
	for _, n := range names {
		if err := os.Mkdir(filepath.Join(dir, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the watcher has seen the last directory, i.e. has tried
	// (and failed) to buffer it.
	pw, err := h.svc.watcher(id)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pw.mu.Lock()
		n := len(pw.events) + pw.dropped
		pw.mu.Unlock()
		if n >= len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher saw %d of %d events within 10s", n, len(names))
		}
		pause()
	}
	got, err := h.client.GetWatcherEvents(context.Background(), req(&pb.GetWatcherEventsRequest{WatcherId: id}, ""))
	if err != nil {
		t.Fatal(err)
	}
	var gotNames []string
	for _, e := range got.Msg.GetEvents() {
		gotNames = append(gotNames, e.GetName())
	}
	if !slices.Equal(gotNames, names[:3]) {
		t.Fatalf("events = %v, want the oldest three %v", gotNames, names[:3])
	}
	again, err := h.client.GetWatcherEvents(context.Background(), req(&pb.GetWatcherEventsRequest{WatcherId: id}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(again.Msg.GetEvents()); n != 0 {
		t.Fatalf("second call returned %d events, want 0 (buffer is cleared)", n)
	}
}

// pause spaces out polls so a polling loop does not spin a shared CPU.
func pause() { <-time.After(10 * time.Millisecond) }
