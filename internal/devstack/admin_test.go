package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn/wrenn/internal/devstack"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// TestAdminIsPlatformAdmin: the stack's admin is made platform admin with
// `wrenn-cp admin` (signup no longer makes one) and its saved API key has
// platform rights; an admin.json from before platform keys (its key lost
// platform rights in migration 00003) keeps working: the next Up replaces
// the key in admin.json and the old key still acts for the team.
func TestAdminIsPlatformAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wrenn-cp: not in -short")
	}
	pool, dsn := pgtest.NewWithDSN(t)
	root := t.TempDir()
	bin, dir := filepath.Join(root, "bin"), filepath.Join(root, "wrenn")
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "wrenn-cp"), "./cmd/wrenn-cp")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build wrenn-cp: %v\n%s", err, out)
	}
	// Not started (NoAgent), but Up wants it built.
	if err := os.WriteFile(filepath.Join(bin, "wrenn-agent"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	up := func() *devstack.Stack {
		t.Helper()
		var progress strings.Builder
		// BinDir relative to the working directory, as make up passes it.
		st, err := devstack.Up(ctx, devstack.Config{
			Dir: dir, BinDir: filepath.Base(bin), CPAddr: freeAddr(t), DatabaseURL: dsn, NoAgent: true, Out: &progress,
			CPEnv: []string{"WRENN_METRICS_ADDR=" + freeAddr(t)},
		})
		if err != nil {
			t.Fatalf("up: %v\n%s", err, progress.String())
		}
		return st
	}
	call := func(st *devstack.Stack, method, path, cred string, body any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, st.URL+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	regular := map[string]string{"type": "regular"}

	st := up()
	first := st.Admin
	if code := call(st, "POST", "/v1/hosts", first.APIKey, regular); code != http.StatusCreated {
		t.Errorf("admin key adding a regular host: %d", code)
	}
	// The loopback stack keeps signup open; a newcomer is no platform admin.
	if code := call(st, "POST", "/v1/auth/signup", "", map[string]string{"email": "dev@example.com", "password": "correct horse battery staple"}); code != http.StatusCreated {
		t.Errorf("signup on the loopback stack: %d", code)
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// An installation from before: keys had no platform flag.
	if _, err := pool.Exec(ctx, "UPDATE api_keys SET platform = false"); err != nil {
		t.Fatal(err)
	}
	st = up()
	if st.Admin.APIKey == first.APIKey || st.Admin.Email != first.Email || st.Admin.Password != first.Password || st.Admin.TeamID != first.TeamID {
		t.Errorf("admin after upgrade %+v, before %+v: want a new key, the rest kept", st.Admin, first)
	}
	saved, err := os.ReadFile(filepath.Join(dir, "admin.json"))
	if err != nil || !strings.Contains(string(saved), st.Admin.APIKey) {
		t.Errorf("admin.json not updated: %s %v", saved, err)
	}
	if code := call(st, "POST", "/v1/hosts", st.Admin.APIKey, regular); code != http.StatusCreated {
		t.Errorf("new admin key adding a regular host: %d", code)
	}
	if code := call(st, "POST", "/v1/hosts", first.APIKey, regular); code != http.StatusForbidden {
		t.Errorf("old key (no platform rights) adding a regular host: %d, want 403", code)
	}
	if code := call(st, "GET", "/v1/sandboxes", first.APIKey, nil); code != http.StatusOK {
		t.Errorf("old key listing the team's sandboxes: %d", code)
	}
	// A third start keeps the platform key.
	second := st.Admin
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st = up()
	defer st.Close(context.Background())
	if st.Admin != second {
		t.Errorf("third start: %+v, want %+v", st.Admin, second)
	}
}
