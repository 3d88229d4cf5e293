package files

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/envd/defaults"
	"github.com/wrenn/wrenn/internal/envd/envdhttp"
)

func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	srv := httptest.NewServer(NewHandler(slog.New(slog.DiscardHandler), defaults.New(me.Username, "")))
	t.Cleanup(srv.Close)
	return srv
}

func filesURL(srv *httptest.Server, q url.Values) string {
	return srv.URL + "/files?" + q.Encode()
}

// wantError checks an error response's status and E2B-shaped body.
func wantError(t *testing.T, res *http.Response, status int, kind string) {
	t.Helper()
	defer res.Body.Close()
	if res.StatusCode != status {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status = %d (%s), want %d", res.StatusCode, b, status)
	}
	var body envdhttp.ErrorBody
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("decode error body: %v", err)
	}
	if body.Code != status || body.Kind != kind || body.Message == "" {
		t.Fatalf("error body = %+v, want code %d kind %s", body, status, kind)
	}
}

func get(t *testing.T, u string, header http.Header) *http.Response {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		r.Header[k] = v
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func basic(name string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"))}}
}

func TestDownload(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "hello world.txt")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("whole file", func(t *testing.T) {
		res := get(t, filesURL(srv, url.Values{"path": {p}}), nil)
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(b) != "0123456789" {
			t.Fatalf("got %d %q", res.StatusCode, b)
		}
		for k, want := range map[string]string{
			"Content-Type":        "application/octet-stream",
			"Content-Length":      "10",
			"Content-Disposition": `attachment; filename="hello world.txt"`,
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
	})
	t.Run("range", func(t *testing.T) {
		res := get(t, filesURL(srv, url.Values{"path": {p}}), http.Header{"Range": {"bytes=2-4"}})
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusPartialContent || string(b) != "234" {
			t.Fatalf("got %d %q", res.StatusCode, b)
		}
	})
	t.Run("username query wins over Authorization", func(t *testing.T) {
		me, _ := user.Current()
		res := get(t, filesURL(srv, url.Values{"path": {p}, "username": {me.Username}}), basic("no-such-user-xyz"))
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d", res.StatusCode)
		}
	})

	errs := []struct {
		name   string
		q      url.Values
		header http.Header
		status int
		kind   string
	}{
		{"directory", url.Values{"path": {dir}}, nil, 400, "invalid_argument"},
		{"missing", url.Values{"path": {filepath.Join(dir, "nope")}}, nil, 404, "not_found"},
		{"no path", url.Values{}, nil, 400, "invalid_argument"},
		{"unknown user in query", url.Values{"path": {p}, "username": {"no-such-user-xyz"}}, nil, 400, "invalid_argument"},
		{"unknown user in header", url.Values{"path": {p}}, basic("no-such-user-xyz"), 400, "invalid_argument"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, get(t, filesURL(srv, tc.q), tc.header), tc.status, tc.kind)
		})
	}
}

func TestDownloadPermissionDenied(t *testing.T) {
	srv := newServer(t)
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"path": {p}}
	if os.Geteuid() == 0 {
		// root may read anything; envd must still refuse other users.
		q.Set("username", "nobody")
	} else if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	wantError(t, get(t, filesURL(srv, q), nil), http.StatusForbidden, "permission_denied")
}

func TestMethodNotAllowed(t *testing.T) {
	srv := newServer(t)
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch} {
		r, _ := http.NewRequest(m, srv.URL+"/files?path=/tmp/x", nil)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		if res.Header.Get("Allow") != "GET, POST" {
			t.Errorf("%s: Allow = %q", m, res.Header.Get("Allow"))
		}
		wantError(t, res, http.StatusMethodNotAllowed, "invalid_argument")
	}
}

// part is one multipart part for multipartBody.
type part struct{ field, filename, content string }

func multipartBody(t *testing.T, parts ...part) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename == "" {
			w, err = mw.CreateFormField(p.field)
		} else {
			w, err = mw.CreateFormFile(p.field, p.filename)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, p.content)
	}
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

