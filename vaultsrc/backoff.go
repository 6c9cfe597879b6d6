package vaultsrc

import (
	"sync"
	"time"
)

// backoffDelay is the wait before attempt number n (1 for the first retry):
// base doubled per failure, capped at maxDelay, then scaled by a jitter factor
// in [0.75, 1.25) taken from jitter in [0, 1). It is a pure function so the
// schedule is tested without clocks.
func backoffDelay(n int, base, maxDelay time.Duration, jitter float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	if d > maxDelay {
		d = maxDelay
	}
	return time.Duration(float64(d) * (0.75 + jitter/2))
}

// breaker keeps the client from hammering an unreachable Vault. After a
// failure, requests fail fast with an *UnavailableError until the back-off
// delay has passed; then one request is let through as a probe (the window is
// pushed out again while it runs) and its success closes the breaker.
// It is safe for concurrent use; the zero value is closed.
type breaker struct {
	base, max time.Duration
	jitter    func() float64

	mu        sync.Mutex
	failures  int
	openUntil time.Time
}

// allow reports whether a request may go to Vault now; when not, it returns
// the time after which the next probe is allowed.
func (b *breaker) allow(now time.Time) (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures == 0 {
		return true, time.Time{}
	}
	if now.Before(b.openUntil) {
		return false, b.openUntil
	}
	// This caller probes; the others keep failing fast until it reports.
	b.openUntil = now.Add(backoffDelay(b.failures, b.base, b.max, b.jitter()))
	return true, time.Time{}
}

// success closes the breaker and reports whether it was open.
func (b *breaker) success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.failures > 0
	b.failures = 0
	b.openUntil = time.Time{}
	return was
}

// failure records an outage-type failure and reports whether the breaker was closed.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.openUntil = now.Add(backoffDelay(b.failures, b.base, b.max, b.jitter()))
	return b.failures == 1
}
