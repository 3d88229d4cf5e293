// Package pgtest gives each test a fresh, migrated PostgreSQL database.
//
// The server is WRENN_TEST_DATABASE_URL when set (any database on it; the
// role must be allowed to create databases), otherwise a private cluster
// under $TMPDIR/wrenn-pgtest that is started on first use and shared by
// every test binary (pgcluster). Without PostgreSQL the test skips and says
// why, unless WRENN_TEST_REQUIRE_DB=1 (make test sets it) makes that a
// failure.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn/wrenn/internal/dbmigrate"
	"github.com/wrenn/wrenn/internal/pgcluster"
)

// New returns a pool on a new database with every migration applied. The
// database is dropped when the test ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, _ := NewWithDSN(t)
	return pool
}

// NewWithDSN is New that also returns the database's connection string
// (for tests that start a real wrenn-cp process).
func NewWithDSN(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := serverDSN(t, ctx)

	name := "wrenn_test_" + randomHex(6)
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to test postgresql: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close(ctx)
		t.Fatalf("create test database: %v", err)
	}
	admin.Close(ctx)

	dsn := withDatabase(t, base, name)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	if err := dbmigrate.Up(ctx, pool); err != nil {
		pool.Close()
		t.Fatalf("migrate test database: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return pool, dsn
}

// serverDSN finds (or starts) the server tests use.
func serverDSN(t testing.TB, ctx context.Context) string {
	t.Helper()
	if dsn := os.Getenv("WRENN_TEST_DATABASE_URL"); dsn != "" {
		return dsn
	}
	if _, err := pgcluster.BinDir(); err != nil {
		skipOrFail(t, err.Error()+"; or set WRENN_TEST_DATABASE_URL")
	}
	if os.Geteuid() == 0 {
		// The server runs as postgres; its directory must be reachable.
		_ = os.Chmod(os.TempDir(), 0o1777)
	}
	c := &pgcluster.Cluster{Dir: filepath.Join(os.TempDir(), "wrenn-pgtest")}
	// Several test binaries may start at once: one of them creates the
	// cluster, the others wait on the lock and find it running.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "wrenn-pgtest.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("open pgtest lock: %v", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock pgtest: %v", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if err := c.Start(ctx); err != nil {
		skipOrFail(t, "private postgresql cluster: "+err.Error())
	}
	return c.DSN("postgres")
}

func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("WRENN_TEST_REQUIRE_DB") == "1" {
		t.Fatalf("PostgreSQL required (WRENN_TEST_REQUIRE_DB=1): %s", why)
	}
	t.Skipf("skipping: no PostgreSQL: %s", why)
}

func withDatabase(t testing.TB, dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse database url: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}
