package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// lockMargin is how much longer a fetch lock lives than the fetch it guards.
const lockMargin = 2 * time.Second

// genTTL keeps a credential's generation counter well beyond any token's life.
const genTTL = 7 * 24 * time.Hour

// Route returns the tokencache.Store of one route. fetchBound is the longest
// one refresh may take (the route's max_wait + fetch_timeout); the fetch
// lock lives longer than that.
func (s *Shared) Route(name string, fetchBound time.Duration) tokencache.Store {
	return &routeStore{s: s, route: name, lockTTL: fetchBound + lockMargin}
}

type routeStore struct {
	s       *Shared
	route   string
	lockTTL time.Duration
}

type credKeys struct{ id, tok, lock, gen string }

func (r *routeStore) keys(subject string) credKeys {
	id := credentialID(r.route, subject)
	base := r.s.opts.Prefix + ":{" + id + "}:"
	return credKeys{id: id, tok: base + "tok", lock: base + "lock", gen: base + "gen"}
}

// Refresh implements tokencache.Store.
func (r *routeStore) Refresh(ctx context.Context, subject string, have uint64, fresh func(*tokencache.Token) bool, fetch tokencache.FetchFunc) (*tokencache.Token, uint64, error) {
	if !r.s.Up() {
		return r.direct(ctx, have, fetch)
	}
	k := r.keys(subject)
	start := time.Now()
	waited := false
	for range 100_000 { // every turn waits for a notification or a poll; ctx ends the loop
		tok, gen, err := r.load(ctx, subject, k)
		if err != nil {
			return r.failed(ctx, err, have, fetch)
		}
		if tok != nil && gen != have && fresh(tok) {
			r.sharedHit(start, waited)
			return tok, gen, nil
		}
		owner := uniqueID()
		fence, err := lockScript.Run(ctx, r.s.rdb, []string{k.lock, k.gen}, owner, r.lockTTL.Milliseconds(), genTTL.Milliseconds()).Int64()
		if err != nil {
			return r.failed(ctx, err, have, fetch)
		}
		if fence > 0 {
			return r.fetchLocked(ctx, subject, k, owner, uint64(fence), have, fresh, fetch)
		}
		// Another replica is fetching: wait for its token.
		wake, stop := r.s.watch(k.id)
		err = backoff.Sleep(ctx, r.s.opts.PollInterval, wake)
		stop()
		waited = true
		if err != nil {
			return nil, have, fmt.Errorf("waiting for another replica's token request: %w", err)
		}
	}
	return nil, have, errors.New("redis store: gave up waiting for another replica's token request")
}

func (r *routeStore) sharedHit(start time.Time, waited bool) {
	if o := r.s.opts.Observer; o != nil {
		o.SharedHit(r.route)
		if waited {
			o.LockWait(r.route, time.Since(start))
		}
	}
}