func post(t *testing.T, u, contentType string, body io.Reader, header http.Header) *http.Response {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, u, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", contentType)
	for k, v := range header {
		r.Header[k] = v
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func decodeUploaded(t *testing.T, res *http.Response) []uploaded {
	t.Helper()
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status = %d: %s", res.StatusCode, b)
	}
	var out []uploaded
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func wantContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Fatalf("%s = %q, %v; want %q", p, b, err, want)
	}
}

// noLeftovers fails if a temporary upload file was left in dir.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if strings.Contains(de.Name(), ".upload-") {
			t.Fatalf("temporary file %s left behind", de.Name())
		}
	}
}

func TestUpload(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()

	t.Run("raw body", func(t *testing.T) {
		p := filepath.Join(dir, "raw", "deep", "f.bin")
		out := decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", strings.NewReader("raw!"), nil))
		if len(out) != 1 || out[0] != (uploaded{Path: p, Name: "f.bin", Type: "file"}) {
			t.Fatalf("response = %+v", out)
		}
		wantContent(t, p, "raw!")
		noLeftovers(t, filepath.Dir(p))
	})
	t.Run("gzip raw body", func(t *testing.T) {
		p := filepath.Join(dir, "gz.txt")
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write([]byte("unzipped"))
		_ = zw.Close()
		decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", &buf, http.Header{"Content-Encoding": {"gzip"}}))
		wantContent(t, p, "unzipped")
	})
	t.Run("multipart to path", func(t *testing.T) {
		p := filepath.Join(dir, "mp.txt")
		body, ct := multipartBody(t, part{"other", "", "ignored"}, part{"file", "whatever.txt", "multi"})
		out := decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), ct, body, nil))
		if len(out) != 1 || out[0].Path != p {
			t.Fatalf("response = %+v", out)
		}
		wantContent(t, p, "multi")
	})
	t.Run("multipart files named by filename", func(t *testing.T) {
		a, b := filepath.Join(dir, "many", "a.txt"), filepath.Join(dir, "many", "sub", "b.txt")
		body, ct := multipartBody(t, part{"file", a, "A"}, part{"file", b, "B"})
		out := decodeUploaded(t, post(t, filesURL(srv, url.Values{}), ct, body, nil))
		if len(out) != 2 || out[0].Path != a || out[1].Path != b || out[1].Name != "b.txt" {
			t.Fatalf("response = %+v", out)
		}
		wantContent(t, a, "A")
		wantContent(t, b, "B")
	})
	t.Run("overwrite keeps permissions", func(t *testing.T) {
		p := filepath.Join(dir, "exec.sh")
		if err := os.WriteFile(p, []byte("old"), 0o750); err != nil {
			t.Fatal(err)
		}
		decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", strings.NewReader("new"), nil))
		wantContent(t, p, "new")
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o750 {
			t.Fatalf("mode = %v, want 0750", fi.Mode())
		}
	})
	t.Run("new file is 0644", func(t *testing.T) {
		p := filepath.Join(dir, "fresh")
		decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", strings.NewReader("x"), nil))
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
			t.Fatalf("mode = %v, want 0644", fi.Mode())
		}
	})

	if err := os.WriteFile(filepath.Join(dir, "plain"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	errs := []struct {
		name        string
		q           url.Values
		contentType string
		parts       []part // when set, the body is multipart
		raw         string
	}{
		{"raw without path", url.Values{}, "application/octet-stream", nil, "x"},
		{"raw onto directory", url.Values{"path": {dir}}, "application/octet-stream", nil, "x"},
		{"raw below a file", url.Values{"path": {filepath.Join(dir, "plain", "x")}}, "application/octet-stream", nil, "x"},
		{"multipart onto directory", url.Values{"path": {dir}}, "", []part{{"file", "f", "x"}}, ""},
		{"multipart without path or filename", url.Values{}, "", []part{{"file", "", "x"}}, ""},
		{"multipart without file part", url.Values{"path": {filepath.Join(dir, "n")}}, "", []part{{"other", "", "x"}}, ""},
		{"two parts to one path", url.Values{"path": {filepath.Join(dir, "dup")}}, "", []part{{"file", "a", "1"}, {"file", "b", "2"}}, ""},
		{"unsupported content type", url.Values{"path": {filepath.Join(dir, "t")}}, "text/plain", nil, "x"},
		{"no content type", url.Values{"path": {filepath.Join(dir, "t")}}, "", nil, "x"},
		{"broken multipart", url.Values{"path": {filepath.Join(dir, "t")}}, "multipart/form-data; boundary=zzz", nil, "--zzz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ntruncated"},
		{"unknown user", url.Values{"path": {filepath.Join(dir, "t")}, "username": {"no-such-user-xyz"}}, "application/octet-stream", nil, "x"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := io.Reader(strings.NewReader(tc.raw)), tc.contentType
			if tc.parts != nil {
				body, ct = multipartBody(t, tc.parts...)
			}
			wantError(t, post(t, filesURL(srv, tc.q), ct, body, nil), http.StatusBadRequest, "invalid_argument")
			noLeftovers(t, dir)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "t")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed upload left a file behind: %v", err)
	}
}

// TestUploadIsAtomic holds an upload open half-way and checks that the
// destination name does not exist until the body is complete.
func TestUploadIsAtomic(t *testing.T) {
	srv := newServer(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "big")
	pr, pw := io.Pipe()
	done := make(chan *http.Response, 1)
	go func() {
		r, _ := http.NewRequest(http.MethodPost, filesURL(srv, url.Values{"path": {p}}), pr)
		r.Header.Set("Content-Type", "application/octet-stream")
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			done <- nil
			return
		}
		done <- res
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("a"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	// Wait for the temporary file to hold data, which shows the server is
	// mid-upload.
	deadline := time.Now().Add(10 * time.Second)
	for {
		matches, _ := filepath.Glob(filepath.Join(dir, ".big.upload-*"))
		if len(matches) == 1 {
			if fi, err := os.Stat(matches[0]); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no partly written temporary file within 10s")
		}
		<-time.After(10 * time.Millisecond)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("destination visible mid-upload: %v", err)
	}
	_, _ = pw.Write([]byte("end"))
	_ = pw.Close()
	res := <-done
	if res == nil {
		t.Fatal("upload request failed")
	}
	decodeUploaded(t, res)
	if fi, err := os.Stat(p); err != nil || fi.Size() != 1<<20+3 {
		t.Fatalf("stat after upload: %v %v", fi, err)
	}
	noLeftovers(t, dir)
}

func TestUploadOwnershipAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown to another user is only possible as root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("needs a \"nobody\" account: " + err.Error())
	}
	srv := newServer(t)
	dir := t.TempDir()

	// nobody may not create files in a root-owned 0755 directory.
	wantError(t, post(t, filesURL(srv, url.Values{"path": {filepath.Join(dir, "x")}, "username": {"nobody"}}),
		"application/octet-stream", strings.NewReader("x"), nil), http.StatusForbidden, "permission_denied")

	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "n1", "n2", "f")
	decodeUploaded(t, post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", strings.NewReader("x"), basic("nobody")))
	for _, q := range []string{filepath.Join(dir, "n1"), filepath.Join(dir, "n1", "n2"), p} {
		fi, err := os.Stat(q)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fmt.Sprint(st.Uid) != nobody.Uid || fmt.Sprint(st.Gid) != nobody.Gid {
			t.Errorf("%s owned by %d:%d, want %s:%s", q, st.Uid, st.Gid, nobody.Uid, nobody.Gid)
		}
	}
	// A root-only file may not be overwritten by nobody.
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantError(t, post(t, filesURL(srv, url.Values{"path": {secret}, "username": {"nobody"}}),
		"application/octet-stream", strings.NewReader("x"), nil), http.StatusForbidden, "permission_denied")
	wantContent(t, secret, "s")
}

func TestUploadDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a 1 MiB tmpfs to fill")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v)", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	srv := newServer(t)
	p := filepath.Join(dir, "too-big")
	res := post(t, filesURL(srv, url.Values{"path": {p}}), "application/octet-stream", bytes.NewReader(make([]byte, 4<<20)), nil)
	wantError(t, res, http.StatusInsufficientStorage, "resource_exhausted")
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial file visible after ENOSPC: %v", err)
	}
	noLeftovers(t, dir)
}

// noise yields n pseudo-random bytes without holding them. ChaCha8's
// block function is assembly, so generation stays fast under -race.
type noise struct {
	src  *rand.ChaCha8
	left int64
}

func newNoise(n int64) *noise {
	return &noise{src: rand.NewChaCha8([32]byte{'w', 'r', 'e', 'n', 'n'}), left: n}
}

func (n *noise) Read(p []byte) (int, error) {
	if n.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > n.left {
		p = p[:n.left]
	}
	_, _ = n.src.Read(p)
	n.left -= int64(len(p))
	return len(p), nil
}

// TestLargeStreamingRoundTrip uploads 1 GiB through a multipart body that
// is generated on the fly, checks the heap stays flat, and downloads it
// again comparing SHA-256.
func TestLargeStreamingRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 1 GiB upload")
	}
	const size = 1 << 30
	dir := t.TempDir()
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err == nil && sfs.Bavail*uint64(sfs.Bsize) < 2*size {
		t.Skipf("needs 2 GiB free in %s for the 1 GiB upload", dir)
	}
	srv := newServer(t)
	p := filepath.Join(dir, "huge.bin")

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseInuse, baseSys := ms.HeapInuse, ms.HeapSys

	stopSampling := make(chan struct{})
	peak := make(chan [2]uint64, 1)
	go func() {
		var maxInuse, maxSys uint64
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			maxInuse, maxSys = max(maxInuse, m.HeapInuse), max(maxSys, m.HeapSys)
			select {
			case <-stopSampling:
				peak <- [2]uint64{maxInuse, maxSys}
				return
			case <-tick.C:
			}
		}
	}()

	sum := sha256.New()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, err := mw.CreateFormFile("file", "huge.bin")
		if err == nil {
			_, err = io.Copy(io.MultiWriter(w, sum), newNoise(size))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	start := time.Now()
	res := post(t, filesURL(srv, url.Values{"path": {p}}), mw.FormDataContentType(), pr, nil)
	decodeUploaded(t, res)
	upload := time.Since(start)
	close(stopSampling)
	pk := <-peak
	const limit = 64 << 20
	t.Logf("1 GiB upload in %v; HeapInuse %d -> peak %d MiB, HeapSys %d -> peak %d MiB",
		upload.Round(time.Millisecond), baseInuse>>20, pk[0]>>20, baseSys>>20, pk[1]>>20)
	if pk[0] > baseInuse+limit || pk[1] > baseSys+limit {
		t.Fatalf("heap grew by more than %d MiB during the upload", limit>>20)
	}
	want := fmt.Sprintf("%x", sum.Sum(nil))

	fi, err := os.Stat(p)
	if err != nil || fi.Size() != size {
		t.Fatalf("stored file: %v, %v", fi, err)
	}
	start = time.Now()
	dl := get(t, filesURL(srv, url.Values{"path": {p}}), nil)
	defer dl.Body.Close()
	if dl.StatusCode != http.StatusOK || dl.ContentLength != size {
		t.Fatalf("download status %d, length %d", dl.StatusCode, dl.ContentLength)
	}
	got := sha256.New()
	if _, err := io.Copy(got, dl.Body); err != nil {
		t.Fatal(err)
	}
	t.Logf("1 GiB download in %v", time.Since(start).Round(time.Millisecond))
	if g := fmt.Sprintf("%x", got.Sum(nil)); g != want {
		t.Fatalf("downloaded sha256 %s, uploaded %s", g, want)
	}
}
