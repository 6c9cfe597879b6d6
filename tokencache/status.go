package tokencache

import (
	"context"
	"errors"
	"time"
)

// State is what a Cache holds, for the status page: no token value, no
// credential.
type State struct {
	// Cached reports whether the route-wide token is held and may be sent.
	Cached bool
	// Expiry is the route-wide token's expiry (zero without one).
	Expiry time.Time
	// Subjects counts the customers whose token is held and may be sent
	// (routes with a token per customer).
	Subjects int
	// LastFetch is when the last token request (or shared-store refresh
	// that failed) started; zero before the first.
	LastFetch time.Time
	// LastResult is its result, as tokenproxy_token_fetches_total counts
	// it: ok, throttled, rejected, timeout, consent_required, error.
	LastResult string
	// LastError is its error message, "" after a success. It never holds a
	// token, a credential or a customer's name.
	LastError string
}

// fetchRecord is one fetch's outcome.
type fetchRecord struct {
	at     time.Time
	result string
	msg    string
}

// record keeps the outcome of the fetch that started at start.
func (c *Cache) record(start time.Time, err error) {
	r := &fetchRecord{at: start, result: resultOf(err)}
	var ce *ConsentRequiredError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		// The message names the customer: say only why.
		r.msg = "no usable consent for a customer"
		if ce.Cause != "" {
			r.msg += ": " + ce.Cause
		}
	default:
		r.msg = err.Error()
	}
	c.last.Store(r)
}

// State reports what the cache holds now. It takes no lock; with a token
// per customer it visits every customer's entry.
func (c *Cache) State() State {
	now := time.Now()
	var s State
	if t := c.route.cur.Load(); t != nil {
		s.Expiry = t.Expiry
		s.Cached = now.Before(t.usableUntil)
	}
	c.subjects.Range(func(_, v any) bool {
		if t := v.(*entry).cur.Load(); t != nil && now.Before(t.usableUntil) {
			s.Subjects++
		}
		return true
	})
	if r := c.last.Load(); r != nil {
		s.LastFetch, s.LastResult, s.LastError = r.at, r.result, r.msg
	}
	return s
}

// Usage is an authorization host's token request budget as the provider
// counts it: the requests that may still arrive in its window.
type Usage struct {
	// Used counts the requests that still count in the provider's window
	// (those in flight included); Limit is N, the requests per window.
	Used, Limit int
	// Window is how long each request counts after it completes: the
	// provider's window plus the margin.
	Window time.Duration
	// NextFree is the earliest time one more request may be sent (now when
	// one may go at once; zero when the budget allows none). It includes a
	// back-off after a 429 and the spacing after a burst.
	NextFree time.Time
	// BackoffUntil is the end of the back-off after a 429 (zero without one).
	BackoffUntil time.Time
	// Shared reports a budget shared by every replica (in Redis).
	Shared bool
}

// UsageReporter is a Pacer that reports its budget's usage.
type UsageReporter interface {
	Usage(ctx context.Context) (Usage, error)
}

// Budget reports the usage of the budget that paces the cache's token
// requests; ok is false when its pacer cannot say.
func (c *Cache) Budget(ctx context.Context) (u Usage, ok bool, err error) {
	r, ok := c.pacer.(UsageReporter)
	if !ok {
		return Usage{}, false, nil
	}
	u, err = r.Usage(ctx)
	return u, true, err
}

// AuthHost is the authorization host whose budget paces the cache.
func (c *Cache) AuthHost() string { return c.src.Host() }

// Usage implements UsageReporter: this process's requests to the host.
func (l *Limiter) Usage(context.Context) (Usage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	u := Usage{Limit: l.budget.PerMinute, Window: l.budget.Hold()}
	var until []time.Time
	for _, s := range l.sent {
		if s.until.After(now) {
			until = append(until, s.until)
		}
	}
	u.Used = len(until)
	next := nextSend(now, until, l.budget.PerMinute)
	if next.Equal(farFuture) {
		next = time.Time{} // a full window of requests in flight: free once one completes
	}
	if !next.IsZero() {
		if tokens := l.rl.TokensAt(now); tokens < 1 {
			spaced := now.Add(time.Duration((1 - tokens) / float64(l.rl.Limit()) * float64(time.Second)))
			next = later(next, spaced)
		}
		if l.backoffUntil.After(now) {
			u.BackoffUntil = l.backoffUntil
			next = later(next, l.backoffUntil)
		}
	}
	u.NextFree = next
	return u, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
