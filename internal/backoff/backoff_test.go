package backoff_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

func TestDelay(t *testing.T) {
	const base, maxDelay = 250 * time.Millisecond, 15 * time.Second
	tests := []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{n: 1, u: 0, want: 125 * time.Millisecond},
		{n: 1, u: 1, want: 250 * time.Millisecond},
		{n: 1, u: 0.5, want: 187500 * time.Microsecond},
		{n: 0, u: 1, want: 250 * time.Millisecond},  // below 1 counts as the first retry
		{n: -5, u: 1, want: 250 * time.Millisecond}, // likewise
		{n: 2, u: 1, want: 500 * time.Millisecond},  // doubled per failure
		{n: 3, u: 1, want: time.Second},             // and again
		{n: 7, u: 1, want: 15 * time.Second},        // 16s capped at the maximum
		{n: 7, u: 0, want: 7500 * time.Millisecond}, // jitter halves the cap at most
		{n: 1000, u: 1, want: 15 * time.Second},     // no overflow for long outages
		{n: 1000, u: 0.999999, want: 14999993 * time.Microsecond},
		{n: 1, u: -1, want: 125 * time.Millisecond}, // u clamped to 0
		{n: 1, u: 7, want: 250 * time.Millisecond},  // u clamped to 1
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d u=%v", tc.n, tc.u), func(t *testing.T) {
			if got := backoff.Delay(tc.n, base, maxDelay, tc.u); got.Round(time.Microsecond) != tc.want {
				t.Fatalf("Delay = %s, want %s", got, tc.want)
			}
		})
	}
}

// The wait never exceeds the cap and never falls below half of the un-jittered delay.
func TestDelayBounds(t *testing.T) {
	const base, maxDelay = time.Second, 5 * time.Minute
	prevFloor := time.Duration(0)
	for n := 1; n <= 64; n++ {
		lo, hi := backoff.Delay(n, base, maxDelay, 0), backoff.Delay(n, base, maxDelay, 1)
		if hi > maxDelay || lo != hi/2 || lo < prevFloor {
			t.Fatalf("n=%d: range [%s, %s] (previous floor %s)", n, lo, hi, prevFloor)
		}
		prevFloor = lo
	}
}
