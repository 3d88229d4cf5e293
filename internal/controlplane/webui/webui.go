// Package webui serves the dashboard (web/, a SvelteKit single-page app)
// from files embedded in wrenn-cp at build time.
//
// The REST router hands it the GET and HEAD requests it has no route for
// outside /v1 that it Serves (rest.Deps.UI), so the API keeps every path
// it has and the app gets the rest: a file of the build when one
// matches, index.html for a browser's navigation to any other page (the
// app routes in the browser).
//
// Every answer carries a Content-Security-Policy. The app loads its code
// from /_app/... ('self'); SvelteKit's one inline bootstrap script (it
// starts the app with the right base path) is allowed by its SHA-256
// hash alone, computed here from the embedded index.html, so no other
// inline script can run. Styles allow 'unsafe-inline' because xterm.js
// writes <style> elements for its renderer (styles cannot run script).
// connect-src 'self' covers the API and the terminal's WebSocket on the
// same origin.
package webui

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
	"time"
)

// Handler serves the embedded dashboard.
type Handler struct {
	fsys  fs.FS
	index []byte
	csp   string
}

// New returns the handler for the embedded build (the placeholder page
// when wrenn-cp was built without the app; see Built).
func New() (*Handler, error) {
	sub, err := fs.Sub(files, root)
	if err != nil {
		return nil, fmt.Errorf("open embedded dashboard: %w", err)
	}
	return newHandler(sub)
}

func newHandler(fsys fs.FS) (*Handler, error) {
	index, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		return nil, fmt.Errorf("read dashboard index.html: %w", err)
	}
	return &Handler{fsys: fsys, index: index, csp: ContentSecurityPolicy(index)}, nil
}

// inlineScript matches a <script> element and its body; its attributes
// are checked for src separately.
var inlineScript = regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)

var srcAttr = regexp.MustCompile(`(?i)\ssrc\s*=`)

// ContentSecurityPolicy is the policy for a page: scripts from the same
// origin plus the page's own inline scripts by hash.
func ContentSecurityPolicy(page []byte) string {
	scripts := []string{"'self'"}
	for _, m := range inlineScript.FindAllSubmatch(page, -1) {
		if srcAttr.Match(m[1]) {
			continue
		}
		sum := sha256.Sum256(m[2])
		scripts = append(scripts, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	}
	return strings.Join([]string{
		"default-src 'self'",
		"script-src " + strings.Join(scripts, " "),
		"style-src 'self' 'unsafe-inline'",
		"img-src 'self'",
		"connect-src 'self'",
		"object-src 'none'",
		"base-uri 'self'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// reserved are paths outside /v1 that are never the app's, so they keep
// the API's 404: /metrics is served on a listener of its own and a
// scraper pointed at the API port must see it missing, not a page.
var reserved = map[string]bool{"/metrics": true}

// Serves reports whether the app answers r (a GET or HEAD no API route
// matched): its root, a file of the build, or, for a browser navigating
// (Accept: text/html), any other path but the reserved ones, which
// index.html then routes. Programs asking for an unknown path get the
// API's JSON 404 instead of a page.
func (h *Handler) Serves(r *http.Request) bool {
	p := path.Clean("/" + r.URL.Path)
	if reserved[p] {
		return false
	}
	if p == "/" {
		return true
	}
	if _, err := fs.Stat(h.fsys, strings.TrimPrefix(p, "/")); err == nil {
		return true
	}
	if strings.HasPrefix(p, "/_app/") {
		return true // a missing build file: the app's 404
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// SetSecurityHeaders sets the headers every dashboard answer carries.
func (h *Handler) SetSecurityHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.SetSecurityHeaders(w)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name != "" && name != "index.html" {
		if body, err := fs.ReadFile(h.fsys, name); err == nil {
			h.serveFile(w, r, name, body)
			return
		}
		// A missing build asset is a real 404 (a stale page asking for
		// code of an older build must fail loudly, not get HTML back).
		if strings.HasPrefix(name, "_app/") {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
	}
	// Any other path is a page of the app: index.html routes it.
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(h.index)
	}
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string, body []byte) {
	if strings.HasPrefix(name, "_app/immutable/") {
		// Vite names these by content hash.
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = http.DetectContentType(body)
	}
	w.Header().Set("Content-Type", ct)
	// Embedded files have no modification time: the zero time makes
	// ServeContent skip Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}
