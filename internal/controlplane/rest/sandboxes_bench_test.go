package rest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/wrenn/wrenn/internal/controlplane/auth"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// benchEnv is an API server on its own database with one team and API key,
// built without the signup route so benchmarks can use it.
type benchEnv struct {
	*sbEnv
	url string
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	pool := pgtest.New(b)
	fa := &fakeAgents{agents: map[uuid.UUID]*fakeAgent{}}
	srv := New(Deps{Pool: pool, Clock: newFakeClock(), JWTSecret: []byte("0123456789abcdef0123456789abcdef"),
		Domain: "wrenn.test", RateLimit: 1e9, Agents: fa})
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	ctx := context.Background()
	var team uuid.UUID
	if err := pool.QueryRow(ctx, `INSERT INTO teams (name) VALUES ('bench') RETURNING id`).Scan(&team); err != nil {
		b.Fatal(err)
	}
	k, err := auth.GenerateAPIKey()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO api_keys (team_id, name, prefix, key_hash) VALUES ($1, 'bench', $2, $3)`, team, k.Prefix, k.Hash); err != nil {
		b.Fatal(err)
	}
	env := &sbEnv{testEnv: &testEnv{Srv: hs, Pool: pool, Server: srv}, agents: fa, team: testTeam{ID: team, Key: k.Key}}
	return &benchEnv{sbEnv: env, url: hs.URL}
}

func (e *benchEnv) get(b *testing.B, path string) {
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.team.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
}

// BenchmarkListSandboxes is GET /v1/sandboxes throughput over 1000 rows of
// the caller's team (among 3000 in all), through the real router,
// authentication included.
func BenchmarkListSandboxes(b *testing.B) {
	env := newBenchEnv(b)
	states := []string{"running", "paused", "stopped", "running"}
	insertSandboxes(b, env.sbEnv, env.team.ID, 1000,
		func(i int) string { return states[i%4] },
		func(i int) string { return fmt.Sprintf(`{"group":"g%d"}`, i%10) })
	for t := range 2 {
		var other uuid.UUID
		if err := env.Pool.QueryRow(context.Background(), `INSERT INTO teams (name) VALUES ('noise') RETURNING id`).Scan(&other); err != nil {
			b.Fatal(err)
		}
		_, err := env.Pool.Exec(context.Background(), `INSERT INTO sandboxes (id, team_id, template, state, vcpus, memory_mb, disk_mb, timeout_sec, on_timeout)
			SELECT 'noise-' || $2::text || '-' || g, $1, 'minimal', 'running', 1, 512, 2048, 300, 'kill' FROM generate_series(1, 1000) g`, other, fmt.Sprint(t))
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := env.Pool.Exec(context.Background(), `ANALYZE sandboxes`); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, query string }{
		{"first-page-100", "/v1/sandboxes?limit=100"},
		{"page-1000", "/v1/sandboxes?limit=1000&state=running,paused,stopped"},
		{"metadata-filter", "/v1/sandboxes?metadata=group=g3"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				env.get(b, bc.query)
			}
		})
	}
}
