package tokencache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

// fakeSource hands out numbered tokens with a fixed TTL, or 429s while throttle > 0.
type fakeSource struct {
	ttl      time.Duration
	delay    time.Duration
	fetches  atomic.Int64
	throttle atomic.Int64
	retry    time.Duration // Retry-After sent with a 429; 0 means none
	fail     error         // returned by every fetch when set

	mu       sync.Mutex
	times    []time.Time
	subjects []string
}

func (f *fakeSource) Host() string { return "auth.example" }

func (f *fakeSource) Fetch(ctx context.Context, subject string) (*Token, error) {
	n := f.fetches.Add(1)
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	f.subjects = append(f.subjects, subject)
	f.mu.Unlock()
	if f.delay > 0 {
		if err := backoff.Sleep(ctx, f.delay, nil); err != nil {
			return nil, err
		}
	}
	if f.fail != nil {
		return nil, f.fail
	}
	if f.throttle.Load() > 0 {
		f.throttle.Add(-1)
		return nil, &FetchError{Status: 429, RetryAfter: f.retry, Reason: "429"}
	}
	v := fmt.Sprintf("tok-%d", n)
	return &Token{Value: v, Type: "Bearer", Header: "Bearer " + v, Expiry: time.Now().Add(f.ttl), Issued: time.Now()}, nil
}

type countingObserver struct {
	hits, fetches, waits, throttled atomic.Int64
}

func (o *countingObserver) TokenHit(string)                          { o.hits.Add(1) }
func (o *countingObserver) TokenFetch(string, string, time.Duration) { o.fetches.Add(1) }
func (o *countingObserver) LimiterWait(string, time.Duration)        { o.waits.Add(1) }
func (o *countingObserver) TokenThrottled(string)                    { o.throttled.Add(1) }

func newCache(t testing.TB, src *fakeSource, b Budget, maxWait time.Duration, opts ...func(*Options)) *Cache {
	t.Helper()
	o := Options{Route: "r", Skew: 10 * time.Second, MaxWait: maxWait, FetchTimeout: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	c, err := New(src, NewLimiter(b), o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// getMany runs n concurrent Gets for subject and returns how many callers saw each token.
func getMany(t *testing.T, c *Cache, subject string, n int) map[string]int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for range n {
		wg.Go(func() {
			tok, _, err := c.Get(t.Context(), subject)
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

// 1,000 concurrent callers cause exactly one token request when the token is
// absent or expired, none while it is valid, and none wait while the valid
// token is being refreshed.
func TestThousandConcurrentOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: 5 * time.Minute, delay: 50 * time.Millisecond}
		c := newCache(t, src, Budget{PerMinute: 6, Burst: 1}, 10*time.Second)
		if seen := getMany(t, c, "", 1000); src.fetches.Load() != 1 || len(seen) != 1 {
			t.Fatalf("cold: %d fetches, tokens %v; want exactly 1", src.fetches.Load(), seen)
		}
		if getMany(t, c, "", 1000); src.fetches.Load() != 1 {
			t.Fatalf("valid token: %d fetches; want no new fetch", src.fetches.Load()-1)
		}
		// Inside the refresh window (from twice the skew before expiry, until
		// the skew before it): everyone gets tok-1 at once, one refresh starts.
		time.Sleep(5*time.Minute - 15*time.Second)
		start := time.Now()
		if seen := getMany(t, c, "", 1000); seen["tok-1"] != 1000 || time.Since(start) != 0 {
			t.Fatalf("refresh ahead: tokens %v after %v; want all on tok-1 without waiting", seen, time.Since(start))
		}
		synctest.Wait()
		time.Sleep(src.delay)
		synctest.Wait() // the refresh, woken at the same instant, has stored tok-2
		if seen := getMany(t, c, "", 1000); src.fetches.Load() != 2 || seen["tok-2"] != 1000 {
			t.Fatalf("refreshed: %d fetches, tokens %v; want 2 fetches and all callers on tok-2", src.fetches.Load(), seen)
		}
		// Past expiry: callers wait for exactly one fetch.
		time.Sleep(6 * time.Minute)
		if seen := getMany(t, c, "", 1000); src.fetches.Load() != 3 || seen["tok-3"] != 1000 {
			t.Fatalf("expired: %d fetches, tokens %v; want 3 fetches and all callers on tok-3", src.fetches.Load(), seen)
		}
	})
}

// Subjects have their own tokens; the subject reaches the source.
func TestSubjectsAreSeparate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, delay: 10 * time.Millisecond}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 10}, 10*time.Second)
		a := getMany(t, c, "alice", 100)
		b := getMany(t, c, "bob", 100)
		r := getMany(t, c, "", 100)
		if len(a) != 1 || len(b) != 1 || len(r) != 1 || src.fetches.Load() != 3 {
			t.Fatalf("alice %v bob %v route %v, %d fetches", a, b, r, src.fetches.Load())
		}
		for k := range a {
			if b[k] > 0 || r[k] > 0 {
				t.Fatal("two subjects share a token")
			}
		}
		if fmt.Sprint(src.subjects) != "[alice bob ]" {
			t.Fatalf("subjects sent %q", src.subjects)
		}
	})
}