// fetchLocked fetches while holding the lock, stores the token fenced by the
// generation taken with the lock and releases the lock.
func (r *routeStore) fetchLocked(ctx context.Context, subject string, k credKeys, owner string, fence, have uint64, fresh func(*tokencache.Token) bool, fetch tokencache.FetchFunc) (*tokencache.Token, uint64, error) {
	defer r.release(k, owner)
	// The holder before us may have stored a token since we looked.
	tok, gen, err := r.load(ctx, subject, k)
	if err != nil {
		return r.failed(ctx, err, have, fetch)
	}
	if tok != nil && gen != have && fresh(tok) {
		r.sharedHit(time.Now(), false)
		return tok, gen, nil
	}
	stored := tok != nil || gen != 0
	tok, err = fetch(ctx)
	if consentGone(err) && stored {
		// The grant is gone (invalid_grant, no consent): no replica may
		// take the token it stood for back from the store.
		r.logForget(r.forget(ctx, subject, k))
	}
	if err != nil {
		return nil, have, err
	}
	blob, err := r.s.seal.sealToken(tok, tokenAAD(r.route, subject, fence))
	if err != nil {
		return nil, have, err
	}
	ttl := max(time.Until(tok.Expiry), time.Second)
	wrote, err := storeScript.Run(ctx, r.s.rdb, []string{k.tok},
		fence, blob, ttl.Milliseconds(), r.s.notify, k.id).Int()
	if err != nil {
		r.s.down(err)
		return tok, fence, nil // a valid token: use it, unshared
	}
	r.s.ok()
	if wrote == 0 && r.withdrawn(ctx, k) {
		// The credential was withdrawn (its consent deleted) while this
		// fetch ran: the token fetched for it is not used.
		return nil, have, tokencache.ErrWithdrawn
	}
	if wrote == 0 {
		// Our lock had expired and a newer token is stored: it supersedes ours.
		if o := r.s.opts.Observer; o != nil {
			o.FencingRejected(r.route)
		}
		r.s.log.Warn("token fetched under an expired lock; using the newer stored token", zap.String("route", r.route))
		if newer, ngen, err := r.load(ctx, subject, k); err == nil && newer != nil && fresh(newer) {
			return newer, ngen, nil
		}
	}
	return tok, fence, nil
}

func (r *routeStore) release(k credKeys, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := releaseScript.Run(ctx, r.s.rdb, []string{k.lock}, owner).Err(); err != nil {
		r.s.log.Debug("releasing a fetch lock failed; it expires on its own", zap.Error(err))
	}
}

// load reads and opens the stored token; nil when none, or when it is
// sealed under a key id this process does not hold (then with its
// generation).
func (r *routeStore) load(ctx context.Context, subject string, k credKeys) (*tokencache.Token, uint64, error) {
	vals, err := r.s.rdb.HMGet(ctx, k.tok, "gen", "val").Result()
	if err != nil {
		return nil, 0, err
	}
	r.s.ok()
	gs, _ := vals[0].(string)
	blob, _ := vals[1].(string)
	if gs == "" || blob == "" {
		return nil, 0, nil
	}
	gen, err := strconv.ParseUint(gs, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("redis store: generation %q of route %q is not a number", gs, r.route)
	}
	tok, err := r.s.seal.openToken([]byte(blob), tokenAAD(r.route, subject, gen))
	var uk *unknownKeyError
	if errors.As(err, &uk) {
		// Sealed under a key this process does not hold (removed after a
		// rotation, or not yet added here): absent, fetched anew. The
		// generation says a value is there.
		r.s.keyMiss(r.route, uk.id)
		return nil, gen, nil
	}
	if err != nil {
		werr := &WrongKeyError{What: fmt.Sprintf("the token of route %q", r.route), ID: sealedKeyID([]byte(blob))}
		r.s.setHealth(werr)
		r.s.log.Error("shared token does not decrypt", zap.String("route", r.route), zap.Error(werr))
		return nil, 0, werr
	}
	return tok, gen, nil
}

// failed handles a failed Redis call: a wrong key or a cancelled caller is
// returned; an unreachable Redis degrades to an unshared fetch.
func (r *routeStore) failed(ctx context.Context, err error, have uint64, fetch tokencache.FetchFunc) (*tokencache.Token, uint64, error) {
	var wk *WrongKeyError
	switch {
	case errors.As(err, &wk):
		return nil, have, err
	case ctx.Err() != nil:
		return nil, have, fmt.Errorf("redis store: %w", err)
	}
	r.s.down(err)
	return r.direct(ctx, have, fetch)
}

// direct fetches without coordination while Redis is unreachable; the
// pacer holds such fetches to the local budget.
func (r *routeStore) direct(ctx context.Context, have uint64, fetch tokencache.FetchFunc) (*tokencache.Token, uint64, error) {
	tok, err := fetch(ctx)
	if err != nil {
		return nil, have, err
	}
	return tok, have + 1, nil
}
