package tokencache

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// boundSource is fakeSource binding each token to what *bind names when it
// is fetched (the key or certificate the request presented).
type boundSource struct {
	fakeSource
	bind atomic.Pointer[string]
}

func (b *boundSource) Fetch(ctx context.Context, subject string) (*Token, error) {
	t, err := b.fakeSource.Fetch(ctx, subject)
	if err == nil {
		t.Binding = *b.bind.Load()
	}
	return t, err
}

func (b *boundSource) set(s string) { b.bind.Store(&s) }

func newBoundCache(t *testing.T, src *boundSource, binding func() string, store Store) *Cache {
	t.Helper()
	c, err := New(src, NewLimiter(Budget{PerMinute: 60, Burst: 5}), Options{Route: "r", Skew: 10 * time.Second,
		MaxWait: time.Second, FetchTimeout: 30 * time.Second, Binding: binding, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A cached token bound to what the route's tokens are no longer bound to
// (the client certificate rotated and Rebind was not called) is not sent,
// for the route-wide token nor for a subject: the next Get fetches a token
// bound anew, though the old one is far from its refresh window.
func TestCachedTokenBoundElsewhereNotSent(t *testing.T) {
	for _, subject := range []string{"", "alice"} {
		t.Run("subject "+subject, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &boundSource{fakeSource: fakeSource{ttl: time.Hour}}
				src.set("x5t#S256:old")
				c := newBoundCache(t, src, func() string { return *src.bind.Load() }, nil)
				tok, _, err := c.Get(t.Context(), subject)
				if err != nil || tok.Binding != "x5t#S256:old" {
					t.Fatalf("first token: %+v, %v", tok, err)
				}
				if tok, out, err := c.Get(t.Context(), subject); err != nil || out != Hit || tok.Value != "tok-1" {
					t.Fatalf("the bound token is not served from the cache: %v %v", out, err)
				}
				time.Sleep(time.Minute)
				src.set("x5t#S256:new") // rotated; Rebind not called
				tok, out, err := c.Get(t.Context(), subject)
				if err != nil {
					t.Fatal(err)
				}
				if tok.Value == "tok-1" || tok.Binding != "x5t#S256:new" || out != Fetched || src.fetches.Load() != 2 {
					t.Fatalf("after the rotation got %s bound to %q (%v, %d fetches); want a new token bound to the new certificate",
						tok.Value, tok.Binding, out, src.fetches.Load())
				}
				if tok, out, _ := c.Get(t.Context(), subject); out != Hit || tok.Value != "tok-2" {
					t.Fatalf("the new token is not served from the cache: %s %v", tok.Value, out)
				}
			})
		})
	}
}

// A fresh token from the shared store bound to another replica's DPoP key
// is not taken: the cache fetches its own.
func TestSharedTokenBoundElsewhereNotTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		store := &sharedStore{gen: 1, tok: Token{Value: "shared", Header: "DPoP shared", Binding: "jkt:theirs",
			Issued: now, Expiry: now.Add(time.Hour)}}
		src := &boundSource{fakeSource: fakeSource{ttl: time.Hour}}
		src.set("jkt:mine")
		c := newBoundCache(t, src, func() string { return "jkt:mine" }, store)
		tok, _, err := c.Get(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if tok.Value == "shared" || tok.Binding != "jkt:mine" || src.fetches.Load() != 1 {
			t.Fatalf("got %s bound to %q after %d fetches; want this replica's own token", tok.Value, tok.Binding, src.fetches.Load())
		}
	})
}
