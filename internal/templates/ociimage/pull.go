// Package ociimage turns an OCI image reference into a bootable Wrenn root
// filesystem, on the host and without a VM: Pull fetches the manifest for one
// platform and its layers (cached by digest), Unpack flattens the layers into
// a directory with whiteouts honoured and no entry escaping it, Wrennify adds
// what a Wrenn guest needs (envd, wrenn-init, the `user` account) and reports
// what the image lacks, and MakeExt4 writes the tree to an ext4 image the way
// images/rootfs/build.sh does.
//
// Everything here runs as root on the host: Unpack must chown and mknod.
package ociimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// DefaultMaxBytes caps the compressed layer bytes of one image.
const DefaultMaxBytes int64 = 4 << 30

// DefaultMaxUnpackedBytes caps the file bytes Unpack writes (a layer that
// decompresses to far more than it weighs must not fill the host's disk).
const DefaultMaxUnpackedBytes int64 = 16 << 30

// Credential authenticates to one registry: Username+Password (basic, or
// exchanged for a bearer token by the registry's token service) or Token (a
// registry bearer token used as is).
type Credential struct{ Username, Password, Token string }

// String never shows the secret, so a Credential printed by mistake leaks
// nothing.
func (c Credential) String() string {
	if c.Token != "" {
		return "Credential{token: redacted}"
	}
	return fmt.Sprintf("Credential{user: %q, password: redacted}", c.Username)
}

// PullOptions configure Pull. The zero value pulls linux/<GOARCH>
// anonymously, plain HTTP only to loopback registries, up to DefaultMaxBytes,
// into a private cache removed by Pulled.Close.
type PullOptions struct {
	// Auth maps a registry host ("ghcr.io", "127.0.0.1:5000"; Docker Hub is
	// found under "docker.io" or "index.docker.io") to its credential. Given
	// per build, never written to disk or logs.
	Auth map[string]Credential
	// Insecure says whether plain HTTP is allowed to a registry (host or
	// host:port). Nil means loopback addresses only.
	Insecure func(registry string) bool
	// Platform to pull; zero means linux/<host GOARCH>.
	Platform v1.Platform
	// MaxBytes caps the compressed layer bytes; 0 means DefaultMaxBytes.
	MaxBytes int64
	// MaxUnpackedBytes caps the regular-file bytes Unpack writes, all
	// layers together; 0 means DefaultMaxUnpackedBytes. Over it Unpack
	// fails with ErrTooLarge.
	MaxUnpackedBytes int64
	// CacheDir holds layer blobs by digest (blobs/sha256/<hex>), shared
	// between builds and safe for concurrent pulls. Empty: a temporary
	// directory owned by the Pulled.
	CacheDir string
	// Log receives progress lines; nil discards them.
	Log func(string)
	// Transport is the HTTP transport under the registry client; nil
	// means http.DefaultTransport. Tests use it to count requests.
	Transport http.RoundTripper
}

// Image is what was pulled.
type Image struct {
	// Ref is the reference as given, normalised ("docker.io/library/x:1").
	Ref string
	// Digest is the digest of the platform's image manifest (sha256:...),
	// not of the index that may point to it: it names exactly the layers
	// that are unpacked.
	Digest string
	// IndexDigest is the digest of the index the manifest was picked from,
	// or "" when the reference named an image manifest directly.
	IndexDigest string
	// Platform is the platform of the manifest ("linux/amd64").
	Platform string
	Config   ImageConfig
}

// ImageConfig is the part of the image configuration a template keeps.
type ImageConfig struct {
	Env          []string
	Entrypoint   []string
	Cmd          []string
	WorkingDir   string
	User         string
	ExposedPorts []int
	Labels       map[string]string
}

// Pulled is a pulled image whose layers are on local disk.
type Pulled struct {
	Image
	// Layers are the compressed layer blobs, lowest first.
	Layers      []Layer
	tmpDir      string
	log         func(string)
	maxUnpacked int64
}

// Layer is one compressed layer blob in the cache.
type Layer struct {
	Digest    string // sha256:...
	Size      int64  // compressed bytes
	MediaType string
	Path      string // the verified blob file
	Cached    bool   // true when this pull found it already cached
}

// Close removes the private cache of a pull made without CacheDir. The
// image's files stay usable until then.
func (p *Pulled) Close() error {
	if p == nil || p.tmpDir == "" {
		return nil
	}
	return os.RemoveAll(p.tmpDir)
}

