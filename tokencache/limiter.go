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
	// PerMinute is the most token requests that arrive at the provider in
	// any rolling minute (see the promise in window.go).
	PerMinute int
	// Burst is how many of them may go back to back (1 ≤ Burst ≤ PerMinute);
	// after a burst, requests are spaced at PerMinute per minute.
	Burst int
	// Margin lengthens the provider's window for each request; 0 means
	// DefaultMargin.
	Margin time.Duration
	// Window is the provider's counting window; 0 means BankWindow. Only
	// providers that count over another period, and tests, set it.
	Window time.Duration
}

// DefaultBudget is deliberately small: a token lives minutes, so a healthy
// route needs well under one fetch a minute, and the providers' throttles are
// per source IP, shared by every process behind it.
var DefaultBudget = Budget{PerMinute: 6, Burst: 2}

// Hold is how long after its completion a request still counts against the
// budget: the provider's window plus the margin.
func (b Budget) Hold() time.Duration {
	w, m := b.Window, b.Margin
	if w <= 0 {
		w = BankWindow
	}
	if m <= 0 {
		m = DefaultMargin
	}
	return w + m
}

// Back-off after a 429 that carries no Retry-After: exponential from
// backoffBase, doubled per consecutive 429, capped, with jitter.
const (
	backoffBase = 2 * time.Second
	backoffMax  = 5 * time.Minute
)

// Pacer decides when a token request may be sent to one authorization host.
// The Limiter paces one process; a shared store paces all replicas.
type Pacer interface {
	// Acquire waits for permission to send one token request, at most
	// maxWait and never past ctx's deadline; when permission would come
	// later it returns a *ThrottledError at once. The caller must call the
	// permit's Done when the request has completed, whatever its outcome.
	Acquire(ctx context.Context, maxWait time.Duration) (Permit, error)
	// Throttled records a 429 from the host; retryAfter is the provider's
	// Retry-After, 0 when it sent none. It returns how long nothing will be sent.
	Throttled(retryAfter time.Duration) time.Duration
	// Succeeded records a successful request (it ends the 429 strike count).
	Succeeded()
	// BackoffRemaining is how long the current back-off lasts, or 0.
	BackoffRemaining() time.Duration
}

// Permit is permission to send one request.
type Permit struct {
	// Waited is how long Acquire slept for it: exactly 0 when it was granted
	// at once.
	Waited time.Duration
	done   func()
}

// NewPermit returns a permit whose Done calls done (for Pacer implementations).
func NewPermit(waited time.Duration, done func()) Permit { return Permit{Waited: waited, done: done} }

// Done records that the request completed.
func (p Permit) Done() {
	if p.done != nil {
		p.done()
	}
}

// farFuture stands for the unknown completion time of a request in flight.
var farFuture = time.Unix(1<<62, 0)

// Limiter paces token requests to one authorization host from this process:
// it keeps the promise of window.go for Budget.PerMinute requests, spaces
// requests after a burst, and sends nothing during a back-off after a 429.
type Limiter struct {
	mu           sync.Mutex
	budget       Budget
	rl           *rate.Limiter
	sent         []slot        // requests still counting; guarded by mu
	changed      chan struct{} // closed and replaced when a request completes
	seq          uint64
	backoffUntil time.Time
	strikes      int // consecutive 429s
	scratch      []time.Time
}

type slot struct {
	id    uint64
	until time.Time
}

// NewLimiter returns a Limiter for budget; zero PerMinute and Burst take
// DefaultBudget's. A budget of PerMinute < 0 sends nothing.
func NewLimiter(b Budget) *Limiter {
	if b.PerMinute == 0 {
		b.PerMinute = DefaultBudget.PerMinute
	}
	if b.Burst <= 0 {
		b.Burst = min(DefaultBudget.Burst, b.PerMinute)
	}
	b.Burst = max(min(b.Burst, b.PerMinute), 1)
	l := &Limiter{budget: b, changed: make(chan struct{})}
	l.rl = rate.NewLimiter(rate.Every(b.Hold()/time.Duration(max(b.PerMinute, 1))), b.Burst)
	return l
}

// Budget returns the limiter's effective budget.
func (l *Limiter) Budget() Budget {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.budget
}

