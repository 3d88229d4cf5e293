package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wrenn/wrenn/internal/store"
)

// connectErr is what pgx gives when PostgreSQL refuses connections: a
// real one, from dialling a closed port.
func connectErr(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, "postgres://u@127.0.0.1:1/db?connect_timeout=5")
	if err == nil {
		t.Fatal("connected to port 1")
	}
	return err
}

func TestIsUnavailable(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused", connectErr(t), true},
		{"wrapped refused", fmt.Errorf("load sandbox: %w", connectErr(t)), true},
		{"shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"cut mid-statement", fmt.Errorf("query: %w", io.ErrUnexpectedEOF), true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"no rows", pgx.ErrNoRows, false},
		{"caller gave up", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"other", errors.New("boom"), false},
	} {
		if got := store.IsUnavailable(c.err); got != c.want {
			t.Errorf("%s (%v): IsUnavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestRetryUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("waits out an outage", func(t *testing.T) {
		down := connectErr(t)
		n := 0
		err := store.RetryUnavailable(ctx, time.Minute, func(context.Context) error {
			n++
			if n < 3 {
				return down
			}
			return nil
		})
		if err != nil || n != 3 {
			t.Fatalf("err %v after %d calls, want nil after 3", err, n)
		}
	})
	t.Run("does not retry other errors", func(t *testing.T) {
		n := 0
		err := store.RetryUnavailable(ctx, time.Minute, func(context.Context) error { n++; return pgx.ErrNoRows })
		if !errors.Is(err, pgx.ErrNoRows) || n != 1 {
			t.Fatalf("err %v after %d calls", err, n)
		}
	})
	t.Run("gives up after its bound", func(t *testing.T) {
		down := &pgconn.PgError{Code: "57P03"}
		n := 0
		start := time.Now()
		err := store.RetryUnavailable(ctx, 500*time.Millisecond, func(context.Context) error { n++; return down })
		if !store.IsUnavailable(err) || n < 2 {
			t.Fatalf("err %v after %d calls", err, n)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v for a 500 ms bound", d)
		}
	})
	t.Run("ends with its context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		n := 0
		err := store.RetryUnavailable(cctx, time.Minute, func(context.Context) error {
			n++
			if n == 2 {
				cancel()
			}
			return &pgconn.PgError{Code: "57P01"}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want one naming the cancellation", err)
		}
	})
}
