package ociimage_test

import (
	"archive/tar"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
	"github.com/wrenn/wrenn/internal/templates/ociimage"
	"github.com/wrenn/wrenn/internal/templates/ocitest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: unpacking chowns files and makes device nodes")
	}
}

func pull(t *testing.T, ref string, o ociimage.PullOptions) *ociimage.Pulled {
	t.Helper()
	if o.CacheDir == "" {
		o.CacheDir = t.TempDir()
	}
	p, err := ociimage.Pull(context.Background(), ref, o)
	if err != nil {
		t.Fatalf("Pull %s: %v", ref, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func unpack(t *testing.T, p *ociimage.Pulled) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	if err := p.Unpack(context.Background(), dir); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return dir
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &st
}

func TestPullUnpackKeepsMetadata(t *testing.T) {
	needRoot(t)
	host := ocitest.StartRegistry(t)
	ref := host + "/app/meta:1"
	mtime := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	layer := ocitest.Layer(t,
		ocitest.Entry{Name: "usr/", Type: tar.TypeDir},
		ocitest.Entry{Name: "usr/bin/", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "usr/bin/suid", Body: "#!/bin/sh\n", Mode: 0o4755, UID: 0, GID: 0},
		ocitest.Entry{Name: "home/app/", Type: tar.TypeDir, Mode: 0o750, UID: 1234, GID: 4321, ModTime: mtime},
		ocitest.Entry{Name: "home/app/data", Body: "hello", Mode: 0o600, UID: 1234, GID: 4321, ModTime: mtime},
		ocitest.Entry{Name: "home/app/link", Type: tar.TypeSymlink, Linkname: "data", UID: 1234, GID: 4321},
		ocitest.Entry{Name: "home/app/hard", Type: tar.TypeLink, Linkname: "home/app/data"},
		ocitest.Entry{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		ocitest.Entry{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o620},
		ocitest.Entry{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
	)
	img := ocitest.Image(t, ocitest.HostPlatform(), v1.Config{
		Env:          []string{"PATH=/usr/bin", "A=b"},
		Cmd:          []string{"python3"},
		WorkingDir:   "/srv",
		User:         "app",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
		Labels:       map[string]string{"k": "v"},
	}, layer)
	digest := ocitest.Push(t, ref, img)

	var lines []string
	p := pull(t, ref, ociimage.PullOptions{Log: func(s string) { lines = append(lines, s) }})
	if p.Digest != digest {
		t.Errorf("Digest = %s, want %s", p.Digest, digest)
	}
	if p.Ref != ref {
		t.Errorf("Ref = %s, want %s", p.Ref, ref)
	}
	c := p.Config
	if strings.Join(c.Env, ",") != "PATH=/usr/bin,A=b" || c.WorkingDir != "/srv" || c.User != "app" || c.Labels["k"] != "v" ||
		len(c.Cmd) != 1 || len(c.ExposedPorts) != 2 || c.ExposedPorts[0] != 53 || c.ExposedPorts[1] != 8080 {
		t.Errorf("Config = %+v", c)
	}
	if len(lines) < 2 || !strings.Contains(lines[0], "1 layers") {
		t.Errorf("log lines = %q", lines)
	}
	dir := unpack(t, p)

	if st := lstat(t, filepath.Join(dir, "usr/bin/suid")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("suid mode = %o", st.Mode&0o7777)
	}
	st := lstat(t, filepath.Join(dir, "home/app/data"))
	if st.Uid != 1234 || st.Gid != 4321 || st.Mode&0o777 != 0o600 {
		t.Errorf("data: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&0o777)
	}
	if got := time.Unix(st.Mtim.Unix()).UTC(); !got.Equal(mtime) {
		t.Errorf("data mtime = %v, want %v", got, mtime)
	}
	if st.Nlink != 2 {
		t.Errorf("data nlink = %d, want 2 (hardlink)", st.Nlink)
	}
	hard := lstat(t, filepath.Join(dir, "home/app/hard"))
	if hard.Ino != st.Ino {
		t.Errorf("hardlink has inode %d, data %d", hard.Ino, st.Ino)
	}
	dst := lstat(t, filepath.Join(dir, "home/app"))
	if dst.Uid != 1234 || dst.Mode&0o777 != 0o750 || !time.Unix(dst.Mtim.Unix()).Equal(mtime) {
		t.Errorf("home/app: uid %d mode %o mtime %v", dst.Uid, dst.Mode&0o777, time.Unix(dst.Mtim.Unix()))
	}
	if target, err := os.Readlink(filepath.Join(dir, "home/app/link")); err != nil || target != "data" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if ls := lstat(t, filepath.Join(dir, "home/app/link")); ls.Uid != 1234 {
		t.Errorf("symlink owner %d, want 1234", ls.Uid)
	}
	dev := lstat(t, filepath.Join(dir, "dev/null"))
	if dev.Mode&syscall.S_IFMT != syscall.S_IFCHR || dev.Rdev != uint64(1<<8|3) || dev.Mode&0o777 != 0o666 {
		t.Errorf("dev/null: mode %o rdev %d", dev.Mode, dev.Rdev)
	}
	if f := lstat(t, filepath.Join(dir, "run/fifo")); f.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Errorf("fifo mode %o", f.Mode)
	}
	if d := lstat(t, filepath.Join(dir, "tmp")); d.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o", d.Mode&0o7777)
	}
}

func TestWhiteouts(t *testing.T) {
	needRoot(t)
	host := ocitest.StartRegistry(t)
	ref := host + "/app/wh:1"
	l1 := ocitest.Layer(t,
		ocitest.Entry{Name: "a/", Type: tar.TypeDir},
		ocitest.Entry{Name: "a/gone", Body: "1"},
		ocitest.Entry{Name: "a/kept", Body: "1"},
		ocitest.Entry{Name: "a/sub/", Type: tar.TypeDir},
		ocitest.Entry{Name: "a/sub/deep", Body: "1"},
		ocitest.Entry{Name: "o/", Type: tar.TypeDir},
		ocitest.Entry{Name: "o/x", Body: "1"},
		ocitest.Entry{Name: "o/y/", Type: tar.TypeDir},
		ocitest.Entry{Name: "o/y/z", Body: "1"},
		ocitest.Entry{Name: "back", Body: "old"},
	)
	l2 := ocitest.Layer(t,
		ocitest.Whiteout("a/gone"),
		ocitest.Whiteout("a/sub"),
		// o/new comes before the opaque marker in the same layer: the
		// marker hides lower layers only, so it must survive.
		ocitest.Entry{Name: "o/new", Body: "2"},
		// o/y/mine is written without its directory: o/y must stay for
		// it, but o/y/z of the lower layer must go.
		ocitest.Entry{Name: "o/y/mine", Body: "2"},
		ocitest.Opaque("o"),
		ocitest.Whiteout("back"),
	)
	l3 := ocitest.Layer(t, ocitest.Entry{Name: "back", Body: "new"}, ocitest.Entry{Name: "a/sub/again", Body: "3"})
	ocitest.PushImage(t, ref, l1, l2, l3)
	p := pull(t, ref, ociimage.PullOptions{})
	if len(p.Layers) != 3 {
		t.Fatalf("%d layers", len(p.Layers))
	}
	dir := unpack(t, p)
	for _, gone := range []string{"a/gone", "a/sub/deep", "o/x", "o/y/z", "a/.wh.gone", "o/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it gone", gone, err)
		}
	}
	if got := readFile(t, filepath.Join(dir, "a/kept")); got != "1" {
		t.Errorf("a/kept = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "o/y/mine")); got != "2" {
		t.Errorf("o/y/mine = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "o/new")); got != "2" {
		t.Errorf("o/new = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "back")); got != "new" {
		t.Errorf("back (re-added after whiteout) = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "a/sub/again")); got != "3" {
		t.Errorf("a/sub/again = %q", got)
	}
}

func TestHostileLayersStayInside(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []ocitest.Entry
		refused bool
		// inside is where the write lands, sanitized, when not refused.
		inside string
	}{
		{name: "dotdot", entries: []ocitest.Entry{{Name: "../../../../../../" + outside + "/pwned", Body: "x"}}, refused: true},
		{name: "dotdot-middle", entries: []ocitest.Entry{{Name: "a/../../pwned", Body: "x"}}, refused: true},
		{name: "hardlink-out", entries: []ocitest.Entry{{Name: "h", Type: tar.TypeLink, Linkname: "../../../../etc/passwd"}}, refused: true},
		{name: "absolute-symlink-parent", entries: []ocitest.Entry{
			{Name: "evil", Type: tar.TypeSymlink, Linkname: outside},
			{Name: "evil/pwned", Body: "x"},
		}, inside: outside + "/pwned"},
		{name: "relative-symlink-parent", entries: []ocitest.Entry{
			{Name: "d/", Type: tar.TypeDir},
			{Name: "d/evil", Type: tar.TypeSymlink, Linkname: "../../../../../../../.." + outside},
			{Name: "d/evil/pwned", Body: "x"},
		}, inside: outside + "/pwned"},
		{name: "absolute-name", entries: []ocitest.Entry{{Name: outside + "/pwned", Body: "x"}}, inside: outside + "/pwned"},
		{name: "symlink-then-overwrite", entries: []ocitest.Entry{
			{Name: "f", Type: tar.TypeSymlink, Linkname: outside + "/pwned"},
			{Name: "f", Body: "x"},
		}, inside: "f"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := ociimage.ApplyLayer(context.Background(), dir, strings.NewReader(string(ocitest.Tar(t, tc.entries...))))
			if tc.refused {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Errorf("err = %v, want InvalidArgument", err)
				}
			} else if err != nil {
				t.Errorf("err = %v", err)
			}
			if _, err := os.Lstat(filepath.Join(outside, "pwned")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a file was written outside the root: %v", err)
			}
			if tc.inside != "" {
				if got := readFile(t, filepath.Join(dir, tc.inside)); got != "x" {
					t.Errorf("sanitized write at %s = %q", tc.inside, got)
				}
			}
		})
	}
}

func TestIndexPicksHostPlatform(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/multi/app:1"
	ocitest.PushIndex(t, ref, []v1.Platform{
		{OS: "linux", Architecture: "arm64"},
		ocitest.HostPlatform(),
		{OS: "linux", Architecture: "s390x"},
	}, ocitest.FilesLayer(t, map[string]string{"f": "x"}))
	p := pull(t, ref, ociimage.PullOptions{})
	want := ocitest.HostPlatform().OS + "/" + ocitest.HostPlatform().Architecture
	if p.Platform != want || p.Config.Labels["platform"] != want {
		t.Errorf("picked %s (label %s), want %s", p.Platform, p.Config.Labels["platform"], want)
	}
	if p.IndexDigest == "" || p.IndexDigest == p.Digest {
		t.Errorf("IndexDigest %q, Digest %q", p.IndexDigest, p.Digest)
	}
}

func TestOtherPlatformOnlyRefused(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/multi/armonly:1"
	ocitest.PushIndex(t, ref, []v1.Platform{{OS: "linux", Architecture: "arm64"}}, ocitest.FilesLayer(t, map[string]string{"f": "x"}))
	_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: t.TempDir(), Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "linux/arm64 only") {
		t.Fatalf("err = %v, want InvalidArgument naming linux/arm64", err)
	}
	// A single-manifest image of another architecture is refused the same way.
	ref2 := host + "/single/arm:1"
	ocitest.Push(t, ref2, ocitest.Image(t, v1.Platform{OS: "linux", Architecture: "arm64"}, v1.Config{}, ocitest.FilesLayer(t, map[string]string{"f": "x"})))
	_, err = ociimage.Pull(context.Background(), ref2, ociimage.PullOptions{CacheDir: t.TempDir(), Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "linux/arm64") {
		t.Fatalf("single manifest: err = %v, want InvalidArgument naming linux/arm64", err)
	}
}

func TestMissingImageNotFound(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ocitest.PushImage(t, host+"/there/app:1", ocitest.FilesLayer(t, map[string]string{"f": "x"}))
	for _, ref := range []string{host + "/there/app:2", host + "/nothere/app:1"} {
		_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: t.TempDir()})
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "image "+ref+" not found") {
			t.Errorf("%s: err = %v, want NotFound naming the image", ref, err)
		}
	}
}