func TestEffectiveSkew(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name     string
		skew     time.Duration
		issued   time.Time
		life     time.Duration
		expected time.Duration
	}{
		{"long token keeps skew", 30 * time.Second, now, 5 * time.Minute, 30 * time.Second},
		{"5 s token", 30 * time.Second, now, 5 * time.Second, 1250 * time.Millisecond},
		{"exactly four skews", 10 * time.Second, now, 40 * time.Second, 10 * time.Second},
		{"zero skew", 0, now, time.Minute, 0},
		{"issued unknown: remaining life", 30 * time.Second, time.Time{}, 8 * time.Second, 2 * time.Second},
		{"expired", 30 * time.Second, now, -time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := &Token{Issued: tc.issued, Expiry: now.Add(tc.life)}
			if got := EffectiveSkew(tc.skew, tok, now); got != tc.expected {
				t.Fatalf("EffectiveSkew = %v, want %v", got, tc.expected)
			}
		})
	}
}

// expires_in 5 with the default 30 s skew once gave 200, 503, 503…: every call
// fetched and the budget ran out. Now the skew is capped at 1.25 s, every call
// is served with a token that has more than that left, each token is
// refreshed from 2.5 s on, and the choice is logged once.
func TestShortLifetimeDefaultSkew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		src := &fakeSource{ttl: 5 * time.Second, delay: 20 * time.Millisecond}
		c := newCache(t, src, DefaultBudget, 10*time.Second, func(o *Options) {
			o.Skew = 30 * time.Second
			o.Log = zap.New(core)
		})
		for i := range 5 {
			if _, _, err := c.Get(t.Context(), ""); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := src.fetches.Load(); n != 1 {
			t.Fatalf("5 calls 20 ms apart made %d token requests, want 1", n)
		}
		// A minute of calls every 20 ms with a budget that fits one token per
		// 2.5 s: every call served at once with a token not within its skew.
		c2 := newCache(t, &fakeSource{ttl: 5 * time.Second, delay: 20 * time.Millisecond}, Budget{PerMinute: 30, Burst: 2}, 10*time.Second,
			func(o *Options) { o.Skew = 30 * time.Second; o.Log = zap.New(core) })
		src2 := c2.src.(*fakeSource)
		for i := range 3000 {
			start := time.Now()
			tok, _, err := c2.Get(t.Context(), "")
			if err != nil || !time.Now().Before(tok.Expiry.Add(-1250*time.Millisecond)) || (i > 0 && time.Since(start) != 0) {
				t.Fatalf("call %d at %v: %v after %v", i, time.Now(), err, time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := src2.fetches.Load(); n < 23 || n > 25 {
			t.Fatalf("%d token requests in 60 s of a 5 s token, want 24 (one per 2.5 s)", n)
		}
		if n := logs.FilterMessageSnippet("lifetime is short").Len(); n != 2 {
			t.Fatalf("skew cap logged %d times for two caches, want once each", n)
		}
	})
}

func TestInvalidateOnlyCurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 5}, time.Second)
		for _, sub := range []string{"", "alice"} {
			old, _, _ := c.Get(t.Context(), sub)
			c.Invalidate(sub, old)
			cur, _, _ := c.Get(t.Context(), sub)
			if cur == old {
				t.Fatalf("%q: invalidate did not force a fetch", sub)
			}
			c.Invalidate(sub, old) // stale: must not drop cur
			if again, out, _ := c.Get(t.Context(), sub); again != cur || out != Hit {
				t.Fatalf("%q: invalidating a stale token dropped the current one", sub)
			}
		}
		c.Invalidate("nobody", nil)
		if src.fetches.Load() != 4 {
			t.Fatalf("%d fetches, want 4", src.fetches.Load())
		}
	})
}

func TestForgetAndSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Minute}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 10}, time.Second)
		for _, s := range []string{"", "alice", "bob"} {
			if _, _, err := c.Get(t.Context(), s); err != nil {
				t.Fatal(err)
			}
		}
		c.Forget("alice")
		if c.lookup("alice") != nil {
			t.Fatal("alice not forgotten")
		}
		if n := c.Sweep(time.Hour); n != 0 {
			t.Fatalf("swept %d valid subjects", n)
		}
		time.Sleep(2 * time.Minute)
		if n := c.Sweep(30 * time.Second); n != 1 || c.lookup("bob") != nil || c.lookup("") == nil {
			t.Fatalf("swept %d; want bob only", n)
		}
	})
}

// A consent error reaches the caller as itself.
func TestConsentRequiredPassesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: time.Hour, fail: &ConsentRequiredError{Subject: "alice", Cause: "no consent stored"}}
		c := newCache(t, src, Budget{PerMinute: 60, Burst: 5}, time.Second)
		_, _, err := c.Get(t.Context(), "alice")
		var ce *ConsentRequiredError
		if !errors.As(err, &ce) || ce.Subject != "alice" {
			t.Fatalf("err %v, want *ConsentRequiredError", err)
		}
		if resultOf(err) != "consent_required" {
			t.Fatalf("result %q", resultOf(err))
		}
	})
}

func TestNewRejectsMissingOptions(t *testing.T) {
	src := &fakeSource{}
	for _, o := range []Options{{MaxWait: time.Second}, {FetchTimeout: time.Second}, {Skew: -1, MaxWait: 1, FetchTimeout: 1}} {
		if _, err := New(src, NewLimiter(DefaultBudget), o); err == nil {
			t.Fatalf("New accepted %+v", o)
		}
	}
}

func benchCache(b testing.TB) *Cache {
	src := &fakeSource{ttl: time.Hour}
	c := newCache(b, src, Budget{PerMinute: 6, Burst: 1}, time.Second)
	return c
}

// fill puts n subjects' tokens into c and returns their names.
func fill(tb testing.TB, c *Cache, n int) []string {
	names := make([]string, n)
	now := time.Now()
	for i := range names {
		names[i] = "customer-" + strconv.Itoa(i)
		e := c.entryFor(names[i])
		tok := &Token{Value: names[i], Expiry: now.Add(time.Hour), Issued: now}
		c.prepare(tok, now)
		e.cur.Store(tok)
	}
	if _, _, err := c.Get(context.Background(), ""); err != nil {
		tb.Fatal(err)
	}
	return names
}

