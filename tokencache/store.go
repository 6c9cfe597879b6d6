package tokencache

import (
	"context"
	"time"
)

// FetchFunc performs one paced token request for the subject a Store was
// asked to refresh.
type FetchFunc func(ctx context.Context) (*Token, error)

// Store shares one route's tokens between the caches of several replicas.
// The Cache keeps its own in-memory copy of every token, so a Store is
// consulted only when a token is due for refresh, never on a cache hit.
type Store interface {
	// Refresh returns a token for subject whose generation differs from
	// have (the generation of the token the caller holds, 0 for none) and
	// that accept takes (the cache accepts any valid token when it has none,
	// else only one outside its refresh window); the caller owns the
	// returned *Token.
	// Across every cache sharing the store, at most one fetches a subject at
	// a time: Refresh either calls fetch once, or waits for the token
	// another cache fetched. gen is the returned token's generation.
	Refresh(ctx context.Context, subject string, have uint64, accept func(*Token) bool, fetch FetchFunc) (tok *Token, gen uint64, err error)
}

// MemoryStore shares nothing: every Refresh fetches. It is the store of a
// single process, whose Cache already makes one fetch per subject.
type MemoryStore struct{}

// Refresh implements Store.
func (MemoryStore) Refresh(ctx context.Context, _ string, have uint64, _ func(*Token) bool, fetch FetchFunc) (*Token, uint64, error) {
	tok, err := fetch(ctx)
	if err != nil {
		return nil, have, err
	}
	return tok, have + 1, nil
}

// SkewCapDivisor caps the skew at a fraction of the token's lifetime: a
// token is no longer sent once it has at most min(skew, lifetime/SkewCapDivisor)
// left (the effective skew), and its refresh starts at twice that. A quarter
// keeps every token usable for three quarters of its life and leaves a
// quarter of it for the refresh to complete while callers keep using it (a
// 5 s token: refreshed from 2.5 s, sent until 3.75 s); a 5-minute token keeps
// the default 30 s skew (refreshed from 4 min, sent until 4 min 30 s).
// Without the cap a skew at least as long as the lifetime made every request
// fetch (expires_in 5 with the 30 s default).
const SkewCapDivisor = 4

// EffectiveSkew is min(skew, lifetime/SkewCapDivisor), where lifetime is
// Expiry-Issued (Expiry-now when Issued is unknown).
func EffectiveSkew(skew time.Duration, t *Token, now time.Time) time.Duration {
	issued := t.Issued
	if issued.IsZero() || issued.After(now) {
		issued = now
	}
	life := t.Expiry.Sub(issued)
	return max(min(skew, life/SkewCapDivisor), 0)
}

// Usable reports whether t may still be sent at now: whether more than
// EffectiveSkew(skew, t, now) of its life is left, so that it does not
// expire on its way to the provider. Every check that decides whether a
// token is sent or reused (the cache, a shared store, a consent store)
// makes it through this function.
func Usable(skew time.Duration, t *Token, now time.Time) bool {
	return now.Before(t.Expiry.Add(-EffectiveSkew(skew, t, now)))
}
