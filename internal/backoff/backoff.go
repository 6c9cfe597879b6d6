// Package backoff computes the wait before a retry. It is the one place the
// project's exponential back-off with jitter is defined: the Vault client's
// breaker and login loop and the token limiter's 429 back-off all use Delay.
package backoff

import (
	"context"
	"time"
)

// Delay is the wait before retry number n (1 for the first retry after a
// failure): base doubled per further failure and capped at maxDelay, then
// jittered into [d/2, d] by u in [0, 1] ("equal jitter"), so replicas that
// failed together do not retry in step and the wait never exceeds maxDelay.
// n below 1 counts as 1; u outside [0, 1] is clamped. Delay is pure: callers
// pass the random u (rand.Float64()), so a schedule is tested without clocks.
func Delay(n int, base, maxDelay time.Duration, u float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	u = min(max(u, 0), 1)
	return d/2 + time.Duration(u*float64(d/2))
}

// Sleep waits d, or until wake closes (a nil wake never does) or ctx ends,
// whichever comes first; only the last returns an error (ctx's).
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
