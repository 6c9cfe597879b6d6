package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// Source performs one token request. Implementations do no caching, pacing
// or retrying: the Cache does.
type Source interface {
	// Fetch performs one token request for subject ("" for a route-wide
	// token). A 429 is returned as *FetchError{Status: 429, RetryAfter: d}
	// (RetryAfter 0 when the header was absent); the cache alone decides
	// the back-off. A subject without a usable consent gets a
	// *ConsentRequiredError.
	Fetch(ctx context.Context, subject string) (*Token, error)
	// Host is the authorization host, whose budget paces this source.
	Host() string
}

// Outcome says how Get produced its token, for logs and metrics.
type Outcome uint8

// Outcomes of Get.
const (
	Hit     Outcome = iota + 1 // the cached token was valid (perhaps being refreshed meanwhile)
	Fetched                    // the caller waited for a fetch (its own or a shared one)
)

func (o Outcome) String() string {
	switch o {
	case Hit:
		return "hit"
	case Fetched:
		return "fetch"
	default:
		return "none"
	}
}

// Observer receives the cache's events, for metrics. Methods must not block.
type Observer interface {
	TokenHit(route string)
	TokenFetch(route, result string, d time.Duration)
	// LimiterWait is called only for fetches that waited for the budget or
	// a back-off.
	LimiterWait(route string, d time.Duration)
	TokenThrottled(route string)
}

// Options configure a Cache. Configuration supplies every value; New applies
// no defaults.
type Options struct {
	// Route names the cache in logs and metrics.
	Route string
	// Skew is how long before its expiry a token stops being sent, so that
	// it does not expire on its way, capped at a quarter of the token's
	// lifetime (see EffectiveSkew and Usable). Its refresh starts one
	// (capped) skew earlier still, so that callers keep using it while the
	// refresh waits for the budget and runs.
	Skew time.Duration
	// MaxWait bounds how long a fetch waits for the budget or a back-off
	// before failing with a ThrottledError.
	MaxWait time.Duration
	// FetchTimeout bounds one token request once it is sent.
	FetchTimeout time.Duration
	// Store shares tokens with other replicas; nil keeps them in this
	// process (MemoryStore).
	Store Store
	// ConfirmEvery, when positive and the source is a Confirmer, is how
	// long a subject's token is served on the strength of its last
	// confirmation: a Get after that asks the source again (see Confirmer),
	// so that a grant withdrawn on another replica stops being served
	// within it. Route-wide tokens are never confirmed.
	ConfirmEvery time.Duration
	// Binding, when set, is what the route's tokens must be bound to now
	// (the DPoP key's or the client certificate's Token.Binding); a token
	// bound to anything else is not used, wherever it comes from (this
	// cache, a shared store, a consent store), and is fetched anew. It is
	// called on every Get: it must be cheap and must not block.
	Binding  func() string
	Log      *zap.Logger
	Observer Observer
}

// Cache holds one route's tokens, one per subject. Get is safe for
// concurrent use and does not allocate when the cached token is valid.
type Cache struct {
	opts  Options
	src   Source
	pacer Pacer
	store Store
	log   *zap.Logger
	// unforget stops the shared store's forget messages reaching the cache (Close).
	unforget func()

	route     entry    // subject ""
	subjects  sync.Map // string → *entry
	capped    atomic.Bool
	confirmer Confirmer // nil unless ConfirmEvery is set and the source confirms

	last atomic.Pointer[fetchRecord] // the last fetch's outcome (status.go)
}

// entry is one subject's token and its refresh.
type entry struct {
	cur  atomic.Pointer[Token]
	busy atomic.Bool  // a fetch is in flight
	hold atomic.Int64 // unix nanos before which no refresh-ahead starts (after a failed one)
	// confirmed is when (unix nanos) the source last found the subject's
	// grant standing: a fetch that read it, or a confirmation.
	confirmed atomic.Int64

	mu     sync.Mutex // guards the fields below, and starting a flight
	gen    uint64     // the store's generation of cur
	flight *call
	check  *call // the confirmation in flight, if any
}

