package rest

import (
	"bytes"
	"html"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/wrenn/wrenn/api"
)

func TestOpenAPIDocument(t *testing.T) {
	env := newTestEnv(t)
	resp := env.do(t, "GET", "/openapi.yaml", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body := readAll(t, resp)
	if !bytes.Equal([]byte(body), api.OpenAPI) {
		t.Fatal("served document differs from the embedded one")
	}
	var doc struct {
		OpenAPI string         `yaml:"openapi"`
		Paths   map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("openapi.yaml is not YAML: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") || len(doc.Paths) == 0 {
		t.Fatalf("document: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
}

func TestDocsPage(t *testing.T) {
	env := newTestEnv(t)
	resp := env.do(t, "GET", "/docs", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	page := html.UnescapeString(readAll(t, resp))

	// Self-contained: no scripts, no external assets.
	for _, bad := range []string{"<script", "src=", "http://", "https://", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("docs page contains %q", bad)
		}
	}

	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	ops := 0
	for path, item := range doc.Paths {
		for method, node := range item {
			if method == "parameters" {
				continue
			}
			var op struct {
				Summary   string         `yaml:"summary"`
				Responses map[string]any `yaml:"responses"`
			}
			if err := node.Decode(&op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			ops++
			anchor := `id="` + strings.ToLower(method) + strings.NewReplacer("/", "-", "{", "", "}", "").Replace(path) + `"`
			i := strings.Index(page, anchor)
			if i < 0 {
				t.Errorf("docs miss %s %s", strings.ToUpper(method), path)
				continue
			}
			section := page[i:]
			if j := strings.Index(section, `<div class="op"`); j >= 0 {
				section = section[:j]
			}
			if !strings.Contains(section, path) || !strings.Contains(section, strings.ToUpper(method)) {
				t.Errorf("%s %s: section lacks its method or path", method, path)
			}
			if op.Summary != "" && !strings.Contains(section, op.Summary) {
				t.Errorf("%s %s: summary %q missing", method, path, op.Summary)
			}
			for code := range op.Responses {
				if !strings.Contains(section, "<td>"+code+"</td>") {
					t.Errorf("%s %s: response %s missing", method, path, code)
				}
			}
		}
	}
	if ops < 40 {
		t.Fatalf("only %d operations in the document?", ops)
	}
	// Parameters are resolved from components (Limit has bounds and a default).
	if !strings.Contains(page, "integer [1..1000], default 100") {
		t.Error("the limit parameter's schema is not shown")
	}
}

func TestMetrics(t *testing.T) {
	env := newTestEnv(t, func(d *Deps) { d.RateLimit = 1 })
	a := env.newTeam(t, "a")
	env.doJSON(t, "GET", "/v1/teams/"+a.ID.String(), a.Key, nil, http.StatusOK, nil)
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
	wantError(t, env.do(t, "GET", "/v1/me", a.Key, nil), 429, "rate_limited")
	wantError(t, env.do(t, "GET", "/nowhere", "", nil), 404, "not_found")

	// Not on the API port (issue 11): unauthenticated, it describes every
	// team's traffic. wrenn-cp serves MetricsHandler on WRENN_METRICS_ADDR.
	wantError(t, env.do(t, "GET", "/metrics", "", nil), 404, "not_found")
	rec := httptest.NewRecorder()
	MetricsHandler(env.Server.deps.Metrics, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`wrenn_api_requests_total{code="201",method="POST",route="/v1/auth/signup"} 1`,
		`wrenn_api_requests_total{code="200",method="GET",route="/v1/teams/{teamID}"} 1`,
		`wrenn_api_requests_total{code="429",method="GET",route="/v1/me"} 1`,
		`wrenn_api_requests_total{code="404",method="GET",route="unmatched"} 2`, // /nowhere, /metrics
		`wrenn_api_request_duration_seconds_count{method="GET",route="/v1/me"} 2`,
		`wrenn_api_rate_limited_total{kind="principal"} 1`,
		`wrenn_api_rate_limit_buckets{kind="principal"} 2`, // a's user and key
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
	// Ids never become labels.
	if strings.Contains(body, a.ID.String()) {
		t.Error("a team id appears in the metrics")
	}
}

func TestHealthz(t *testing.T) {
	env := newTestEnv(t)
	var h struct{ Status string }
	env.doJSON(t, "GET", "/healthz", "", nil, http.StatusOK, &h)
	if h.Status != "ok" {
		t.Fatalf("status %q", h.Status)
	}
	env.Pool.Close()
	wantError(t, env.do(t, "GET", "/healthz", "", nil), http.StatusServiceUnavailable, "unavailable")
}

// Building the router twice (tests walk it) must not panic on metrics
// registered twice.
func TestRoutesTwice(t *testing.T) {
	env := newTestEnv(t)
	_ = env.Server.Handler()
	a := env.newTeam(t, "a")
	env.doJSON(t, "GET", "/v1/me", a.Key, nil, http.StatusOK, nil)
}
