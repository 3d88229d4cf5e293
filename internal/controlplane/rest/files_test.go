package rest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn/wrenn/api"
)

// randomReader yields n pseudo-random bytes without holding them.
type randomReader struct {
	rnd  *rand.ChaCha8
	left int64
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	_, _ = r.rnd.Read(p)
	r.left -= int64(len(p))
	return len(p), nil
}

func TestFiles(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	key := env.team.Key
	dir := t.TempDir()
	q := func(p string) string { return "?path=" + url.QueryEscape(p) }

	// A 64 MiB upload, streamed from a generator (never in memory whole),
	// comes back byte for byte.
	const size = 64 << 20
	seed := [32]byte{1, 2, 3}
	want := sha256.New()
	_, _ = io.Copy(want, &randomReader{rnd: rand.NewChaCha8(seed), left: size})
	big := dir + "/sub/blob.bin"
	var info api.FileInfo
	resp := env.do(t, "PUT", path+"/files"+q(big), key, io.Reader(&randomReader{rnd: rand.NewChaCha8(seed), left: size}))
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || info.Type != api.File || orZero(info.Size) != size || info.Name != "blob.bin" {
		t.Fatalf("upload answer %+v %v", info, err)
	}
	resp = env.do(t, "GET", path+"/files"+q(big), key, nil)
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("download: status %d, %d bytes, err %v, checksum match %v", resp.StatusCode, n, err, string(got.Sum(nil)) == string(want.Sum(nil)))
	}

	env.doJSON(t, "GET", path+"/files/stat"+q(big), key, nil, http.StatusOK, &info)
	if info.Path != big || orZero(info.Size) != size || info.ModifiedAt == nil {
		t.Errorf("stat: %+v", info)
	}
	env.doJSON(t, "POST", path+"/files/mkdir", key, map[string]any{"path": dir + "/a/b"}, http.StatusCreated, &info)
	if info.Type != api.Dir {
		t.Errorf("mkdir: %+v", info)
	}
	wantError(t, env.do(t, "POST", path+"/files/mkdir", key, map[string]any{"path": dir + "/a/b"}), http.StatusConflict, "already_exists")
	env.doJSON(t, "POST", path+"/files/move", key, map[string]any{"from": big, "to": dir + "/a/moved.bin"}, http.StatusOK, &info)
	if info.Path != dir+"/a/moved.bin" {
		t.Errorf("move: %+v", info)
	}
	var list struct{ Entries []api.FileInfo }
	env.doJSON(t, "GET", path+"/files/list"+q(dir)+"&depth=2", key, nil, http.StatusOK, &list)
	names := map[string]api.FileInfoType{}
	for _, e := range list.Entries {
		names[strings.TrimPrefix(e.Path, dir+"/")] = e.Type
	}
	if names["a"] != api.Dir || names["a/b"] != api.Dir || names["a/moved.bin"] != api.File || names["sub"] != api.Dir {
		t.Errorf("list depth 2: %v", names)
	}
	if resp := env.do(t, "DELETE", path+"/files"+q(dir+"/a"), key, nil); resp.StatusCode != http.StatusNoContent {
		t.Errorf("remove: %d", resp.StatusCode)
	}
	wantError(t, env.do(t, "GET", path+"/files/stat"+q(dir+"/a"), key, nil), http.StatusNotFound, "not_found")
	wantError(t, env.do(t, "GET", path+"/files"+q(dir+"/nope"), key, nil), http.StatusNotFound, "not_found")

	for _, bad := range []struct{ method, path string }{
		{"GET", "/files"}, {"GET", "/files?path="}, {"GET", "/files/list" + q(dir) + "&depth=11"},
		{"GET", "/files/stat"}, {"PUT", "/files"}, {"DELETE", "/files"},
	} {
		wantError(t, env.do(t, bad.method, path+bad.path, key, nil), http.StatusBadRequest, "invalid_argument")
	}
	wantError(t, env.do(t, "POST", path+"/files/mkdir", key, map[string]any{}), http.StatusBadRequest, "invalid_argument")
	wantError(t, env.do(t, "POST", path+"/files/move", key, map[string]any{"from": "x"}), http.StatusBadRequest, "invalid_argument")

	// An upload declaring more than the cap is refused before any byte
	// is read (sent raw: net/http will not send a lying Content-Length).
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.Srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s/files%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		path, q(dir+"/huge"), key, maxUploadBytes+1)
	hresp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Request = &http.Request{Method: "PUT", URL: &url.URL{Path: path + "/files"}}
	wantError(t, hresp, http.StatusRequestEntityTooLarge, "payload_too_large")
}

func TestLimitedBody(t *testing.T) {
	tests := []struct {
		name string
		size int
		over bool
	}{
		{"under", 9, false},
		{"exactly the limit", 10, false},
		{"one byte over", 11, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &limitedBody{r: strings.NewReader(strings.Repeat("x", tt.size)), left: 10}
			b, err := io.ReadAll(l)
			if l.over != tt.over || (err != nil) != tt.over {
				t.Fatalf("over %v err %v, want over %v", l.over, err, tt.over)
			}
			if !tt.over && len(b) != tt.size {
				t.Errorf("read %d bytes, want %d", len(b), tt.size)
			}
		})
	}
}

func TestWatchDir(t *testing.T) {
	env := newSandboxEnv(t)
	env.addHost(t)
	sb := env.create(t, map[string]any{})
	path := "/v1/sandboxes/" + sb.Id
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	wantError(t, env.do(t, "GET", path+"/files/watch?path="+url.QueryEscape(dir), env.team.Key, nil), http.StatusBadRequest, "invalid_argument")
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(env.Srv.URL, "http")+path+"/files/watch?path="+url.QueryEscape(dir+"/missing"),
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + env.team.Key}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("watch of a missing directory: %v, want 404", err)
	}

	c := env.dialWS(t, ctx, path+"/files/watch?recursive=true&path="+url.QueryEscape(dir))
	env.doJSON(t, "POST", path+"/files/mkdir", env.team.Key, map[string]any{"path": dir + "/newdir"}, http.StatusCreated, nil)
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		var ev api.FileEvent
		if typ != websocket.MessageText || json.Unmarshal(b, &ev) != nil {
			t.Fatalf("frame %q", b)
		}
		if ev.Type == api.Create && ev.Name == "newdir" {
			break
		}
	}
}
