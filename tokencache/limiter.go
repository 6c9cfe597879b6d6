package tokencache

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

// Budget is a per-minute allowance of token requests to one authorization host.
type Budget struct {
	// PerMinute is the most token requests sent in any rolling minute.
	PerMinute int
	// Burst is how many of them may go back to back (1 ≤ Burst ≤ PerMinute).
	Burst int
}

// DefaultBudget is deliberately small: a token lives minutes, so a healthy
// route needs well under one fetch a minute, and the providers' throttles are
// per source IP, shared by every process behind it.
var DefaultBudget = Budget{PerMinute: 6, Burst: 2}

// Back-off after a 429 that carries no Retry-After: exponential from
// backoffBase, doubled per consecutive 429, capped, with jitter.
const (
	backoffBase = 2 * time.Second
	backoffMax  = 5 * time.Minute
)

// Limiter paces token requests to one authorization host. A token bucket
// refills at (PerMinute-Burst+1) per minute and holds Burst, which bounds any
// rolling minute to PerMinute requests. After a 429 nothing is sent until the
// back-off ends.
type Limiter struct {
	budget Budget
	rl     *rate.Limiter

	mu           sync.Mutex
	backoffUntil time.Time
	strikes      int // consecutive 429s
}

// NewLimiter returns a Limiter for budget; zero fields take DefaultBudget's.
func NewLimiter(b Budget) *Limiter {
	if b.PerMinute <= 0 {
		b.PerMinute = DefaultBudget.PerMinute
	}
	if b.Burst <= 0 {
		b.Burst = min(DefaultBudget.Burst, b.PerMinute)
	}
	if b.Burst > b.PerMinute {
		b.Burst = b.PerMinute
	}
	refill := b.PerMinute - b.Burst + 1
	return &Limiter{budget: b, rl: rate.NewLimiter(rate.Every(time.Minute/time.Duration(refill)), b.Burst)}
}

// Budget returns the limiter's effective budget.
func (l *Limiter) Budget() Budget { return l.budget }

// Acquire waits for permission to send one token request. It waits at most
// maxWait (and never past ctx's deadline); if permission would come later it
// returns a *ThrottledError at once, consuming nothing, so the caller can
// answer 503 with Retry-After instead of hanging. waited is how long it slept.
func (l *Limiter) Acquire(ctx context.Context, maxWait time.Duration) (waited time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(maxWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		now := time.Now()
		if until := l.backoffEnd(); until.After(now) {
			if until.After(deadline) {
				return now.Sub(start), &ThrottledError{RetryAfter: until.Sub(now), Reason: "the token endpoint answered 429; backing off"}
			}
			if err := sleep(ctx, until.Sub(now)); err != nil {
				return time.Since(start), err
			}
			continue
		}
		r := l.rl.ReserveN(now, 1)
		if !r.OK() {
			return 0, &ThrottledError{RetryAfter: time.Minute, Reason: "token request budget is zero"}
		}
		d := r.DelayFrom(now)
		if d == 0 {
			return now.Sub(start), nil
		}
		if now.Add(d).After(deadline) {
			r.CancelAt(now)
			return now.Sub(start), &ThrottledError{RetryAfter: d, Reason: "the per-minute token request budget is spent"}
		}
		if err := sleep(ctx, d); err != nil {
			r.Cancel()
			return time.Since(start), err
		}
		// A 429 seen by another route sharing this host while we slept wins.
		if until := l.backoffEnd(); until.After(time.Now()) {
			continue
		}
		return time.Since(start), nil
	}
}

// Throttled records a 429 from the authorization host. retryAfter is the
// provider's Retry-After when it sent one; otherwise the back-off grows
// exponentially with jitter. It returns how long nothing will be sent.
func (l *Limiter) Throttled(retryAfter time.Duration, hasRetryAfter bool) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.strikes++
	d := retryAfter
	if !hasRetryAfter {
		d = BackoffDelay(l.strikes, rand.Float64()) //nolint:gosec // jitter, not a secret
	}
	if until := time.Now().Add(d); until.After(l.backoffUntil) {
		l.backoffUntil = until
	}
	return time.Until(l.backoffUntil)
}

// Succeeded clears the 429 strike count after a successful fetch.
func (l *Limiter) Succeeded() {
	l.mu.Lock()
	l.strikes = 0
	l.mu.Unlock()
}

// BackoffRemaining returns how long the current back-off lasts, or 0.
func (l *Limiter) BackoffRemaining() time.Duration {
	if d := time.Until(l.backoffEnd()); d > 0 {
		return d
	}
	return 0
}

func (l *Limiter) backoffEnd() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.backoffUntil
}

// BackoffDelay is the wait after the n-th consecutive 429 without
// Retry-After: backoffBase·2^(n-1) capped at backoffMax, jittered into
// [d/2, d) by u ∈ [0,1) so replicas do not retry in step.
func BackoffDelay(n int, u float64) time.Duration {
	return backoff.Delay(n, backoffBase, backoffMax, u)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Limiters hands out one Limiter per authorization host, so routes that
// share a host share its budget.
type Limiters struct {
	mu sync.Mutex
	m  map[string]*Limiter
}

// For returns the limiter for host, creating it with budget on first use.
// When routes sharing a host configure different budgets, the smaller one
// applies.
func (ls *Limiters) For(host string, budget Budget) *Limiter {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.m == nil {
		ls.m = map[string]*Limiter{}
	}
	if l, ok := ls.m[host]; ok {
		cur := l.budget
		nb := NewLimiter(budget).budget
		if nb.PerMinute < cur.PerMinute || nb.Burst < cur.Burst {
			l2 := NewLimiter(Budget{PerMinute: min(nb.PerMinute, cur.PerMinute), Burst: min(nb.Burst, cur.Burst)})
			l.mu.Lock()
			l.budget, l.rl = l2.budget, l2.rl
			l.mu.Unlock()
		}
		return l
	}
	l := NewLimiter(budget)
	ls.m[host] = l
	return l
}