func TestBadReference(t *testing.T) {
	_, err := ociimage.Pull(context.Background(), "UPPER/Case::bad", ociimage.PullOptions{CacheDir: t.TempDir()})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

func TestCredentials(t *testing.T) {
	const secret = "correct-horse-battery"
	reg := ocitest.StartAuthRegistry(t, "alice", secret)
	ref := reg.Host + "/private/app:1"
	reg.Push(t, ref, ocitest.Image(t, ocitest.HostPlatform(), v1.Config{}, ocitest.FilesLayer(t, map[string]string{"f": "x"})))

	const wrong = "wrong-password-zebra"
	_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{
		CacheDir: t.TempDir(),
		Auth:     map[string]ociimage.Credential{reg.Host: {Username: "alice", Password: wrong}},
	})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "refused credentials") {
		t.Fatalf("wrong password: err = %v, want PermissionDenied", err)
	}
	t.Logf("wrong password: %v", err)
	if strings.Contains(err.Error(), wrong) {
		t.Fatalf("the error shows the secret: %v", err)
	}
	_, err = ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: t.TempDir()})
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("anonymous: err = %v, want PermissionDenied", err)
	}
	p := pull(t, ref, ociimage.PullOptions{Auth: map[string]ociimage.Credential{reg.Host: {Username: "alice", Password: secret}}})
	if len(p.Layers) != 1 {
		t.Fatalf("%d layers", len(p.Layers))
	}
	if s := (ociimage.Credential{Username: "alice", Password: secret}).String(); strings.Contains(s, secret) {
		t.Fatalf("Credential.String shows the password: %s", s)
	}
}

