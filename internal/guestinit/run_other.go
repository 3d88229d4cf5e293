//go:build !linux

package guestinit

import (
	"context"
	"errors"
	"log/slog"
)

// Run fails: wrenn-init is the init of a Linux guest.
func Run(ctx context.Context, log *slog.Logger) error {
	return errors.New("wrenn-init runs only on Linux")
}