// Acquire implements Pacer.
func (l *Limiter) Acquire(ctx context.Context, maxWait time.Duration) (Permit, error) {
	start := time.Now()
	deadline := start.Add(maxWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	slept := false
	for range 10_000 { // each turn sleeps until something changed; the deadline ends it long before
		at, reason, ch, p, ok := l.try()
		if ok {
			if slept {
				p.Waited = time.Since(start)
			}
			return p, nil
		}
		now := time.Now()
		if at.IsZero() {
			return Permit{}, &ThrottledError{RetryAfter: time.Minute, Reason: "the token request budget is zero"}
		}
		if at.After(deadline) {
			retry := at.Sub(now)
			if at.Equal(farFuture) {
				retry = time.Second
			}
			return Permit{}, &ThrottledError{RetryAfter: retry, Reason: reason}
		}
		if err := backoff.Sleep(ctx, at.Sub(now), ch); err != nil {
			return Permit{}, err
		}
		slept = true
	}
	return Permit{}, &ThrottledError{RetryAfter: time.Second, Reason: "the token request budget is contended"}
}

// try grants a permit now, or says until when (and why) to wait; ch closes
// when a request completes.
func (l *Limiter) try() (at time.Time, reason string, ch <-chan struct{}, p Permit, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.backoffUntil.After(now) {
		return l.backoffUntil, "the token endpoint answered 429; backing off", l.changed, Permit{}, false
	}
	l.scratch = l.scratch[:0]
	live := l.sent[:0]
	for _, s := range l.sent {
		if s.until.After(now) {
			live = append(live, s)
			l.scratch = append(l.scratch, s.until)
		}
	}
	l.sent = live
	at = nextSend(now, l.scratch, l.budget.PerMinute)
	if !at.Equal(now) {
		return at, "the per-minute token request budget is spent", l.changed, Permit{}, false
	}
	r := l.rl.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return now.Add(d), "token requests are spaced after a burst", l.changed, Permit{}, false
	}
	l.seq++
	id := l.seq
	l.sent = append(l.sent, slot{id: id, until: farFuture})
	return now, "", nil, Permit{done: func() { l.complete(id) }}, true
}

// complete starts the hold of request id at its completion.
func (l *Limiter) complete(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.sent {
		if l.sent[i].id == id {
			l.sent[i].until = time.Now().Add(l.budget.Hold())
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Counting returns the completion-plus-hold times of the requests that
// still count, relative to now (in flight: -1), for handing over to a
// shared budget.
func (l *Limiter) Counting() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	var out []time.Duration
	for _, s := range l.sent {
		switch {
		case s.until.Equal(farFuture):
			out = append(out, -1)
		case s.until.After(now):
			out = append(out, s.until.Sub(now))
		}
	}
	return out
}

// Throttled implements Pacer.
func (l *Limiter) Throttled(retryAfter time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.strikes++
	d := retryAfter
	if d <= 0 {
		d = BackoffDelay(l.strikes, rand.Float64()) //nolint:gosec // jitter, not a secret
	}
	if until := time.Now().Add(d); until.After(l.backoffUntil) {
		l.backoffUntil = until
	}
	return time.Until(l.backoffUntil)
}

// Succeeded implements Pacer.
func (l *Limiter) Succeeded() {
	l.mu.Lock()
	l.strikes = 0
	l.mu.Unlock()
}

// BackoffRemaining implements Pacer.
func (l *Limiter) BackoffRemaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(time.Until(l.backoffUntil), 0)
}

// BackoffDelay is the wait after the n-th consecutive 429 without
// Retry-After: backoffBase·2^(n-1) capped at backoffMax, jittered into
// [d/2, d) by u ∈ [0,1) so replicas do not retry in step.
func BackoffDelay(n int, u float64) time.Duration {
	return backoff.Delay(n, backoffBase, backoffMax, u)
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
	l, ok := ls.m[host]
	if !ok {
		l = NewLimiter(budget)
		ls.m[host] = l
		return l
	}
	nb := NewLimiter(budget).budget
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.budget
	if nb.PerMinute < cur.PerMinute || nb.Burst < cur.Burst || nb.Hold() > cur.Hold() {
		merged := Budget{PerMinute: min(nb.PerMinute, cur.PerMinute), Burst: min(nb.Burst, cur.Burst),
			Margin: max(nb.Margin, cur.Margin), Window: max(nb.Window, cur.Window)}
		l.budget = merged
		l.rl = NewLimiter(merged).rl
	}
	return l
}
