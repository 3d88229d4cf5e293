package envd

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// setSystemClock sets CLOCK_REALTIME; it needs CAP_SYS_TIME.
func setSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("clock_settime: %w", err)
	}
	return nil
}
