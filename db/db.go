// Package db holds the control plane's SQL contract: goose migrations
// (embedded, applied at start-up) and the sqlc query sources that generate
// internal/store.
package db

import "embed"

// Migrations are the goose migrations, in order.
//
//go:embed migrations/*.sql
var Migrations embed.FS
