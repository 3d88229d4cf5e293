// Package ocitest runs a real OCI registry (go-containerregistry's
// pkg/registry) on loopback and builds and pushes images to it, so tests of
// the template builder never pull from the internet.
package ocitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is a registry served on 127.0.0.1 for one test.
type Registry struct {
	// Host is "127.0.0.1:<port>", the registry part of image references.
	Host string
	// Username and Password are set for a registry made by
	// StartAuthRegistry; pushes through this package use them.
	Username, Password string
	// Token is the bearer token a registry made by StartTokenRegistry
	// hands out for Username:Password and then requires.
	Token        string
	blobGets     atomic.Int64
	manifestGets atomic.Int64
}

// BlobGets counts GET requests for blobs (layers and configs) so far.
func (r *Registry) BlobGets() int64 { return r.blobGets.Load() }

// ManifestGets counts GET requests for manifests so far.
func (r *Registry) ManifestGets() int64 { return r.manifestGets.Load() }

// StartRegistry starts an anonymous registry on 127.0.0.1:0, stopped when
// the test ends, and returns its host:port.
func StartRegistry(t testing.TB) string { return StartRegistryServer(t).Host }

// StartRegistryServer is StartRegistry returning the Registry, whose request
// counters tests use to see cache hits.
func StartRegistryServer(t testing.TB) *Registry { return start(t, "", "") }

// StartAuthRegistry starts a registry that answers 401 to any request
// without HTTP basic credentials user:password (a stand-in for a private
// registry; real ones exchange them for a bearer token first).
func StartAuthRegistry(t testing.TB, user, password string) *Registry {
	return start(t, user, password)
}

// StartTokenRegistry starts a registry that works like Docker Hub or GHCR:
// requests without "Authorization: Bearer <Token>" get a 401 whose Bearer
// challenge points at its own /token endpoint, which trades
// user:password (HTTP basic) for Token.
func StartTokenRegistry(t testing.TB, user, password string) *Registry {
	t.Helper()
	r := &Registry{Username: user, Password: password, Token: "ocitest-token-" + fmt.Sprint(time.Now().UnixNano())}
	return r.serve(t, true)
}

func start(t testing.TB, user, password string) *Registry {
	t.Helper()
	r := &Registry{Username: user, Password: password}
	return r.serve(t, false)
}

