package webui

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

const bootstrap = `
	__sveltekit_x = { base: "" };
	import("/_app/immutable/entry/start.js").then(m => m.start());
`

func testHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := newHandler(fstest.MapFS{
		"index.html": {Data: []byte(`<!doctype html><html><head>` +
			`<script type="module" src="/_app/immutable/entry/app.js"></script>` +
			`</head><body><div id="app"></div><script>` + bootstrap + `</script></body></html>`)},
		"_app/immutable/entry/app.js": {Data: []byte("export {}")},
		"_app/version.json":           {Data: []byte(`{"version":"1"}`)},
		"favicon.svg":                 {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	resp := w.Result()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestSecurityHeaders(t *testing.T) {
	h := testHandler(t)
	sum := sha256.Sum256([]byte(bootstrap))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	for _, p := range []string{"/", "/sandbox/x", "/_app/immutable/entry/app.js", "/_app/immutable/missing.js"} {
		resp, _ := get(t, h, "GET", p)
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self' " + hash + ";", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'self'", "connect-src 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", p, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-eval") || strings.Contains(strings.SplitN(strings.SplitN(csp, "script-src", 2)[1], ";", 2)[0], "unsafe-inline") {
			t.Errorf("GET %s: CSP %q allows eval or inline scripts", p, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("GET %s: %s %q, want %q", p, k, got, v)
			}
		}
	}
}

func TestContentSecurityPolicyHashesOnlyInlineScripts(t *testing.T) {
	csp := ContentSecurityPolicy([]byte(`<script src="/a.js"></script><SCRIPT>one()</SCRIPT><script type="module">two()</script>`))
	n := strings.Count(csp, "'sha256-")
	if n != 2 {
		t.Fatalf("CSP %q has %d hashes, want 2 (the two inline scripts, not the external one)", csp, n)
	}
	if got := ContentSecurityPolicy([]byte(`<p>no scripts</p>`)); !strings.Contains(got, "script-src 'self';") {
		t.Fatalf("CSP without inline scripts %q", got)
	}
}

func TestSPAFallback(t *testing.T) {
	h := testHandler(t)
	index, _ := get(t, h, "GET", "/")
	for _, p := range []string{"/", "/index.html", "/login", "/sandbox/abc", "/team/keys?x=1", "/../../etc/passwd"} {
		resp, body := get(t, h, "GET", p)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `<div id="app">`) {
			t.Fatalf("GET %s: %d %q, want index.html", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("GET %s: Cache-Control %q: index.html must be revalidated so a new build is picked up", p, resp.Header.Get("Cache-Control"))
		}
	}
	if index.StatusCode != 200 {
		t.Fatal(index.Status)
	}
	resp, body := get(t, h, "HEAD", "/login")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestAssets(t *testing.T) {
	h := testHandler(t)
	resp, body := get(t, h, "GET", "/_app/immutable/entry/app.js")
	if resp.StatusCode != 200 || body != "export {}" || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("asset: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("hashed asset Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	resp, _ = get(t, h, "GET", "/_app/version.json")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("version.json: %d %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	resp, _ = get(t, h, "GET", "/favicon.svg")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" {
		t.Fatalf("favicon: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Code of another build is a 404, never HTML a browser would try to run.
	resp, _ = get(t, h, "GET", "/_app/immutable/chunks/old.js")
	if resp.StatusCode != 404 {
		t.Fatalf("missing asset: %d, want 404", resp.StatusCode)
	}
	resp, _ = get(t, h, "POST", "/")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

// TestEmbedded: the embedded files (the placeholder, or the app with
// -tags webui) make a working handler.
func TestEmbedded(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, h, "GET", "/")
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(body), "<html") {
		t.Fatalf("embedded index: %d", resp.StatusCode)
	}
	if !Built && !strings.Contains(body, "make build") {
		t.Fatalf("placeholder does not say how to build the dashboard: %s", body)
	}
}

func TestServes(t *testing.T) {
	h := testHandler(t)
	for _, tc := range []struct {
		path, accept string
		want         bool
	}{
		{"/", "", true},
		{"/favicon.svg", "", true},
		{"/_app/immutable/entry/app.js", "", true},
		{"/_app/immutable/gone.js", "", true},
		{"/sandbox/x", "text/html,*/*", true},
		{"/sandbox/x", "*/*", false},
		{"/sandbox/x", "application/json", false},
		{"/metrics", "text/html", false},
		{"/metrics/../metrics", "text/html", false},
	} {
		r := httptest.NewRequest("GET", tc.path, nil)
		if tc.accept != "" {
			r.Header.Set("Accept", tc.accept)
		}
		if got := h.Serves(r); got != tc.want {
			t.Errorf("Serves(%s, Accept %q) = %v, want %v", tc.path, tc.accept, got, tc.want)
		}
	}
}
