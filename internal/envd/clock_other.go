//go:build !linux

package envd

import (
	"errors"
	"time"
)

// setSystemClock is only implemented for Linux guests.
func setSystemClock(time.Time) error {
	return errors.New("setting the system clock is only supported on Linux")
}