func BenchmarkGetCached(b *testing.B) {
	c := benchCache(b)
	names := fill(b, c, 100_000)
	ctx := context.Background()
	for _, bc := range []struct{ name, subject string }{{"route", ""}, {"subject-of-100k", names[77_777]}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if tok, _, err := c.Get(ctx, bc.subject); err != nil || tok == nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func TestGetCachedDoesNotAllocate(t *testing.T) {
	c := benchCache(t)
	names := fill(t, c, 100_000)
	ctx := context.Background()
	for _, sub := range []string{"", names[0], names[99_999]} {
		if n := testing.AllocsPerRun(1000, func() { _, _, _ = c.Get(ctx, sub) }); n != 0 {
			t.Fatalf("cached Get(%q) allocates %v times", sub, n)
		}
	}
}

// A token is never handed out within the (capped) skew of its expiry, even
// while its refresh waits for the budget: callers then wait for the refresh
// within their context and get a *ThrottledError (503 token_throttled) when
// it does not come in time. Seen from outside: a 2 s token sent 1.996 s into
// its life reached the bank 1 ms after its expiry.
func TestNoTokenWithinSkewWhileRefreshWaitsForBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{ttl: 2 * time.Second, delay: 10 * time.Millisecond}
		// One request per 3 s window: tok-1's refresh, due from 1 s on, is
		// sent at about 3 s.
		c := newCache(t, src, Budget{PerMinute: 1, Burst: 1, Window: 3 * time.Second, Margin: time.Millisecond}, 10*time.Second,
			func(o *Options) { o.Skew = 30 * time.Second }) // capped to 500 ms
		const skew = 500 * time.Millisecond
		start := time.Now()
		served := map[string]int{}
		var throttled int
		var late string // the token handed out closest to its expiry, if any within its skew
		leastLeft := skew
		for time.Since(start) < 4*time.Second {
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			tok, _, err := c.Get(ctx, "")
			cancel()
			var te *ThrottledError
			switch {
			case errors.As(err, &te):
				throttled++
			case err != nil:
				t.Fatalf("at %v: %v", time.Since(start), err)
			case time.Until(tok.Expiry) <= skew:
				if left := time.Until(tok.Expiry); left <= leastLeft { // reported after the loop, once the refresh has ended
					leastLeft = left
					late = fmt.Sprintf("%s handed out up to %v into its %v life, %v before its expiry; want none within the %v skew",
						tok.Value, time.Since(tok.Issued), tok.Expiry.Sub(tok.Issued), left, skew)
				}
			default:
				served[tok.Value]++
			}
			time.Sleep(time.Millisecond)
		}
		if late != "" {
			t.Fatal(late)
		}
		if src.fetches.Load() != 2 || src.times[1].Sub(start) < 3*time.Second {
			t.Fatalf("token requests at %v; want the refresh held by the budget until 3 s", src.times)
		}
		if throttled == 0 || served["tok-1"] == 0 || served["tok-2"] == 0 {
			t.Fatalf("served %v, throttled %d; want tok-1, then 503s while no token is usable, then tok-2", served, throttled)
		}
	})
}

// sharedStore holds the token another replica stored: Refresh returns a copy
// of it when accept takes it, and fetches otherwise.
type sharedStore struct {
	mu  sync.Mutex
	tok Token
	gen uint64
}

func (s *sharedStore) Refresh(ctx context.Context, _ string, have uint64, accept func(*Token) bool, fetch FetchFunc) (*Token, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stored := s.tok; s.gen != have && accept(&stored) {
		return &stored, s.gen, nil
	}
	tok, err := fetch(ctx)
	if err != nil {
		return nil, have, err
	}
	s.tok, s.gen = *tok, s.gen+1
	return tok, s.gen, nil
}

// A token read back from a shared store passes the same check as a cached
// one: a cache without a token of its own takes another replica's token
// while it is usable, even during its refresh window, and never within the
// skew of its expiry.
func TestSharedTokenWithinSkewNotTaken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		age   time.Duration // of the stored 2 s token, skew capped to 500 ms
		taken bool
	}{
		{"fresh", 900 * time.Millisecond, true},
		{"due for refresh, still usable", 1200 * time.Millisecond, true},
		{"within the skew of its expiry", 1600 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				now := time.Now()
				store := &sharedStore{gen: 1, tok: Token{Value: "shared", Header: "Bearer shared", Issued: now, Expiry: now.Add(2 * time.Second)}}
				src := &fakeSource{ttl: 2 * time.Second}
				c := newCache(t, src, Budget{PerMinute: 60, Burst: 5}, time.Second, func(o *Options) {
					o.Skew = 30 * time.Second
					o.Store = store
				})
				time.Sleep(tc.age)
				tok, _, err := c.Get(t.Context(), "")
				if err != nil {
					t.Fatal(err)
				}
				if taken := tok.Value == "shared"; taken != tc.taken {
					t.Fatalf("a cold cache given a stored token %v into its 2 s life got %s (%v left); want the stored one: %v",
						tc.age, tok.Value, time.Until(tok.Expiry), tc.taken)
				}
			})
		})
	}
}
