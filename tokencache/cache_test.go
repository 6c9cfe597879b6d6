package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeSource hands out numbered tokens with a fixed TTL, or 429s while throttle > 0.
type fakeSource struct {
	ttl      time.Duration
	lim      *Limiter
	delay    time.Duration
	fetches  atomic.Int64
	throttle atomic.Int64
	retry    time.Duration // Retry-After sent with a 429; 0 means none

	mu    sync.Mutex
	times []time.Time
}

func (f *fakeSource) Host() string { return "auth.example" }

func (f *fakeSource) Fetch(ctx context.Context) (*Token, error) {
	n := f.fetches.Add(1)
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	f.mu.Unlock()
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.throttle.Load() > 0 {
		f.throttle.Add(-1)
		d := f.lim.Throttled(f.retry, f.retry > 0)
		return nil, &ThrottledError{RetryAfter: d, Reason: "429"}
	}
	v := fmt.Sprintf("tok-%d", n)
	return &Token{Value: v, Type: "Bearer", Header: "Bearer " + v, Expiry: time.Now().Add(f.ttl)}, nil
}

func newCache(src *fakeSource, b Budget, maxWait time.Duration) *Cache {
	lim := NewLimiter(b)
	src.lim = lim
	return New(src, lim, Options{Route: "r", Skew: 10 * time.Second, MaxWait: maxWait})
}

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: 5 * time.Minute, delay: 50 * time.Millisecond}
		c := newCache(src, Budget{PerMinute: 6, Burst: 1}, 10*time.Second)
		get1000 := func() map[string]int {
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[string]int{}
			for range 1000 {
				wg.Go(func() {
					tok, _, err := c.Get(t.Context())
					if err != nil {
						t.Errorf("Get: %v", err)
						return
					}
					mu.Lock()
					seen[tok.Value]++
					mu.Unlock()
				})
			}
			wg.Wait()
			return seen
		}
		if seen := get1000(); src.fetches.Load() != 1 || len(seen) != 1 {
			t.Fatalf("cold: %d fetches, tokens %v; want exactly 1", src.fetches.Load(), seen)
		}
		if get1000(); src.fetches.Load() != 1 {
			t.Fatalf("valid token: %d fetches; want no new fetch", src.fetches.Load()-1)
		}
		// Past expiry minus skew: exactly one more fetch for 1,000 callers.
		time.Sleep(5*time.Minute - 10*time.Second)
		if seen := get1000(); src.fetches.Load() != 2 || seen["tok-2"] != 1000 {
			t.Fatalf("expired: %d fetches, tokens %v; want 2 fetches and all callers on tok-2", src.fetches.Load(), seen)
		}
	})
}

func TestSkew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Minute}
		c := newCache(src, Budget{PerMinute: 60, Burst: 5}, time.Second)
		tok, out, _ := c.Get(t.Context())
		if out != Fetched {
			t.Fatalf("outcome %v", out)
		}
		time.Sleep(49 * time.Second)
		if t2, out, _ := c.Get(t.Context()); t2 != tok || out != Hit {
			t.Fatalf("within skew window: got %v %v", t2, out)
		}
		time.Sleep(1 * time.Second) // 50 s: expiry 60 s minus skew 10 s
		if t2, _, _ := c.Get(t.Context()); t2 == tok {
			t.Fatal("token reused inside the skew")
		}
	})
}

func TestInvalidateOnlyCurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour}
		c := newCache(src, Budget{PerMinute: 60, Burst: 5}, time.Second)
		old, _, _ := c.Get(t.Context())
		c.Invalidate(old)
		cur, _, _ := c.Get(t.Context())
		if cur == old || src.fetches.Load() != 2 {
			t.Fatalf("invalidate did not force a fetch")
		}
		c.Invalidate(old) // stale: must not drop cur
		if again, out, _ := c.Get(t.Context()); again != cur || out != Hit {
			t.Fatal("invalidating a stale token dropped the current one")
		}
	})
}