// call is one in-flight fetch; done closes when tok/err are set.
type call struct {
	done chan struct{}
	tok  *Token
	err  error
}

// New returns a Cache that fetches from src paced by pacer.
func New(src Source, pacer Pacer, opts Options) (*Cache, error) {
	switch {
	case src == nil || pacer == nil:
		return nil, errors.New("token cache: a source and a pacer are required")
	case opts.Skew < 0:
		return nil, fmt.Errorf("token cache for route %q: skew %v is negative", opts.Route, opts.Skew)
	case opts.MaxWait <= 0 || opts.FetchTimeout <= 0:
		return nil, fmt.Errorf("token cache for route %q: max_wait (%v) and fetch_timeout (%v) must be positive", opts.Route, opts.MaxWait, opts.FetchTimeout)
	}
	c := &Cache{opts: opts, src: src, pacer: pacer, store: opts.Store, log: opts.Log}
	if c.store == nil {
		c.store = MemoryStore{}
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.log = c.log.With(zap.String("route", opts.Route), zap.String("auth_host", src.Host()))
	if cf, ok := src.(Confirmer); ok && opts.ConfirmEvery > 0 {
		c.confirmer = cf
	}
	if f, ok := c.store.(Forgetter); ok {
		// Another replica withdrew a subject's token: drop it here too.
		c.unforget = f.OnForget(c.Forget)
	}
	return c, nil
}

// Close stops what the cache registered with its store (the shared store's
// forget messages), for a cache no longer served (a route a configuration
// reload replaced). The cache still answers afterwards.
func (c *Cache) Close() {
	if c.unforget != nil {
		c.unforget()
	}
}

// Get returns a usable token for subject ("" for the route-wide token): the
// cached one, or one fetched now. A token is usable until the (capped) skew
// before its expiry, never after, so that it cannot expire on its way. From
// twice the skew before its expiry its refresh runs ahead while callers keep
// using it; a caller without a usable token waits, sharing the one in-flight
// fetch. If ctx ends first, or the fetch outlasts max_wait + fetch_timeout,
// Get returns a *ThrottledError telling the caller when to retry (the app's
// 503 token_throttled); the fetch goes on for whoever asks next.
func (c *Cache) Get(ctx context.Context, subject string) (*Token, Outcome, error) {
	if e := c.lookup(subject); e != nil {
		if t := e.cur.Load(); t != nil {
			now := time.Now()
			if now.Before(t.usableUntil) && c.bound(t) {
				if c.unconfirmed(e, subject, now) {
					return c.confirmThenGet(ctx, e, subject)
				}
				if !now.Before(t.refreshAt) {
					c.refreshAhead(e, subject, now)
				}
				c.hit()
				tracing.SetResult(ctx, tracing.ResultHit)
				return t, Hit, nil
			}
		}
	}
	return c.wait(ctx, subject)
}

func (c *Cache) hit() {
	if c.opts.Observer != nil {
		c.opts.Observer.TokenHit(c.opts.Route)
	}
}

// lookup returns subject's entry, or nil; it does not allocate.
func (c *Cache) lookup(subject string) *entry {
	if subject == "" {
		return &c.route
	}
	if v, ok := c.subjects.Load(subject); ok {
		return v.(*entry)
	}
	return nil
}

func (c *Cache) entryFor(subject string) *entry {
	if e := c.lookup(subject); e != nil {
		return e
	}
	v, _ := c.subjects.LoadOrStore(subject, &entry{})
	return v.(*entry)
}

// refreshAhead starts e's refresh unless one runs or a failed one asked to
// hold off.
func (c *Cache) refreshAhead(e *entry, subject string, now time.Time) {
	if e.busy.Load() || now.UnixNano() < e.hold.Load() {
		return
	}
	e.mu.Lock()
	if e.flight == nil {
		c.start(context.Background(), e, subject)
	}
	e.mu.Unlock()
}

func (c *Cache) wait(ctx context.Context, subject string) (*Token, Outcome, error) {
	e := c.entryFor(subject)
	e.mu.Lock()
	if t := e.cur.Load(); t != nil && time.Now().Before(t.usableUntil) && c.bound(t) {
		e.mu.Unlock() // filled meanwhile
		if c.unconfirmed(e, subject, time.Now()) {
			return c.confirmThenGet(ctx, e, subject)
		}
		c.hit()
		tracing.SetResult(ctx, tracing.ResultHit)
		return t, Hit, nil
	}
	cl := e.flight
	result := tracing.ResultWait
	if cl == nil {
		cl, result = c.start(ctx, e, subject), tracing.ResultFetch
	}
	e.mu.Unlock()
	tracing.SetResult(ctx, result)

	// A caller waits at most for the whole fetch (budget wait plus the request).
	t := time.NewTimer(c.opts.MaxWait + c.opts.FetchTimeout)
	defer t.Stop()
	select {
	case <-cl.done:
		if cl.err == nil && !time.Now().Before(cl.tok.usableUntil) {
			// A token whose whole life is shorter than the way to the
			// provider, or one that aged while the caller waited: not sent.
			return nil, Fetched, &ThrottledError{RetryAfter: time.Second, Reason: "no token valid long enough to reach the provider"}
		}
		return cl.tok, Fetched, cl.err
	case <-t.C:
		return nil, Fetched, &ThrottledError{RetryAfter: time.Second, Reason: "the token request did not complete in time"}
	case <-ctx.Done():
		return nil, Fetched, &ThrottledError{RetryAfter: max(time.Second, c.pacer.BackoffRemaining()), Reason: "the token request did not complete in time"}
	}
}

// start begins a fetch for e; e.mu is held. The fetch runs on its own
// context, which carries ctx's trace span only.
func (c *Cache) start(ctx context.Context, e *entry, subject string) *call {
	cl := &call{done: make(chan struct{})}
	e.flight = cl
	e.busy.Store(true)
	// The fetch is shared by every waiter and bounded by its own timeout:
	// one caller's cancellation must not end it for the others.
	// Without a usable token of its own, a cache takes any usable token
	// another replica stored, even one due for refresh, rather than wait: its
	// next Get then joins the refresh ahead. A token within the skew of its
	// expiry is never taken, wherever it comes from.
	accept := c.fresh
	if t := e.cur.Load(); t == nil || !time.Now().Before(t.usableUntil) || !c.bound(t) {
		accept = c.usable
	}
	go c.fetch(tracing.Detach(ctx), e, subject, e.gen, accept, cl)
	return cl
}

// Invalidate drops t if it is still subject's current token (after the
// upstream rejected it), so the next Get fetches anew. A token already
// replaced is left alone.
func (c *Cache) Invalidate(subject string, t *Token) {
	if e := c.lookup(subject); e != nil && t != nil {
		e.cur.CompareAndSwap(t, nil)
	}
}

// Forget drops subject's token (for instance when its consent is revoked);
// a fetch in flight for a named subject completes but its token is not kept.
func (c *Cache) Forget(subject string) {
	if subject == "" {
		c.route.cur.Store(nil)
		return
	}
	c.subjects.Delete(subject)
}

// Sweep forgets the subjects whose token expired more than idle ago and
// that have no fetch in flight, so idle customers do not hold memory; it
// returns how many it dropped. The route-wide token is never swept.
func (c *Cache) Sweep(idle time.Duration) int {
	cutoff := time.Now().Add(-idle)
	n := 0
	c.subjects.Range(func(k, v any) bool {
		e := v.(*entry)
		if t := e.cur.Load(); (t == nil || t.Expiry.Before(cutoff)) && !e.busy.Load() {
			c.subjects.CompareAndDelete(k, v)
			n++
		}
		return true
	})
	return n
}

// Source returns the cache's token source (for diagnostics).
func (c *Cache) Source() Source { return c.src }

// fetch runs one refresh of e on behalf of every waiting caller. It owns cl
// until it closes cl.done, and it runs on its own context so that one
// caller giving up does not fail the others; base is detached (it carries
// the starting caller's trace span at most).
func (c *Cache) fetch(base context.Context, e *entry, subject string, have uint64, accept func(*Token) bool, cl *call) {
	ctx, cancel := context.WithTimeout(base, c.opts.MaxWait+c.opts.FetchTimeout)
	defer cancel()
	start := time.Now()
	var fetched time.Time // when the source was asked (it read the grant after that)
	tok, gen, err := c.store.Refresh(ctx, subject, have, accept, func(ctx context.Context) (*Token, error) {
		fetched = time.Now()
		return c.fetchPaced(ctx, subject)
	})
	if c.opts.Observer != nil && (!fetched.IsZero() || err != nil) {
		c.opts.Observer.TokenFetch(c.opts.Route, resultOf(err), time.Since(start))
	}
	if !fetched.IsZero() || err != nil {
		c.record(start, err)
	}
	confirmed := fetched
	if err == nil && fetched.IsZero() && c.confirmer != nil && subject != "" {
		// A token another replica stored, perhaps before this one started:
		// the grant it stands for is confirmed before it is used.
		confirmed = time.Now()
		if err = c.confirmer.Confirm(ctx, subject); err != nil {
			tok = nil
		}
	}
	if errors.Is(err, ErrWithdrawn) && c.confirmer != nil && subject != "" {
		// Say why, as a confirmation does.
		if cerr := c.confirmer.Confirm(ctx, subject); cerr != nil {
			err = cerr
		}
	}
	now := time.Now()
	if err == nil {
		c.prepare(tok, now)
	}
	var ce *ConsentRequiredError
	withdrawn := errors.As(err, &ce) || errors.Is(err, ErrWithdrawn)

	e.mu.Lock()
	switch {
	case err == nil:
		e.cur.Store(tok)
		e.gen = gen
		e.confirmed.Store(confirmed.UnixNano())
	case withdrawn:
		// No usable grant: the token it stood for is not served any more.
		e.cur.Store(nil)
	default:
		// Keep serving a still-valid token; try again no sooner than a second
		// (or the back-off) from now, so a failing refresh does not spin.
		e.hold.Store(now.Add(max(time.Second, c.pacer.BackoffRemaining())).UnixNano())
	}
	e.flight = nil
	e.busy.Store(false)
	e.mu.Unlock()
	cl.tok, cl.err = tok, err
	close(cl.done)
	if withdrawn && fetched.IsZero() {
		// The shared store still held the token of a withdrawn grant.
		c.forgetShared(subject)
	}
}

// fresh reports whether t is outside its refresh window now (more than
// twice the effective skew left) and bound as the route's tokens must be.
func (c *Cache) fresh(t *Token) bool {
	now := time.Now()
	return now.Before(t.Expiry.Add(-2*EffectiveSkew(c.opts.Skew, t, now))) && c.bound(t)
}

// usable reports whether t may be sent now (see Usable) and is bound as
// the route's tokens must be.
func (c *Cache) usable(t *Token) bool { return Usable(c.opts.Skew, t, time.Now()) && c.bound(t) }

// bound reports whether t is bound to what the route's tokens must be
// bound to now (Options.Binding); always true without a binding.
func (c *Cache) bound(t *Token) bool {
	if c.opts.Binding == nil {
		return t.Binding == ""
	}
	return t.Binding == c.opts.Binding()
}

// Rebind starts, for every token no longer bound to what Options.Binding
// gives now (the client certificate rotated), a fetch of a token bound
// anew, so that requests find it rather than wait for it. The old token is
// no longer sent meanwhile: a request waits for the fetch.
func (c *Cache) Rebind() {
	rebind := func(subject string, e *entry) {
		if t := e.cur.Load(); t == nil || c.bound(t) {
			return
		}
		e.mu.Lock()
		if e.flight == nil {
			c.start(context.Background(), e, subject)
		}
		e.mu.Unlock()
	}
	rebind("", &c.route)
	c.subjects.Range(func(k, v any) bool {
		rebind(k.(string), v.(*entry))
		return true
	})
}

// prepare sets t's refresh and cut-off times, logging once per cache when
// the lifetime caps the configured skew.
func (c *Cache) prepare(t *Token, now time.Time) {
	skew := EffectiveSkew(c.opts.Skew, t, now)
	t.usableUntil = t.Expiry.Add(-skew)
	t.refreshAt = t.Expiry.Add(-2 * skew)
	if skew < c.opts.Skew && c.capped.CompareAndSwap(false, true) {
		c.log.Info("token lifetime is short for the configured skew; using a quarter of the lifetime instead (not sent within it of expiry, refreshed from twice that)",
			zap.Duration("skew", c.opts.Skew), zap.Duration("lifetime", t.Expiry.Sub(t.Issued).Round(time.Millisecond)),
			zap.Duration("effective_skew", skew))
	}
}

func (c *Cache) fetchPaced(ctx context.Context, subject string) (*Token, error) {
	p, err := c.pacer.Acquire(ctx, c.opts.MaxWait)
	if p.Waited > 0 && c.opts.Observer != nil {
		c.opts.Observer.LimiterWait(c.opts.Route, p.Waited)
	}
	if p.Waited > 0 {
		tracing.BudgetWait(ctx, p.Waited)
	}
	if err != nil {
		c.log.Warn("token request not sent", zap.Duration("limiter_wait", p.Waited), zap.Error(err))
		return nil, err
	}
	defer p.Done()
	sent := time.Now()
	fctx, cancel := context.WithTimeout(ctx, c.opts.FetchTimeout)
	defer cancel()
	tok, err := c.src.Fetch(fctx, subject)
	took := time.Since(sent)
	var fe *FetchError
	var ce *ConsentRequiredError
	switch {
	case errors.As(err, &ce):
		// Not a fault of tokenproxy's credentials: the customer must consent
		// (again). The app gets consent_required; an Info line is enough.
		c.log.Info("no usable consent for the subject", zap.Duration("duration", took), zap.Error(err))
		return nil, err
	case errors.As(err, &fe) && fe.Throttled():
		d := c.pacer.Throttled(fe.RetryAfter)
		if c.opts.Observer != nil {
			c.opts.Observer.TokenThrottled(c.opts.Route)
		}
		c.log.Warn("token endpoint answered 429; backing off", zap.Duration("backoff", d), zap.Duration("duration", took))
		return nil, &ThrottledError{RetryAfter: d, Reason: "the token endpoint answered 429 Too Many Requests"}
	case err != nil:
		c.log.Error("token request failed", zap.Duration("duration", took), zap.Duration("limiter_wait", p.Waited), zap.Error(err))
		return nil, err
	}
	c.pacer.Succeeded()
	if tok.Issued.IsZero() {
		tok.Issued = time.Now()
	}
	c.log.Info("token fetched", zap.Duration("duration", took), zap.Duration("limiter_wait", p.Waited),
		zap.Duration("expires_in", time.Until(tok.Expiry).Round(time.Second)), zap.String("token_type", tok.Type))
	return tok, nil
}

func resultOf(err error) string {
	var te *ThrottledError
	var fe *FetchError
	var ce *ConsentRequiredError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &te):
		return "throttled"
	case errors.As(err, &ce):
		return "consent_required"
	case errors.As(err, &fe) && fe.CredentialsRejected():
		return "rejected"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}
