package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// confirmingSource is a fakeSource whose grants can be withdrawn.
type confirmingSource struct {
	*fakeSource
	gone     atomic.Bool
	confirms atomic.Int64
}

func (s *confirmingSource) Confirm(context.Context, string) error {
	s.confirms.Add(1)
	if s.gone.Load() {
		return &ConsentRequiredError{Subject: "alice", Cause: "deleted"}
	}
	return nil
}

func newConfirmingCache(t testing.TB, src *confirmingSource, every time.Duration) *Cache {
	t.Helper()
	c, err := New(src, NewLimiter(Budget{PerMinute: 600, Burst: 10}), Options{Route: "r", Skew: 10 * time.Second,
		MaxWait: time.Second, FetchTimeout: 5 * time.Second, ConfirmEvery: every})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A subject's token is served on the strength of its last confirmation for
// ConfirmEvery; after that the grant is confirmed once for every concurrent
// caller, and a withdrawn grant drops the token: consent_required. The
// route-wide token is never confirmed.
func TestConfirmEveryDropsWithdrawnGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &confirmingSource{fakeSource: &fakeSource{ttl: time.Hour}}
		c := newConfirmingCache(t, src, time.Second)
		for _, s := range []string{"", "alice"} {
			if _, _, err := c.Get(t.Context(), s); err != nil {
				t.Fatal(err)
			}
		}
		src.gone.Store(true)
		time.Sleep(999 * time.Millisecond)
		if _, out, err := c.Get(t.Context(), "alice"); err != nil || out != Hit {
			t.Fatalf("within the interval: %v %v; want the cached token", out, err)
		}
		if n := src.confirms.Load(); n != 0 {
			t.Fatalf("%d confirmations within the interval after a fetch", n)
		}
		time.Sleep(time.Millisecond)
		// A fetch now finds no consent, as the source would.
		src.fail = &ConsentRequiredError{Subject: "alice", Cause: "no consent"}
		seen := map[string]int{}
		done := make(chan error, 100)
		for range 100 {
			go func() { _, _, err := c.Get(t.Context(), "alice"); done <- err }()
		}
		for range 100 {
			err := <-done
			var ce *ConsentRequiredError
			if errors.As(err, &ce) {
				seen["consent_required"]++
			} else {
				seen[fmt.Sprint(err)]++
			}
		}
		if seen["consent_required"] != 100 || src.confirms.Load() != 1 {
			t.Fatalf("100 concurrent Gets after the interval: %v, %d confirmations; want 100 consent_required and 1", seen, src.confirms.Load())
		}
		fetches := src.fetches.Load()
		if _, _, err := c.Get(t.Context(), "alice"); !errors.As(err, new(*ConsentRequiredError)) || src.fetches.Load() != fetches+1 {
			t.Fatalf("after the withdrawal: %v; want a fetch answering consent_required", err)
		}
		time.Sleep(time.Hour / 2)
		if _, _, err := c.Get(t.Context(), ""); err != nil {
			t.Fatalf("the route-wide token: %v", err)
		}
		if n := src.confirms.Load(); n != 1 {
			t.Fatalf("%d confirmations; the route-wide token was confirmed", n)
		}
	})
}

// A token the shared store returns without a fetch (another replica's, or
// one stored before this process started) is used only once its grant is
// confirmed.
func TestSharedTokenConfirmedBeforeUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		store := &sharedStore{gen: 1, tok: Token{Value: "shared", Header: "Bearer shared", Issued: now, Expiry: now.Add(time.Hour)}}
		src := &confirmingSource{fakeSource: &fakeSource{ttl: time.Hour}}
		src.gone.Store(true)
		c, err := New(src, NewLimiter(Budget{PerMinute: 600, Burst: 10}), Options{Route: "r", Skew: 10 * time.Second,
			MaxWait: time.Second, FetchTimeout: 5 * time.Second, ConfirmEvery: time.Second, Store: store})
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := c.Get(t.Context(), "alice")
		var ce *ConsentRequiredError
		if !errors.As(err, &ce) {
			t.Fatalf("got %v, %v; want consent_required, the stored token's consent is gone", tok, err)
		}
	})
}

// BenchmarkGetConfirmed is a cached Get for a subject on a route that
// confirms consents: "within-interval" is the hot path (one more atomic
// load than without confirmation), "every-get" confirms on each Get (the
// cost of the confirmation machinery around a Confirm that returns at once).
func BenchmarkGetConfirmed(b *testing.B) {
	for _, bc := range []struct {
		name  string
		every time.Duration
	}{{"off", 0}, {"within-interval", time.Hour}, {"every-get", time.Nanosecond}} {
		b.Run(bc.name, func(b *testing.B) {
			src := &confirmingSource{fakeSource: &fakeSource{ttl: time.Hour}}
			c := newConfirmingCache(b, src, bc.every)
			ctx := context.Background()
			if _, _, err := c.Get(ctx, "alice"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.Get(ctx, "alice"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