// A storm of forced refreshes (every token rejected upstream) sends at most
// PerMinute token requests in any minute, and callers get a ThrottledError
// with a retry hint instead of waiting forever.
func TestStormStaysInBudget(t *testing.T) {
	for _, b := range []Budget{{PerMinute: 5, Burst: 1}, {PerMinute: 5, Burst: 5}, {PerMinute: 12, Burst: 3}} {
		t.Run(fmt.Sprintf("%d/min burst %d", b.PerMinute, b.Burst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &fakeSource{ttl: time.Hour}
				c := newCache(src, b, 2*time.Second)
				var throttled atomic.Int64
				var wg sync.WaitGroup
				for w := range 20 {
					wg.Go(func() {
						for i := range 60 {
							ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
							tok, _, err := c.Get(ctx)
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
								c.Invalidate(tok) // as an upstream 401 would
							}
							time.Sleep(time.Second)
						}
					})
				}
				wg.Wait()
				src.mu.Lock()
				defer src.mu.Unlock()
				if got := maxInWindow(src.times, time.Minute); got > b.PerMinute {
					t.Fatalf("%d token requests in one minute; budget %d", got, b.PerMinute)
				}
				if throttled.Load() == 0 {
					t.Fatal("no caller was throttled in a storm")
				}
				t.Logf("%d fetches over %v, %d throttled answers", len(src.times), src.times[len(src.times)-1].Sub(src.times[0]), throttled.Load())
			})
		})
	}
}

func maxInWindow(ts []time.Time, w time.Duration) int {
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

// After a 429 with Retry-After nothing is sent until it has passed.
func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, retry: 30 * time.Second}
		src.throttle.Store(1)
		c := newCache(src, Budget{PerMinute: 60, Burst: 10}, time.Second)
		start := time.Now()
		_, _, err := c.Get(t.Context())
		var te *ThrottledError
		if !errors.As(err, &te) || te.RetryAfter != 30*time.Second {
			t.Fatalf("first Get: %v; want throttled for 30s", err)
		}
		for time.Since(start) < 29*time.Second {
			if _, _, err := c.Get(t.Context()); !errors.As(err, &te) {
				t.Fatalf("during back-off: %v", err)
			}
			time.Sleep(time.Second)
		}
		if n := src.fetches.Load(); n != 1 {
			t.Fatalf("%d token requests during the back-off; want only the first", n)
		}
		time.Sleep(2 * time.Second)
		if _, _, err := c.Get(t.Context()); err != nil {
			t.Fatalf("after back-off: %v", err)
		}
		if src.fetches.Load() != 2 {
			t.Fatal("no fetch after the back-off")
		}
	})
}

// A caller willing to wait longer than the back-off waits it out.
func TestWaitsOutShortBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, retry: 2 * time.Second}
		src.throttle.Store(1)
		c := newCache(src, Budget{PerMinute: 60, Burst: 10}, 5*time.Second)
		if _, _, err := c.Get(t.Context()); err == nil {
			t.Fatal("expected the 429 to surface")
		}
		start := time.Now()
		if _, _, err := c.Get(t.Context()); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if waited := time.Since(start); waited < 2*time.Second {
			t.Fatalf("sent after %v, before Retry-After", waited)
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
	if got := a.Budget(); got != (Budget{PerMinute: 4, Burst: 1}) {
		t.Fatalf("shared budget %+v; want the smaller", got)
	}
	if ls.For("other.example", Budget{}) == a {
		t.Fatal("hosts share a limiter")
	}
}

func BenchmarkGetCached(b *testing.B) {
	src := &fakeSource{ttl: time.Hour}
	c := newCache(src, Budget{PerMinute: 6, Burst: 1}, time.Second)
	ctx := context.Background()
	if _, _, err := c.Get(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if tok, _, err := c.Get(ctx); err != nil || tok == nil {
				b.Fatal(err)
			}
		}
	})
}

func TestGetCachedDoesNotAllocate(t *testing.T) {
	src := &fakeSource{ttl: time.Hour}
	c := newCache(src, Budget{PerMinute: 6, Burst: 1}, time.Second)
	ctx := context.Background()
	if _, _, err := c.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _, _ = c.Get(ctx) }); n != 0 {
		t.Fatalf("cached Get allocates %v times", n)
	}
}