func TestSizeCap(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/big/app:1"
	ocitest.PushImage(t, ref, ocitest.FilesLayer(t, map[string]string{"f": strings.Repeat("x", 4096)}))
	_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: t.TempDir(), MaxBytes: 10})
	if !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("err = %v, want TooLarge", err)
	}
}

func TestUnreachableRegistry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = ociimage.Pull(context.Background(), addr+"/x/y:1", ociimage.PullOptions{CacheDir: t.TempDir()})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	t.Logf("unreachable: %v", err)
}

func TestPlainHTTPOnlyWhenAllowed(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/plain/app:1"
	ocitest.PushImage(t, ref, ocitest.FilesLayer(t, map[string]string{"f": "x"}))
	_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{
		CacheDir: t.TempDir(),
		Insecure: func(string) bool { return false },
	})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "plain HTTP") {
		t.Fatalf("err = %v, want InvalidArgument refusing plain HTTP", err)
	}
	if !ociimage.IsLoopbackRegistry("127.0.0.1:5000") || !ociimage.IsLoopbackRegistry("localhost") || !ociimage.IsLoopbackRegistry("[::1]:80") ||
		ociimage.IsLoopbackRegistry("10.0.0.1:5000") || ociimage.IsLoopbackRegistry("example.com") {
		t.Error("IsLoopbackRegistry misclassifies")
	}
}