// Pull resolves ref for o.Platform (an index is resolved to that platform's
// manifest) and downloads its layers into the cache, verifying each digest.
// Errors are classified through errdefs: ErrNotFound (no such repository,
// tag or blob), ErrPermissionDenied (the registry refused the credentials),
// ErrUnavailable (registry unreachable or failing), ErrTooLarge (over
// MaxBytes), ErrInvalidArgument (bad reference, no manifest for the
// platform, plain HTTP to a registry not allowed it). Cancelling ctx stops
// every download.
func Pull(ctx context.Context, ref string, o PullOptions) (*Pulled, error) {
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Insecure == nil {
		o.Insecure = IsLoopbackRegistry
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			o.Log(fmt.Sprintf(format, args...))
		}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "image reference %q: %v", ref, err)
	}
	reg := r.Context().RegistryStr()
	if o.Insecure(reg) {
		// name.Insecure lets ggcr fall back to plain HTTP for this registry.
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "image reference %q: %v", ref, err)
		}
	}
	shown := r.Name()
	inner := o.Transport
	if inner == nil {
		inner = http.DefaultTransport
	}
	rt := &guardTransport{inner: inner, insecure: o.Insecure}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(rt),
		remote.WithAuthFromKeychain(keychain(o.Auth)),
		remote.WithPlatform(o.Platform),
		remote.WithUserAgent("wrenn"),
		// Fewer, shorter retries than the default: a dead registry fails a
		// build in about two seconds instead of thirteen.
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 2}),
	}
	fail := func(what string, err error) error { return classify(ctx, shown, reg, what, err, o.Auth) }

	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, fail("fetch manifest", err)
	}
	if o.MaxUnpackedBytes <= 0 {
		o.MaxUnpackedBytes = DefaultMaxUnpackedBytes
	}
	out := &Pulled{Image: Image{Ref: shown}, log: o.Log, maxUnpacked: o.MaxUnpackedBytes}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fail("read index", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fail("read index", err)
		}
		out.IndexDigest = desc.Digest.String()
		var have []string
		var pick *v1.Descriptor
		for i := range im.Manifests {
			m := &im.Manifests[i]
			if m.Platform == nil || m.Platform.OS == "unknown" {
				continue // attestations and the like
			}
			have = append(have, platformString(*m.Platform))
			if pick == nil && m.Platform.Satisfies(o.Platform) {
				pick = m
			}
		}
		if pick == nil {
			return nil, platformError(shown, o.Platform, have)
		}
		if img, err = idx.Image(pick.Digest); err != nil {
			return nil, fail("fetch platform manifest", err)
		}
	} else {
		if img, err = desc.Image(); err != nil {
			return nil, fail("read image manifest", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fail("fetch image config", err)
	}
	got := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if cf.OS != "" && !got.Satisfies(o.Platform) {
		return nil, platformError(shown, o.Platform, []string{platformString(got)})
	}
	out.Platform = platformString(got)
	dg, err := img.Digest()
	if err != nil {
		return nil, fail("digest manifest", err)
	}
	out.Digest = dg.String()
	out.Config = imageConfig(cf.Config)

	mf, err := img.Manifest()
	if err != nil {
		return nil, fail("read image manifest", err)
	}
	var total int64
	for _, l := range mf.Layers {
		if l.Size < 0 {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "image %s: layer %s has a negative size", shown, l.Digest)
		}
		total += l.Size
	}
	if total > o.MaxBytes {
		return nil, errdefs.New(errdefs.ErrTooLarge, "image %s is %s of compressed layers, over the limit of %s", shown, humanBytes(total), humanBytes(o.MaxBytes))
	}

	cache := o.CacheDir
	if cache == "" {
		if out.tmpDir, err = os.MkdirTemp("", "wrenn-oci-"); err != nil {
			return nil, fmt.Errorf("create layer cache: %w", errdefs.FromOS(err))
		}
		cache = out.tmpDir
	}
	blobDir := filepath.Join(cache, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o700); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("create layer cache %s: %w", blobDir, errdefs.FromOS(err))
	}
	logf("pulling %s: %d layers (%s)", shown, len(mf.Layers), humanBytes(total))
	for i, l := range mf.Layers {
		if l.Digest.Algorithm != "sha256" {
			_ = out.Close()
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "image %s: layer digest %s is not sha256", shown, l.Digest)
		}
		lay := Layer{Digest: l.Digest.String(), Size: l.Size, MediaType: string(l.MediaType), Path: filepath.Join(blobDir, l.Digest.Hex)}
		start := time.Now()
		cached, err := fetchBlob(ctx, blobDir, l, func() (io.ReadCloser, error) {
			rl, err := img.LayerByDigest(l.Digest)
			if err != nil {
				return nil, err
			}
			return rl.Compressed()
		})
		if err != nil {
			_ = out.Close()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("pull %s: %w", shown, ctx.Err())
			}
			var ke *kindErr
			if errors.As(err, &ke) {
				return nil, err
			}
			return nil, fail(fmt.Sprintf("fetch layer %s", short(l.Digest.String())), err)
		}
		lay.Cached = cached
		out.Layers = append(out.Layers, lay)
		how := "pulled"
		if cached {
			how = "cached"
		}
		logf("layer %d/%d %s %s %s in %s", i+1, len(mf.Layers), short(lay.Digest), humanBytes(l.Size), how, time.Since(start).Round(time.Millisecond))
	}
	return out, nil
}

