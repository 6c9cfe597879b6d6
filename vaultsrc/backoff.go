package vaultsrc

import (
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

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
	b.openUntil = now.Add(backoff.Delay(b.failures, b.base, b.max, b.jitter()))
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
	b.openUntil = now.Add(backoff.Delay(b.failures, b.base, b.max, b.jitter()))
	return b.failures == 1
}