func (r *Registry) serve(t testing.TB, bearer bool) *Registry {
	t.Helper()
	user, password := r.Username, r.Password
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if bearer {
			if req.URL.Path == "/token" {
				u, p, ok := req.BasicAuth()
				if !ok || u != user || p != password {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, r.Token, r.Token)
				return
			}
			if req.Header.Get("Authorization") != "Bearer "+r.Token {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="ocitest"`, req.Host))
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		} else if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="ocitest"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		if req.Method == http.MethodGet {
			switch {
			case strings.Contains(req.URL.Path, "/blobs/sha256:"):
				r.blobGets.Add(1)
			case strings.Contains(req.URL.Path, "/manifests/"):
				r.manifestGets.Add(1)
			}
		}
		reg.ServeHTTP(w, req)
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Entry is one tar entry of a test layer. The zero Type is a regular file.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Body     string
	Mode     int64 // permission bits incl. setuid; 0 means 0644 (files) or 0755 (dirs)
	UID, GID int
	Linkname string
	ModTime  time.Time // zero means 2024-01-02 03:04:05 UTC
	Devmajor int64
	Devminor int64
	// Xattrs become SCHILY.xattr.<name> PAX records (regular files).
	Xattrs map[string]string
}

// Whiteout is the entry that deletes path of lower layers.
func Whiteout(path string) Entry {
	dir, base := filepath.Split(path)
	return Entry{Name: dir + ".wh." + base}
}

// Opaque is the entry that hides everything lower layers put in dir.
func Opaque(dir string) Entry {
	return Entry{Name: strings.TrimSuffix(dir, "/") + "/.wh..wh..opq"}
}

var defaultTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Tar returns the uncompressed tar of entries, in order. Names are written
// as given (".." included: hostile layers are a use).
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Linkname, ModTime: e.ModTime, Devmajor: e.Devmajor, Devminor: e.Devminor,
			Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		for k, v := range e.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if h.ModTime.IsZero() {
			h.ModTime = defaultTime
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("ocitest: tar header %s: %v", e.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatalf("ocitest: tar body %s: %v", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("ocitest: close tar: %v", err)
	}
	return buf.Bytes()
}

// Layer makes a gzip layer of entries, in order.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return TarLayer(t, Tar(t, entries...))
}

// TarLayer makes a gzip layer of an uncompressed tar.
func TarLayer(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	})
	if err != nil {
		t.Fatalf("ocitest: layer: %v", err)
	}
	return l
}

// FilesLayer makes a layer of regular files (0644, root) from path → content,
// in path order.
func FilesLayer(t testing.TB, files map[string]string) v1.Layer {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]Entry, 0, len(names))
	for _, n := range names {
		entries = append(entries, Entry{Name: n, Body: files[n]})
	}
	return Layer(t, entries...)
}

// DirLayer makes a layer of a host directory tree, keeping owners, modes,
// mtimes, symlinks, hardlinks and devices. The tar is written to a file in
// t.TempDir (a Debian tree does not fit in memory comfortably).
func DirLayer(t testing.TB, dir string) v1.Layer {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "layer.tar"))
	if err != nil {
		t.Fatalf("ocitest: %v", err)
	}
	if err := writeDirTar(dir, f); err != nil {
		_ = f.Close()
		t.Fatalf("ocitest: tar %s: %v", dir, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("ocitest: %v", err)
	}
	l, err := tarball.LayerFromFile(f.Name(), tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatalf("ocitest: layer from %s: %v", dir, err)
	}
	return l
}

func writeDirTar(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		target := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.Format = tar.FormatPAX
		if st, ok := info.Sys().(*syscall.Stat_t); ok && info.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				h.Typeflag = tar.TypeLink
				h.Linkname = first
				h.Size = 0
			} else {
				links[key] = h.Name
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			_ = f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Image builds an image of layers for platform with config cfg.
func Image(t testing.TB, platform v1.Platform, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatalf("ocitest: append layers: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("ocitest: config: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatalf("ocitest: set config: %v", err)
	}
	return img
}

// HostPlatform is linux/<GOARCH>, what ociimage.Pull picks by default.
func HostPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// PushImage pushes a host-platform image of layers (empty config) to ref
// and returns its manifest digest.
func PushImage(t testing.TB, ref string, layers ...v1.Layer) string {
	t.Helper()
	return Push(t, ref, Image(t, HostPlatform(), v1.Config{}, layers...))
}

// Push pushes img to ref (anonymously). See (*Registry).Push for a registry
// with credentials.
func Push(t testing.TB, ref string, img v1.Image) string {
	t.Helper()
	return push(t, ref, img, authn.Anonymous)
}

// Push pushes img to ref with the registry's credentials.
func (r *Registry) Push(t testing.TB, ref string, img v1.Image) string {
	t.Helper()
	var a authn.Authenticator = authn.Anonymous
	if r.Username != "" {
		a = &authn.Basic{Username: r.Username, Password: r.Password}
	}
	return push(t, ref, img, a)
}

func push(t testing.TB, ref string, img v1.Image, a authn.Authenticator) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("ocitest: reference %q: %v", ref, err)
	}
	if err := remote.Write(r, img, remote.WithAuth(a)); err != nil {
		t.Fatalf("ocitest: push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("ocitest: digest: %v", err)
	}
	return d.String()
}

// PushIndex pushes an image index with one image of layers per platform
// (PushIndex(t, ref, []v1.Platform{{OS: "linux", Architecture: "arm64"}})
// is an arm64-only image) and returns the index digest.
func PushIndex(t testing.TB, ref string, platforms []v1.Platform, layers ...v1.Layer) string {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, p := range platforms {
		img := Image(t, p, v1.Config{Labels: map[string]string{"platform": p.OS + "/" + p.Architecture}}, layers...)
		p := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("ocitest: reference %q: %v", ref, err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("ocitest: push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("ocitest: digest: %v", err)
	}
	return d.String()
}

// PushDir pushes a one-layer host-platform image of the host directory dir
// to ref and returns its manifest digest. With MinimalTree it gives a
// realistic Debian image that boots once Wrennified.
func PushDir(t testing.TB, ref, dir string) string {
	t.Helper()
	return PushImage(t, ref, DirLayer(t, dir))
}

// MinimalTree returns the cached Debian tree of the `minimal` image,
// $WRENN_CACHE/rootfs/<key>/tree (WRENN_CACHE defaults to /var/cache/wrenn,
// as in the Makefile), or an error saying to run `make images` first. When
// several keys are cached the newest tree wins (build.sh keeps one).
func MinimalTree() (string, error) {
	cache := os.Getenv("WRENN_CACHE")
	if cache == "" {
		cache = "/var/cache/wrenn"
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "rootfs", "*", "tree"))
	best, bestTime := "", time.Time{}
	for _, m := range matches {
		st, err := os.Stat(filepath.Join(m, "var", "lib", "dpkg", "status"))
		if err != nil {
			continue
		}
		if best == "" || st.ModTime().After(bestTime) {
			best, bestTime = m, st.ModTime()
		}
	}
	if best == "" {
		return "", fmt.Errorf("no cached Debian tree under %s/rootfs/<key>/tree: run `make images` first", cache)
	}
	return best, nil
}
