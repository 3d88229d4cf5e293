package guestinit

import "time"

// Backoff spaces out restarts of a supervised process: Min after the first
// quick death, doubling up to Max. A run that lasted at least Reset counts as
// healthy and starts the sequence over.
type Backoff struct {
	Min, Max, Reset time.Duration

	failures int
}

// Next returns the delay before the next start, given how long the last run
// lasted.
func (b *Backoff) Next(ranFor time.Duration) time.Duration {
	if ranFor >= b.Reset {
		b.failures = 0
	}
	if b.Min <= 0 {
		return 0
	}
	d := b.Min
	for i := 0; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if d < b.Max {
		// Stop counting once at the cap, so the count cannot overflow.
		b.failures++
	}
	return d
}
