package guestinit

import (
	"reflect"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name  string
		b     Backoff
		runs  []time.Duration // how long each run lasted
		delay []time.Duration // the delays Next must return
	}{
		{
			name:  "doubles to the cap",
			b:     Backoff{Min: 100 * ms, Max: time.Second, Reset: 10 * time.Second},
			runs:  []time.Duration{0, 0, 0, 0, 0, 0, 0},
			delay: []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second},
		},
		{
			name:  "a healthy run resets",
			b:     Backoff{Min: 100 * ms, Max: time.Second, Reset: 10 * time.Second},
			runs:  []time.Duration{0, 0, 0, 10 * time.Second, 0},
			delay: []time.Duration{100 * ms, 200 * ms, 400 * ms, 100 * ms, 200 * ms},
		},
		{
			name:  "cap not a power-of-two multiple",
			b:     Backoff{Min: 300 * ms, Max: time.Second, Reset: time.Minute},
			runs:  []time.Duration{0, 0, 0, 0},
			delay: []time.Duration{300 * ms, 600 * ms, time.Second, time.Second},
		},
		{
			name:  "zero min means no delay",
			b:     Backoff{Max: time.Second, Reset: time.Minute},
			runs:  []time.Duration{0, 0},
			delay: []time.Duration{0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			var got []time.Duration
			for _, r := range tt.runs {
				got = append(got, b.Next(r))
			}
			if !reflect.DeepEqual(got, tt.delay) {
				t.Errorf("delays = %v, want %v", got, tt.delay)
			}
		})
	}
}

func TestBackoffManyFailuresStayAtCap(t *testing.T) {
	b := Backoff{Min: time.Nanosecond, Max: time.Hour, Reset: time.Hour}
	var d time.Duration
	for i := 0; i < 10000; i++ {
		d = b.Next(0)
	}
	if d != time.Hour {
		t.Errorf("after 10000 failures delay = %v, want the cap %v", d, time.Hour)
	}
}
