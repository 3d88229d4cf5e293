package wrenn

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// Files reads and writes a sandbox's filesystem. Reach it as
// Sandbox.Files. Paths are absolute paths in the guest.
type Files struct{ sb *Sandbox }

func pathQuery(p string) url.Values { return url.Values{"path": {p}} }

// Read opens a file for reading. The body streams from the server: close
// it when done.
func (f *Files) Read(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := f.sb.c.newRequest(ctx, "GET", f.sb.path("/files"), pathQuery(path), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := f.sb.c.do(req)
	if err != nil {
		return nil, fmt.Errorf("read %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	return resp.Body, nil
}

// Write stores r's bytes at path, creating parent directories, and
// returns the new file's details. The body is streamed as it is read (no
// copy is held in memory), so r may be as large as the guest's disk.
func (f *Files) Write(ctx context.Context, path string, r io.Reader) (*api.FileInfo, error) {
	// Readers that know how much is left (bytes.Reader, strings.Reader,
	// bytes.Buffer) send a Content-Length; anything else is streamed with
	// chunked encoding.
	size := int64(-1)
	if l, ok := r.(interface{ Len() int }); ok {
		size = int64(l.Len())
	}
	req, err := f.sb.c.newRequest(ctx, "PUT", f.sb.path("/files"), pathQuery(path), io.NopCloser(r))
	if err != nil {
		return nil, err
	}
	if size >= 0 {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := f.sb.c.do(req)
	if err != nil {
		return nil, fmt.Errorf("write %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	defer resp.Body.Close()
	var out api.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("write %s in sandbox %s: decode answer: %w", path, f.sb.ID, err)
	}
	return &out, nil
}

// List returns the entries under a directory, depth levels down (1 is
// the directory's own entries; the server allows up to 10).
func (f *Files) List(ctx context.Context, path string, depth int) ([]api.FileInfo, error) {
	q := pathQuery(path)
	if depth > 0 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out struct {
		Entries []api.FileInfo `json:"entries"`
	}
	if err := f.sb.c.call(ctx, "GET", f.sb.path("/files/list"), q, nil, &out); err != nil {
		return nil, fmt.Errorf("list %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	return out.Entries, nil
}

// Stat returns one entry's details.
func (f *Files) Stat(ctx context.Context, path string) (*api.FileInfo, error) {
	var out api.FileInfo
	if err := f.sb.c.call(ctx, "GET", f.sb.path("/files/stat"), pathQuery(path), nil, &out); err != nil {
		return nil, fmt.Errorf("stat %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	return &out, nil
}

// Exists reports whether path exists.
func (f *Files) Exists(ctx context.Context, path string) (bool, error) {
	_, err := f.Stat(ctx, path)
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// MakeDir creates a directory and its parents.
func (f *Files) MakeDir(ctx context.Context, path string) (*api.FileInfo, error) {
	var out api.FileInfo
	if err := f.sb.c.call(ctx, "POST", f.sb.path("/files/mkdir"), nil, api.MakeDirJSONBody{Path: path}, &out); err != nil {
		return nil, fmt.Errorf("mkdir %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	return &out, nil
}

// Rename moves an entry.
func (f *Files) Rename(ctx context.Context, from, to string) (*api.FileInfo, error) {
	var out api.FileInfo
	if err := f.sb.c.call(ctx, "POST", f.sb.path("/files/move"), nil, api.MoveFileJSONBody{From: from, To: to}, &out); err != nil {
		return nil, fmt.Errorf("move %s to %s in sandbox %s: %w", from, to, f.sb.ID, err)
	}
	return &out, nil
}

// Remove deletes a file or a directory tree.
func (f *Files) Remove(ctx context.Context, path string) error {
	if err := f.sb.c.call(ctx, "DELETE", f.sb.path("/files"), pathQuery(path), nil, nil); err != nil {
		return fmt.Errorf("remove %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	return nil
}

// FileEvent is a change under a watched directory. The last event on a
// watch's channel has Err set when the watch ended for a reason other
// than its context ending.
type FileEvent struct {
	api.FileEvent
	Err error
}

// watchBuffer is how many events may wait for a slow reader before the
// watcher stops reading the socket (and the server then buffers or drops).
const watchBuffer = 64

// Watch streams changes under a directory until ctx ends; the channel is
// closed then (or when the server ends the watch, after an event with Err
// set).
func (f *Files) Watch(ctx context.Context, path string, recursive bool) (<-chan FileEvent, error) {
	q := pathQuery(path)
	if recursive {
		q.Set("recursive", "true")
	}
	conn, err := f.sb.c.dial(ctx, f.sb.path("/files/watch"), q)
	if err != nil {
		return nil, fmt.Errorf("watch %s in sandbox %s: %w", path, f.sb.ID, err)
	}
	ch := make(chan FileEvent, watchBuffer)
	send := func(ev FileEvent) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(ch)
		defer conn.Close(websocket.StatusNormalClosure, "")
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				if ctx.Err() == nil {
					send(FileEvent{Err: fmt.Errorf("watch %s in sandbox %s ended: %w", path, f.sb.ID, err)})
				}
				return
			}
			var raw struct {
				api.FileEvent
				Error json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(b, &raw); err != nil {
				send(FileEvent{Err: fmt.Errorf("watch %s: decode frame: %w", path, err)})
				return
			}
			if raw.Type == "error" {
				send(FileEvent{Err: errorFromFrame(raw.Error)})
				return
			}
			if !send(FileEvent{FileEvent: raw.FileEvent}) {
				return
			}
		}
	}()
	return ch, nil
}