// kindErr marks errors fetchBlob already classified.
type kindErr struct{ error }

func (e *kindErr) Unwrap() error { return e.error }

// fetchBlob makes blobDir/<hex> hold the verified blob of l. A cached file is
// re-hashed before use (a torn or tampered cache entry is fetched again). A
// per-digest lock makes concurrent pulls of one blob download it once; the
// download goes to a temporary file renamed into place, so readers never
// see part of a blob.
func fetchBlob(ctx context.Context, blobDir string, l v1.Descriptor, open func() (io.ReadCloser, error)) (cached bool, err error) {
	final := filepath.Join(blobDir, l.Digest.Hex)
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return false, err
	}
	defer unlock()
	if ok, err := verifyFile(ctx, final, l); err != nil {
		return false, err
	} else if ok {
		return true, nil
	}
	rc, err := open()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(blobDir, l.Digest.Hex+".tmp-*")
	if err != nil {
		return false, &kindErr{fmt.Errorf("create blob file: %w", errdefs.FromOS(err))}
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte over the declared size is enough to know the registry lied.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, rc}, l.Size+1))
	if err != nil {
		return false, err
	}
	if n != l.Size {
		return false, &kindErr{errdefs.New(errdefs.ErrUnavailable, "layer %s: registry sent %d bytes, manifest says %d", short(l.Digest.String()), n, l.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != l.Digest.Hex {
		return false, &kindErr{errdefs.New(errdefs.ErrUnavailable, "layer %s: registry sent content with digest sha256:%s", short(l.Digest.String()), short(got))}
	}
	if err = tmp.Sync(); err != nil {
		return false, &kindErr{fmt.Errorf("write blob: %w", errdefs.FromOS(err))}
	}
	if err = tmp.Close(); err != nil {
		return false, &kindErr{fmt.Errorf("write blob: %w", errdefs.FromOS(err))}
	}
	if err = os.Rename(tmp.Name(), final); err != nil {
		return false, &kindErr{fmt.Errorf("store blob: %w", errdefs.FromOS(err))}
	}
	return false, nil
}

// verifyFile reports whether path holds exactly the blob l (size and
// sha256). A mismatching file is removed.
func verifyFile(ctx context.Context, path string, l v1.Descriptor) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &kindErr{fmt.Errorf("open cached blob: %w", errdefs.FromOS(err))}
	}
	defer f.Close()
	st, err := f.Stat()
	if err == nil && st.Size() == l.Size {
		h := sha256.New()
		if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
			return false, err
		}
		if hex.EncodeToString(h.Sum(nil)) == l.Digest.Hex {
			return true, nil
		}
	}
	_ = os.Remove(path)
	return false, nil
}

// lockFile takes an exclusive flock on path, polling so that ctx can end the
// wait (flock itself cannot be interrupted by a context).
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, &kindErr{fmt.Errorf("open blob lock: %w", errdefs.FromOS(err))}
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, &kindErr{fmt.Errorf("lock blob: %w", err)}
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ctxReader stops a copy as soon as ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// guardTransport refuses plain HTTP to registries not allowed it: ggcr on its
// own speaks HTTP to any RFC 1918 address, which would send credentials and
// layers in clear over a network.
type guardTransport struct {
	inner    http.RoundTripper
	insecure func(string) bool
}

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure(req.URL.Host) {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "plain HTTP to %s is not allowed (only loopback registries and those the operator lists)", req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

// IsLoopbackRegistry is the default PullOptions.Insecure: localhost and
// loopback addresses, with or without a port.
func IsLoopbackRegistry(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type keychainFunc func(authn.Resource) (authn.Authenticator, error)

func (f keychainFunc) Resolve(r authn.Resource) (authn.Authenticator, error) { return f(r) }

// keychain looks a registry up in auth; anything absent is anonymous.
func keychain(auth map[string]Credential) authn.Keychain {
	return keychainFunc(func(r authn.Resource) (authn.Authenticator, error) {
		c, ok := lookupCred(auth, r.RegistryStr())
		if !ok {
			return authn.Anonymous, nil
		}
		if c.Token != "" {
			return authn.FromConfig(authn.AuthConfig{RegistryToken: c.Token}), nil
		}
		return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password}), nil
	})
}

