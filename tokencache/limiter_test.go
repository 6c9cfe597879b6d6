package tokencache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

func TestNextSend(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name  string
		until []time.Time
		limit int
		want  time.Time
	}{
		{"empty", nil, 3, t0},
		{"below limit", []time.Time{at(5), at(1)}, 3, t0},
		{"expired entries do not count", []time.Time{at(0), at(-1), at(2)}, 2, t0},
		{"full: earliest expiry frees a slot", []time.Time{at(9), at(4), at(7)}, 3, at(4)},
		{"over full: wait for enough to expire", []time.Time{at(9), at(4), at(7), at(5)}, 2, at(7)},
		{"in flight blocks until its completion", []time.Time{farFuture, farFuture}, 2, farFuture},
		{"limit 1", []time.Time{at(62)}, 1, at(62)},
		{"zero budget", nil, 0, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextSend(t0, slices.Clone(tc.until), tc.limit); !got.Equal(tc.want) {
				t.Fatalf("nextSend = %v, want %v", got.Sub(t0), tc.want.Sub(t0))
			}
		})
	}
}

func maxInWindow(ts []time.Time, w time.Duration) int {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best := 0
	for i := range ts {
		n := 0
		for j := i; j < len(ts) && ts[j].Sub(ts[i]) < w; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

// bank is a token endpoint double that counts requests by arrival time, as
// a provider's per-IP throttle does: a request arrives after its connection
// set-up and is answered after processing.
type bank struct {
	setup   func(i int64) time.Duration // delay from send to arrival of the i-th request
	process time.Duration
	n       atomic.Int64

	mu       sync.Mutex
	arrivals []time.Time
}

func (b *bank) Host() string { return "bank.example" }

func (b *bank) Fetch(ctx context.Context, _ string) (*Token, error) {
	i := b.n.Add(1)
	if err := backoff.Sleep(ctx, b.setup(i), nil); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.arrivals = append(b.arrivals, time.Now())
	b.mu.Unlock()
	if err := backoff.Sleep(ctx, b.process, nil); err != nil {
		return nil, err
	}
	return &Token{Value: "t", Header: "Bearer t", Expiry: time.Now().Add(time.Hour), Issued: time.Now()}, nil
}

// A storm of forced refreshes (every token rejected upstream) never puts more
// than PerMinute arrivals in any 60 s window at the bank, whatever the
// connection set-up costs; callers get a ThrottledError with a retry hint
// instead of waiting forever.
func TestBudgetAsBankCounts(t *testing.T) {
	tests := []struct {
		name    string
		budget  Budget
		setup   func(i int64) time.Duration
		process time.Duration
	}{
		// The released binary's failure: the first request paid a TLS handshake.
		{"handshake on the first request", Budget{PerMinute: 10, Burst: 10}, func(i int64) time.Duration {
			if i == 1 {
				return 400 * time.Millisecond
			}
			return 4 * time.Millisecond
		}, 10 * time.Millisecond},
		{"default budget", Budget{PerMinute: 6, Burst: 2}, func(i int64) time.Duration { return time.Duration(i%7) * 90 * time.Millisecond }, 50 * time.Millisecond},
		{"arrival just before the answer", Budget{PerMinute: 5, Burst: 5}, func(i int64) time.Duration { return time.Duration(i%3) * 4 * time.Second }, time.Millisecond},
		{"limit 1", Budget{PerMinute: 1, Burst: 1}, func(int64) time.Duration { return 300 * time.Millisecond }, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := &bank{setup: tc.setup, process: tc.process}
				c, err := New(b, NewLimiter(tc.budget), Options{Route: "r", Skew: time.Second, MaxWait: 2 * time.Second, FetchTimeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				var throttled atomic.Int64
				var wg sync.WaitGroup
				for w := range 20 {
					wg.Go(func() {
						for i := range 300 {
							ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
							tok, _, err := c.Get(ctx, "")
							cancel()
							var te *ThrottledError
							switch {
							case errors.As(err, &te):
								if te.RetryAfter <= 0 {
									t.Errorf("throttled without a retry hint")
								}
								throttled.Add(1)
							case err != nil:
								t.Errorf("worker %d call %d: %v", w, i, err)
							default:
								c.Invalidate("", tok) // as an upstream 401 would
							}
							time.Sleep(time.Second)
						}
					})
				}
				wg.Wait()
				b.mu.Lock()
				defer b.mu.Unlock()
				if got := maxInWindow(b.arrivals, BankWindow); got > tc.budget.PerMinute {
					t.Fatalf("%d token requests arrived within one minute; budget %d", got, tc.budget.PerMinute)
				}
				// The budget is used, not merely respected: at least N per 62 s
				// plus the time requests take.
				if least := 4 * tc.budget.PerMinute; len(b.arrivals) < least {
					t.Fatalf("%d requests in 5 minutes; the budget allows at least %d", len(b.arrivals), least)
				}
				if throttled.Load() == 0 {
					t.Fatal("no caller was throttled in a storm")
				}
				t.Logf("%d arrivals over %v, %d throttled answers", len(b.arrivals), b.arrivals[len(b.arrivals)-1].Sub(b.arrivals[0]), throttled.Load())
			})
		})
	}
}

// After a 429 with Retry-After nothing is sent until it has passed.
func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, retry: 30 * time.Second}
		src.throttle.Store(1)
		obs := &countingObserver{}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 10}, time.Second, func(o *Options) { o.Observer = obs })
		start := time.Now()
		_, _, err := c.Get(t.Context(), "")
		var te *ThrottledError
		if !errors.As(err, &te) || te.RetryAfter != 30*time.Second {
			t.Fatalf("first Get: %v; want throttled for 30s", err)
		}
		for time.Since(start) < 29*time.Second {
			if _, _, err := c.Get(t.Context(), ""); !errors.As(err, &te) {
				t.Fatalf("during back-off: %v", err)
			}
			time.Sleep(time.Second)
		}
		if n := src.fetches.Load(); n != 1 {
			t.Fatalf("%d token requests during the back-off; want only the first", n)
		}
		time.Sleep(2 * time.Second)
		if _, _, err := c.Get(t.Context(), ""); err != nil {
			t.Fatalf("after back-off: %v", err)
		}
		if src.fetches.Load() != 2 || obs.throttled.Load() != 1 {
			t.Fatalf("%d fetches, %d 429s observed", src.fetches.Load(), obs.throttled.Load())
		}
	})
}

