package rest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TestDatabaseDownIs503: with PostgreSQL away (restarting, or a
// connection cut mid-statement) a request answers 503 with Retry-After
// and a machine-readable code, in /v1's shape and E2B's, never a 500 nor
// the driver's own words.
func TestDatabaseDownIs503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every connection is refused
	pool, err := pgxpool.New(context.Background(), "postgres://wrenn@"+addr+"/wrenn?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	srv := httptest.NewServer(New(Deps{Pool: pool, JWTSecret: []byte(strings.Repeat("k", 32))}).Handler())
	defer srv.Close()

	for _, c := range []struct {
		path, header, key string
		e2b               bool
	}{
		{"/v1/sandboxes", "X-API-Key", "wrn_" + strings.Repeat("a", 32), false},
		{"/sandboxes", "X-API-KEY", "e2b_" + strings.Repeat("a", 40), true},
	} {
		req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
		req.Header.Set(c.header, c.key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s with the database down: %d (Retry-After %q) %v, want 503 with Retry-After", c.path, res.StatusCode, res.Header.Get("Retry-After"), body)
			continue
		}
		text, _ := json.Marshal(body)
		if strings.Contains(string(text), addr) || strings.Contains(string(text), "refused") {
			t.Errorf("GET %s: the driver's error reached the client: %s", c.path, text)
		}
		code := body["error_code"]
		if !c.e2b {
			code = body["error"].(map[string]any)["code"]
		}
		if code != "unavailable" {
			t.Errorf("GET %s: code %v in %s, want unavailable", c.path, code, text)
		}
	}
}