func lookupCred(auth map[string]Credential, reg string) (Credential, bool) {
	keys := []string{reg}
	if reg == name.DefaultRegistry || reg == "docker.io" || reg == "registry-1.docker.io" {
		keys = []string{"docker.io", name.DefaultRegistry, "registry-1.docker.io", "https://index.docker.io/v1/"}
	}
	for _, k := range keys {
		if c, ok := auth[k]; ok {
			return c, true
		}
	}
	return Credential{}, false
}

// classify maps a registry client error to an errdefs kind with a message
// that names the image and never contains a secret from auth.
func classify(ctx context.Context, image, reg, what string, err error, auth map[string]Credential) error {
	if ctx.Err() != nil {
		return fmt.Errorf("pull %s: %w", image, ctx.Err())
	}
	if errors.Is(err, errdefs.ErrInvalidArgument) {
		return errdefs.New(errdefs.ErrInvalidArgument, "pull %s: %s", image, redact(err.Error(), auth))
	}
	detail := redact(err.Error(), auth)
	var te *transport.Error
	if errors.As(err, &te) {
		codes := make([]transport.ErrorCode, 0, len(te.Errors))
		for _, d := range te.Errors {
			codes = append(codes, d.Code)
		}
		has := func(c ...transport.ErrorCode) bool {
			return slices.ContainsFunc(codes, func(x transport.ErrorCode) bool { return slices.Contains(c, x) })
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden || has(transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			if _, ok := lookupCred(auth, reg); ok {
				return errdefs.New(errdefs.ErrPermissionDenied, "image %s: registry %s refused credentials (%s)", image, reg, what)
			}
			return errdefs.New(errdefs.ErrPermissionDenied, "image %s: registry %s requires credentials, or the image does not exist (%s)", image, reg, what)
		case te.StatusCode == http.StatusNotFound || has(transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
			return errdefs.New(errdefs.ErrNotFound, "image %s not found", image)
		case te.StatusCode == http.StatusTooManyRequests || has(transport.TooManyRequestsErrorCode):
			return errdefs.New(errdefs.ErrUnavailable, "image %s: registry %s is rate limiting pulls; retry later", image, reg)
		case te.StatusCode >= 500:
			return errdefs.New(errdefs.ErrUnavailable, "image %s: registry %s failed (%s): %s", image, reg, what, detail)
		}
		return errdefs.New(errdefs.ErrUnavailable, "image %s: %s: %s", image, what, detail)
	}
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.New(errdefs.ErrUnavailable, "image %s: registry %s unreachable (%s): %s", image, reg, what, detail)
	}
	return errdefs.New(errdefs.ErrUnavailable, "image %s: %s: %s", image, what, detail)
}

// redact removes every password and token of auth from s.
func redact(s string, auth map[string]Credential) string {
	for _, c := range auth {
		for _, secret := range []string{c.Password, c.Token} {
			if len(secret) >= 3 {
				s = strings.ReplaceAll(s, secret, "[redacted]")
			}
		}
	}
	return s
}

func platformError(image string, want v1.Platform, have []string) error {
	slices.Sort(have)
	have = slices.Compact(have)
	if len(have) == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "image %s has no manifest for %s (its index names no platform)", image, platformString(want))
	}
	return errdefs.New(errdefs.ErrInvalidArgument, "image %s is %s only; Wrenn needs %s", image, strings.Join(have, ", "), platformString(want))
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func imageConfig(c v1.Config) ImageConfig {
	out := ImageConfig{
		Env:        slices.Clone(c.Env),
		Entrypoint: slices.Clone(c.Entrypoint),
		Cmd:        slices.Clone(c.Cmd),
		WorkingDir: c.WorkingDir,
		User:       c.User,
		Labels:     map[string]string{},
	}
	for k, v := range c.Labels {
		out.Labels[k] = v
	}
	for p := range c.ExposedPorts {
		// "8080/tcp" or "8080"; UDP ports are kept too (the number is what a
		// readiness check or a proxy needs).
		num, _, _ := strings.Cut(p, "/")
		if n, err := strconv.Atoi(num); err == nil && n > 0 && n < 65536 {
			out.ExposedPorts = append(out.ExposedPorts, n)
		}
	}
	slices.Sort(out.ExposedPorts)
	out.ExposedPorts = slices.Compact(out.ExposedPorts)
	return out
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
