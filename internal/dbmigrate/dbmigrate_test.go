package dbmigrate_test

import (
	"context"
	"testing"

	"github.com/wrenn/wrenn/internal/dbmigrate"
	"github.com/wrenn/wrenn/internal/pgtest"
)

// TestUpDownUp proves every migration rolls back cleanly and reapplies.
func TestUpDownUp(t *testing.T) {
	pool := pgtest.New(t) // already migrated up
	ctx := context.Background()
	count := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`).Scan(&n); err != nil {
			t.Fatalf("count tables: %v", err)
		}
		return n
	}
	up := count()
	if up < 9 {
		t.Fatalf("after up: %d tables, want at least 9", up)
	}
	if err := dbmigrate.DownAll(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("after down: %d tables remain", n)
	}
	if err := dbmigrate.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != up {
		t.Fatalf("after re-up: %d tables, want %d", n, up)
	}
}