// cancelOnBlob cancels a context when the first layer download starts and
// lets the response through, so the cancellation lands mid-pull.
type cancelOnBlob struct {
	cancel func()
	once   sync.Once
	hit    atomic.Bool
}

func (c *cancelOnBlob) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if strings.Contains(req.URL.Path, "/blobs/") && req.Method == http.MethodGet {
		c.once.Do(func() { c.hit.Store(true); c.cancel() })
	}
	return resp, err
}

func TestCancellation(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/slow/app:1"
	ocitest.PushImage(t, ref, ocitest.FilesLayer(t, map[string]string{"f": strings.Repeat("y", 1<<20)}))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ociimage.Pull(ctx, ref, ociimage.PullOptions{CacheDir: t.TempDir()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled before: err = %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	tr := &cancelOnBlob{cancel: cancel}
	cache := t.TempDir()
	_, err := ociimage.Pull(ctx, ref, ociimage.PullOptions{CacheDir: cache, Transport: tr})
	if !tr.hit.Load() {
		t.Fatal("no blob was requested")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled mid-pull: err = %v, want context.Canceled", err)
	}
	blobs, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", "*"))
	for _, b := range blobs {
		if !strings.HasSuffix(b, ".lock") {
			t.Errorf("cancelled pull left %s in the cache", b)
		}
	}
}

func TestLayerCache(t *testing.T) {
	reg := ocitest.StartRegistryServer(t)
	ref := reg.Host + "/cache/app:1"
	ocitest.PushImage(t, ref,
		ocitest.FilesLayer(t, map[string]string{"a": "1"}),
		ocitest.FilesLayer(t, map[string]string{"b": "2"}))
	cache := t.TempDir()

	before := reg.BlobGets()
	p1 := pull(t, ref, ociimage.PullOptions{CacheDir: cache})
	first := reg.BlobGets() - before
	for _, l := range p1.Layers {
		if l.Cached {
			t.Errorf("first pull: layer %s marked cached", l.Digest)
		}
	}

	// Two concurrent pulls on a warm cache: no layer fetched again.
	before = reg.BlobGets()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	pulled := make([]*ociimage.Pulled, 2)
	for i := range 2 {
		wg.Go(func() {
			pulled[i], errs[i] = ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: cache})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		for _, l := range pulled[i].Layers {
			if !l.Cached {
				t.Errorf("warm pull %d: layer %s not from cache", i, l.Digest)
			}
		}
	}
	second := reg.BlobGets() - before
	// Each pull still fetches the config blob; layers come from the cache.
	if first != 3 || second != 2 {
		t.Errorf("blob GETs: first pull %d (want 2 layers + config), two warm pulls %d (want 2 configs)", first, second)
	}

	// Two concurrent pulls on a cold cache: each layer downloaded once.
	cold := t.TempDir()
	before = reg.BlobGets()
	for i := range 2 {
		wg.Go(func() {
			pulled[i], errs[i] = ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: cold})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("cold pull %d: %v", i, err)
		}
	}
	if got := reg.BlobGets() - before; got != 4 {
		t.Errorf("two cold concurrent pulls: %d blob GETs, want 2 layers once + 2 configs", got)
	}

	// A corrupted cache entry is detected by its digest and fetched again.
	if err := os.WriteFile(p1.Layers[0].Path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = reg.BlobGets()
	p3 := pull(t, ref, ociimage.PullOptions{CacheDir: cache})
	if got := reg.BlobGets() - before; got != 2 || p3.Layers[0].Cached || !p3.Layers[1].Cached {
		t.Errorf("after corruption: %d blob GETs (want config + 1 layer), cached %v/%v", got, p3.Layers[0].Cached, p3.Layers[1].Cached)
	}
}

func TestPrivateCacheRemovedOnClose(t *testing.T) {
	host := ocitest.StartRegistry(t)
	ref := host + "/tmp/app:1"
	ocitest.PushImage(t, ref, ocitest.FilesLayer(t, map[string]string{"a": "1"}))
	p, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := p.Layers[0].Path
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("layer blob: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("private cache survived Close: %v", err)
	}
}

func TestFileCapabilitiesKept(t *testing.T) {
	needRoot(t)
	// VFS_CAP_REVISION_2 with the effective flag, permitted CAP_NET_RAW (13).
	capv := string([]byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	dir := t.TempDir()
	tarb := ocitest.Tar(t, ocitest.Entry{Name: "bin/ping", Body: "x", Mode: 0o755, UID: 0, GID: 0,
		Xattrs: map[string]string{"security.capability": capv}})
	if err := ociimage.ApplyLayer(context.Background(), dir, strings.NewReader(string(tarb))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(dir, "bin/ping"), "security.capability", buf)
	if errors.Is(err, unix.ENOTSUP) {
		t.Skipf("the filesystem of %s has no xattrs: %v", dir, err)
	}
	if err != nil || string(buf[:n]) != capv {
		t.Fatalf("security.capability = %x, %v; want %x", buf[:max(n, 0)], err, capv)
	}
}

func TestUnpackedSizeCap(t *testing.T) {
	needRoot(t)
	host := ocitest.StartRegistry(t)
	ref := host + "/bomb/app:1"
	// 3 MiB of zeros compress to a few KiB: under MaxBytes, over the
	// unpacked cap.
	ocitest.PushImage(t, ref,
		ocitest.FilesLayer(t, map[string]string{"a": strings.Repeat("\x00", 2<<20)}),
		ocitest.FilesLayer(t, map[string]string{"b": strings.Repeat("\x00", 1<<20)}))
	p := pull(t, ref, ociimage.PullOptions{MaxUnpackedBytes: 5 << 19})
	err := p.Unpack(context.Background(), t.TempDir())
	if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), "layer 2/2") {
		t.Fatalf("err = %v, want TooLarge in layer 2", err)
	}
	p = pull(t, ref, ociimage.PullOptions{MaxUnpackedBytes: 3 << 20})
	if err := p.Unpack(context.Background(), t.TempDir()); err != nil {
		t.Fatalf("exactly at the cap: %v", err)
	}
}

func TestBearerTokenRegistry(t *testing.T) {
	const secret = "hunter2-but-longer"
	reg := ocitest.StartTokenRegistry(t, "bob", secret)
	ref := reg.Host + "/private/tok:1"
	reg.Push(t, ref, ocitest.Image(t, ocitest.HostPlatform(), v1.Config{}, ocitest.FilesLayer(t, map[string]string{"f": "x"})))

	// Username and password, exchanged at the token endpoint.
	p := pull(t, ref, ociimage.PullOptions{Auth: map[string]ociimage.Credential{reg.Host: {Username: "bob", Password: secret}}})
	if len(p.Layers) != 1 {
		t.Fatalf("%d layers", len(p.Layers))
	}
	// A registry token used as is.
	pull(t, ref, ociimage.PullOptions{Auth: map[string]ociimage.Credential{reg.Host: {Token: reg.Token}}})

	for name, c := range map[string]ociimage.Credential{
		"wrong password": {Username: "bob", Password: "not-the-password"},
		"wrong token":    {Token: "not-the-token-at-all"},
	} {
		_, err := ociimage.Pull(context.Background(), ref, ociimage.PullOptions{CacheDir: t.TempDir(), Auth: map[string]ociimage.Credential{reg.Host: c}})
		if !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("%s: err = %v, want PermissionDenied", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
		if strings.Contains(err.Error(), c.Password+c.Token) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
}
