package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Source performs one token request. Implementations do no caching, pacing
// or retrying: the Cache does.
type Source interface {
	Fetch(ctx context.Context) (*Token, error)
	// Host is the authorization host, whose Limiter paces this source.
	Host() string
}

// Outcome says how Get produced its token, for logs and metrics.
type Outcome uint8

// Outcomes of Get.
const (
	Hit     Outcome = iota + 1 // the cached token was valid
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
	LimiterWait(route string, d time.Duration)
	TokenThrottled(route string)
}

// Options configure a Cache.
type Options struct {
	// Route names the cache in logs and metrics.
	Route string
	// Skew is how long before expiry a token stops being reused.
	Skew time.Duration
	// MaxWait bounds how long a fetch waits for the limiter or a back-off
	// before failing with a ThrottledError.
	MaxWait time.Duration
	// FetchTimeout bounds one token request once it is sent.
	FetchTimeout time.Duration
	Log          *zap.Logger
	Observer     Observer
}

// Cache holds one route's current token. Get is safe for concurrent use and
// does not allocate when the cached token is valid.
type Cache struct {
	opts Options
	src  Source
	lim  *Limiter

	cur atomic.Pointer[Token]

	mu     sync.Mutex // guards flight
	flight *call
}

// call is one in-flight fetch; done closes when tok/err are set.
type call struct {
	done chan struct{}
	tok  *Token
	err  error
}

// New returns a Cache that fetches from src paced by lim.
func New(src Source, lim *Limiter, opts Options) *Cache {
	if opts.MaxWait <= 0 {
		opts.MaxWait = 10 * time.Second
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	return &Cache{opts: opts, src: src, lim: lim}
}

// Get returns a valid token: the cached one, or one fetched now. While a
// fetch is in flight, every caller waits for that same fetch. If ctx ends
// first, Get returns a *ThrottledError telling the caller when to retry; the
// fetch goes on for whoever asks next.
func (c *Cache) Get(ctx context.Context) (*Token, Outcome, error) {
	if t := c.cur.Load(); t != nil && time.Now().Before(t.refreshAt) {
		if c.opts.Observer != nil {
			c.opts.Observer.TokenHit(c.opts.Route)
		}
		return t, Hit, nil
	}
	return c.slow(ctx)
}

func (c *Cache) slow(ctx context.Context) (*Token, Outcome, error) {
	c.mu.Lock()
	if t := c.cur.Load(); t != nil && time.Now().Before(t.refreshAt) {
		c.mu.Unlock()
		return t, Hit, nil
	}
	cl := c.flight
	if cl == nil {
		cl = &call{done: make(chan struct{})}
		c.flight = cl
		// The fetch is shared by every waiter and bounded by its own timeout:
		// one caller's cancellation must not end it for the others.
		go c.fetch(cl) //nolint:gosec // G118, see above
	}
	c.mu.Unlock()

	// A caller waits at most for the whole fetch (limiter wait plus the request).
	t := time.NewTimer(c.opts.MaxWait + c.opts.FetchTimeout)
	defer t.Stop()
	select {
	case <-cl.done:
		return cl.tok, Fetched, cl.err
	case <-t.C:
		return nil, Fetched, &ThrottledError{RetryAfter: time.Second, Reason: "the token request did not complete in time"}
	case <-ctx.Done():
		retry := time.Second
		if d := c.lim.BackoffRemaining(); d > retry {
			retry = d
		}
		return nil, Fetched, &ThrottledError{RetryAfter: retry, Reason: "the token request did not complete in time"}
	}
}

// Invalidate drops t if it is still the current token, so the next Get
// fetches anew. A token already replaced by another caller is left alone.
func (c *Cache) Invalidate(t *Token) {
	if t != nil {
		c.cur.CompareAndSwap(t, nil)
	}
}

// Source returns the cache's token source (for diagnostics).
func (c *Cache) Source() Source { return c.src }

// Current returns the cached token, valid or not, or nil.
func (c *Cache) Current() *Token { return c.cur.Load() }

// fetch runs one token request on behalf of every waiting caller. It owns
// cl until it closes cl.done, and it runs on its own context so that one
// caller giving up does not fail the others.
func (c *Cache) fetch(cl *call) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.MaxWait+c.opts.FetchTimeout)
	defer cancel()
	start := time.Now()
	log := c.opts.Log.With(zap.String("route", c.opts.Route), zap.String("auth_host", c.src.Host()))

	tok, err := c.fetchPaced(ctx, log)
	result := "ok"
	if err != nil {
		result = resultOf(err)
	}
	if c.opts.Observer != nil {
		c.opts.Observer.TokenFetch(c.opts.Route, result, time.Since(start))
	}

	c.mu.Lock()
	if err == nil {
		c.cur.Store(tok)
	}
	c.flight = nil
	c.mu.Unlock()
	cl.tok, cl.err = tok, err
	close(cl.done)
}

func (c *Cache) fetchPaced(ctx context.Context, log *zap.Logger) (*Token, error) {
	waited, err := c.lim.Acquire(ctx, c.opts.MaxWait)
	if waited > 0 && c.opts.Observer != nil {
		c.opts.Observer.LimiterWait(c.opts.Route, waited)
	}
	if err != nil {
		log.Warn("token request not sent", zap.Duration("limiter_wait", waited), zap.Error(err))
		return nil, err
	}
	sent := time.Now()
	fctx, cancel := context.WithTimeout(ctx, c.opts.FetchTimeout)
	defer cancel()
	tok, err := c.src.Fetch(fctx)
	took := time.Since(sent)
	if err != nil {
		var te *ThrottledError
		if errors.As(err, &te) {
			if c.opts.Observer != nil {
				c.opts.Observer.TokenThrottled(c.opts.Route)
			}
			log.Warn("token endpoint answered 429; backing off",
				zap.Duration("backoff", te.RetryAfter), zap.Duration("duration", took))
			return nil, err
		}
		log.Error("token request failed", zap.Duration("duration", took), zap.Duration("limiter_wait", waited), zap.Error(err))
		return nil, err
	}
	c.lim.Succeeded()
	tok.refreshAt = tok.Expiry.Add(-c.opts.Skew)
	log.Info("token fetched", zap.Duration("duration", took), zap.Duration("limiter_wait", waited),
		zap.Duration("expires_in", time.Until(tok.Expiry).Round(time.Second)), zap.String("token_type", tok.Type))
	return tok, nil
}

func resultOf(err error) string {
	var te *ThrottledError
	var fe *FetchError
	switch {
	case errors.As(err, &te):
		return "throttled"
	case errors.As(err, &fe) && fe.CredentialsRejected():
		return "rejected"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}
