package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn/wrenn/internal/controlplane/config"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// TestAdminSubcommand is issue 11 hole 3 end to end: with the default
// configuration nobody can sign up (the first signup used to become
// platform admin); `wrenn-cp admin` makes the platform admin, who logs in,
// makes a platform key and adds a regular host with it.
func TestAdminSubcommand(t *testing.T) {
	_, dsn := pgtest.NewWithDSN(t)
	t.Chdir(t.TempDir()) // no ./.env
	var logs bytes.Buffer
	d := startDaemon(t, dsn, newTestLogger(&logs), "--listen", "127.0.0.1:0")
	cfg := d.cfg
	if cfg.Signup != config.SignupClosed {
		t.Fatalf("default WRENN_SIGNUP %q, want closed", cfg.Signup)
	}
	base := "http://" + d.addr
	call := func(method, path, cred string, body any, want int, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, data)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	const pw = "correct horse battery staple"
	call("POST", "/v1/auth/signup", "", map[string]string{"email": "first@example.com", "password": pw}, http.StatusForbidden, nil)

	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", dsn)
	for range 2 { // idempotent
		if code := adminMain([]string{"--email", "ops@example.com", "--password-file", pwFile}); code != 0 {
			t.Fatalf("wrenn-cp admin: exit %d", code)
		}
	}
	if code := adminMain([]string{"--email", "ops@example.com"}); code != 2 {
		t.Errorf("wrenn-cp admin without a password file: exit %d, want 2", code)
	}

	var sess struct {
		Token string `json:"token"`
	}
	call("POST", "/v1/auth/login", "", map[string]string{"email": "ops@example.com", "password": pw}, http.StatusOK, &sess)
	var key struct {
		Key string `json:"key"`
	}
	call("POST", "/v1/api-keys", sess.Token, map[string]any{"name": "ordinary"}, http.StatusCreated, &key)
	call("POST", "/v1/hosts", key.Key, map[string]string{"type": "regular"}, http.StatusForbidden, nil)
	call("POST", "/v1/api-keys", sess.Token, map[string]any{"name": "platform", "platform": true}, http.StatusCreated, &key)
	call("POST", "/v1/hosts", key.Key, map[string]string{"type": "regular"}, http.StatusCreated, nil)

	d.stop(t)
	if !strings.Contains(logs.String(), "no platform admin") {
		t.Errorf("start-up did not say there is no platform admin:\n%s", logs.String())
	}
}
