package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wrenn/wrenn/internal/errdefs"
)

// Found maps a lookup's "no rows" to errdefs.ErrNotFound naming what was
// looked for (kind and id), and wraps any other error with the same
// words; nil stays nil. One place decides what a missing row answers, so
// every caller's 404 reads the same. Another team's row is looked up with
// its team in the WHERE clause and so is missing too.
func Found(err error, kind, id string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return errdefs.New(errdefs.ErrNotFound, "%s %q not found", kind, id)
	default:
		return fmt.Errorf("load %s %s: %w", kind, id, err)
	}
}

// IsNoRows reports whether err says a statement matched no row (a guarded
// update whose precondition no longer held).
func IsNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// IsUniqueViolation reports whether err is PostgreSQL refusing a
// duplicate key (a name or id already taken).
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