// A 429 without Retry-After backs off exponentially, decided by the cache.
func TestBackoffWithoutRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour}
		src.throttle.Store(1)
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 10}, time.Millisecond)
		_, _, err := c.Get(t.Context(), "")
		var te *ThrottledError
		if !errors.As(err, &te) || te.RetryAfter < time.Second || te.RetryAfter > 2*time.Second {
			t.Fatalf("first Get: %v; want a back-off in [1s, 2s]", err)
		}
	})
}

// A caller willing to wait longer than the back-off waits it out.
func TestWaitsOutShortBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, retry: 2 * time.Second}
		src.throttle.Store(1)
		obs := &countingObserver{}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 10}, 5*time.Second, func(o *Options) { o.Observer = obs })
		if _, _, err := c.Get(t.Context(), ""); err == nil {
			t.Fatal("expected the 429 to surface")
		}
		if obs.waits.Load() != 0 {
			t.Fatalf("a fetch sent at once counted as a limiter wait")
		}
		start := time.Now()
		if _, _, err := c.Get(t.Context(), ""); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if waited := time.Since(start); waited < 2*time.Second {
			t.Fatalf("sent after %v, before Retry-After", waited)
		}
		if obs.waits.Load() != 1 {
			t.Fatalf("limiter waits %d, want 1", obs.waits.Load())
		}
	})
}

// token_limiter_waits_total counts only fetches that waited.
func TestLimiterWaitCountsOnlyWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &countingObserver{}
		src := &fakeSource{ttl: time.Hour, delay: 5 * time.Millisecond}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 2}, 10*time.Second, func(o *Options) { o.Observer = obs })
		for i := range 4 {
			tok, _, err := c.Get(t.Context(), "")
			if err != nil {
				t.Fatal(err)
			}
			c.Invalidate("", tok)
			if want := int64(max(i-1, 0)); obs.waits.Load() != want {
				t.Fatalf("after %d fetches: %d waits, want %d", i+1, obs.waits.Load(), want)
			}
		}
	})
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		n        int
		u        float64
		min, max time.Duration
	}{
		{1, 0, time.Second, time.Second},
		{1, 0.999, time.Second, 2 * time.Second},
		{2, 0, 2 * time.Second, 2 * time.Second},
		{3, 0.5, 6 * time.Second, 6 * time.Second},
		{20, 0, backoffMax / 2, backoffMax / 2},
		{20, 0.999, backoffMax / 2, backoffMax},
		{0, 0, time.Second, time.Second},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d u=%v", tc.n, tc.u), func(t *testing.T) {
			if d := BackoffDelay(tc.n, tc.u); d < tc.min || d > tc.max {
				t.Fatalf("BackoffDelay = %v, want in [%v, %v]", d, tc.min, tc.max)
			}
		})
	}
}

func TestLimitersShareHost(t *testing.T) {
	var ls Limiters
	a := ls.For("auth.example", Budget{PerMinute: 10, Burst: 3})
	b := ls.For("auth.example", Budget{PerMinute: 4, Burst: 1})
	if a != b {
		t.Fatal("two limiters for one host")
	}
	if got := a.Budget(); got.PerMinute != 4 || got.Burst != 1 {
		t.Fatalf("shared budget %+v; want the smaller", got)
	}
	if ls.For("other.example", Budget{}) == a {
		t.Fatal("hosts share a limiter")
	}
}
