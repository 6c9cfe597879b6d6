// Package vaultsrc takes credentials, certificates and signing keys from
// HashiCorp Vault: it logs in (token, AppRole, Kubernetes) and keeps the login
// alive, reads KV v2 secrets for secret references, serves client certificates
// from KV v2 or the PKI engine with rotation, and signs with Transit keys that
// never leave Vault.
//
// When Vault is unreachable, what was obtained before keeps serving: the
// certificate holders keep their certificates, secret references answer from
// the last value read, and Health reports the client degraded until Vault
// answers again. Requests back off while Vault is down; nothing is written to
// disk.
package vaultsrc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
)

// Client is a logged-in Vault client. It is safe for concurrent use; one
// background goroutine (started by New, stopped by Close) keeps its token
// renewed and logs in afresh when renewal can no longer extend it.
type Client struct {
	cfg  Config
	opts options
	api  *api.Client // data requests; its token is swapped on each login
	lapi *api.Client // logins; never carries a token
	auth authenticator
	log  *zap.Logger

	health *healthBook
	brk    *breaker

	loginMu      sync.Mutex    // serialises logins
	loginLimiter *rate.Limiter // paces logins triggered by refusals and renewal ends

	mu       sync.Mutex // guards the fields below
	cur      *api.Secret
	gen      uint64        // incremented at each login
	loggedIn chan struct{} // closed and replaced at each login

	kvMu   sync.Mutex
	kvLast map[string]kvLastGood // last value read per field, for outages

	stats struct{ requests, logins, renewals, fastFails atomic.Int64 }

	cancel context.CancelFunc
	done   chan struct{}
}

type kvLastGood struct {
	val     string
	version int
}

// Stats counts the client's work since New, for metrics and benchmarks.
type Stats struct {
	Requests  int64 // requests sent to Vault (logins and renewals not included)
	Logins    int64
	Renewals  int64 // token renewals
	FastFails int64 // requests refused locally while backing off from an outage
}

// Option adjusts a Client.
type Option func(*options)

type options struct {
	log              *zap.Logger
	now              func() time.Time
	backoffBase      time.Duration
	backoffMax       time.Duration
	minLoginInterval time.Duration
}

// WithLogger sets the logger (default: no logging).
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the time source used for health and back-off.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithBackoff sets the first and the longest wait between attempts while
// Vault is unreachable (default 250ms and 15s).
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, maxDelay }
}

// WithMinLoginInterval sets the least time between two logins that were not
// asked for by a caller (default 5s), so a token that cannot be extended
// does not cause a login storm.
func WithMinLoginInterval(d time.Duration) Option { return func(o *options) { o.minLoginInterval = d } }

// New validates cfg, logs in once and starts keeping the login alive. A
// failed first login is returned as an *AuthError, so that a misconfigured
// proxy stops at start-up with a message naming the method and role.
func New(ctx context.Context, cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := options{
		log:              zap.NewNop(),
		now:              time.Now,
		backoffBase:      250 * time.Millisecond,
		backoffMax:       15 * time.Second,
		minLoginInterval: 5 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	hc, err := httpClient(cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:          cfg,
		opts:         o,
		log:          o.log.Named("vault"),
		health:       newHealthBook(o.now),
		brk:          &breaker{base: o.backoffBase, max: o.backoffMax, jitter: rand.Float64},
		loginLimiter: rate.NewLimiter(rate.Every(o.minLoginInterval), 2),
		loggedIn:     make(chan struct{}),
		kvLast:       map[string]kvLastGood{},
		done:         make(chan struct{}),
	}
	if c.api, err = apiClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.lapi, err = apiClient(cfg, hc); err != nil {
		return nil, err
	}
	if c.auth, err = newAuthenticator(cfg); err != nil {
		return nil, err
	}
	if err := c.login(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.authLoop(runCtx)
	return c, nil
}

func httpClient(cfg Config) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("vault.ca_cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault.ca_cert: %s holds no PEM certificate", cfg.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		// Vault is reached directly: the proxy settings of the environment are
		// meant for the application next to tokenproxy, not for tokenproxy.
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64, // Transit signatures run concurrently
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		// The api package handles Vault's redirects itself.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

func apiClient(cfg Config, hc *http.Client) (*api.Client, error) {
	ac := &api.Config{
		Address:      cfg.Address,
		HttpClient:   hc,
		Timeout:      cfg.Timeout,
		MaxRetries:   1,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: 500 * time.Millisecond,
	}
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault.address: %w", err)
	}
	// NewClient picks up VAULT_TOKEN and VAULT_NAMESPACE from the environment;
	// tokenproxy takes both from its configuration only.
	c.ClearToken()
	c.ClearNamespace()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	return c, nil
}

// Close stops the renewal goroutine and revokes a token that this client
// obtained by logging in (a token given by the operator is left alone).
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	if c.cfg.Auth.Method != MethodToken {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = c.api.Auth().Token().RevokeSelfWithContext(ctx, "")
	}
	return nil
}

// Health returns a snapshot of the client's and its sources' states.
func (c *Client) Health() Health { return c.health.snapshot() }

// Stats returns counters since New.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:  c.stats.requests.Load(),
		Logins:    c.stats.logins.Load(),
		Renewals:  c.stats.renewals.Load(),
		FastFails: c.stats.fastFails.Load(),
	}
}

// current returns the login being used and its generation.
func (c *Client) current() (*api.Secret, uint64, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.gen, c.loggedIn
}

// login logs in and installs the new token.
func (c *Client) login(ctx context.Context) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	return c.loginLocked(ctx)
}

func (c *Client) loginLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	s, err := c.auth.login(ctx, c.lapi)
	if err != nil {
		c.noteOutcome(err)
		aerr := &AuthError{Method: c.cfg.authDescription(), Unavailable: isUnavailable(err), Err: err}
		if c.health.report("auth", aerr) {
			c.log.Error("vault login failed", zap.Error(aerr))
		}
		return aerr
	}
	c.noteOutcome(nil)
	c.stats.logins.Add(1)
	c.api.SetToken(s.Auth.ClientToken)
	c.mu.Lock()
	c.cur = s
	c.gen++
	close(c.loggedIn)
	c.loggedIn = make(chan struct{})
	c.mu.Unlock()
	c.health.report("auth", nil)
	c.log.Info("vault login",
		zap.String("method", c.cfg.authDescription()),
		zap.Duration("ttl", time.Duration(s.Auth.LeaseDuration)*time.Second),
		zap.Bool("renewable", s.Auth.Renewable),
		zap.Strings("policies", s.Auth.Policies))
	return nil
}

// authLoop keeps the token alive: it renews it with the api's lifetime
// watcher and logs in afresh when renewal ends (the max TTL is near or
// renewals keep failing), backing off while Vault is unreachable. It returns
// when ctx is done.
func (c *Client) authLoop(ctx context.Context) {
	defer close(c.done)
	for {
		s, gen, changed := c.current()
		c.watch(ctx, s, changed)
		if ctx.Err() != nil {
			return
		}
		if _, g, _ := c.current(); g != gen {
			continue // a caller logged in meanwhile; watch the new token
		}
		c.reloginWithBackoff(ctx)
	}
}

// watch returns when the token s needs replacing, when another login
// replaced it (changed is closed), or when ctx is done.
func (c *Client) watch(ctx context.Context, s *api.Secret, changed <-chan struct{}) {
	if s.Auth.LeaseDuration == 0 {
		// A token without TTL (a root or periodic-less service token) never
		// needs renewing; wait until something replaces it.
		select {
		case <-ctx.Done():
		case <-changed:
		}
		return
	}
	w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: s})
	if err != nil {
		c.log.Error("vault token renewal could not start", zap.Error(err))
		return
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			return
		case err := <-w.DoneCh():
			if err != nil {
				c.log.Warn("vault token renewal failed; logging in again", zap.Error(classify("renewing the token", err)))
			} else {
				c.log.Info("vault token near its end of life; logging in again")
			}
			return
		case r := <-w.RenewCh():
			c.stats.renewals.Add(1)
			c.noteOutcome(nil)
			c.health.report("auth", nil)
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				c.log.Debug("vault token renewed", zap.Duration("ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second))
			}
		}
	}
}

func (c *Client) reloginWithBackoff(ctx context.Context) {
	for n := 1; ; n++ {
		if err := c.loginLimiter.Wait(ctx); err != nil {
			return
		}
		err := c.login(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		d := backoff.Delay(n, c.opts.backoffBase, c.opts.backoffMax, rand.Float64()) //nolint:gosec // jitter, not a secret
		c.log.Warn("vault login failed; retrying", zap.Error(err), zap.Duration("retry_in", d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// noteOutcome feeds the breaker and the "vault" health component: any answer
// from Vault proves it reachable; an outage-type error opens the breaker.
func (c *Client) noteOutcome(err error) {
	switch {
	case err == nil, !isUnavailable(err) && !errors.Is(err, context.Canceled):
		if c.brk.success() {
			c.log.Info("vault reachable again")
		}
		c.health.report("vault", nil)
	case isUnavailable(err):
		if c.brk.failure(c.opts.now()) {
			c.log.Warn("vault unreachable; serving the material already loaded and backing off", zap.Error(err))
		}
		c.health.report("vault", err)
	}
}

// do runs one Vault request fn through the breaker, classifies its error and,
// when Vault refuses the token because it expired or was revoked, logs in
// again and retries once.
func (c *Client) do(ctx context.Context, op string, fn func(ctx context.Context, a *api.Client) (*api.Secret, error)) (*api.Secret, error) {
	for attempt := 0; ; attempt++ {
		if ok, retryAt := c.brk.allow(c.opts.now()); !ok {
			c.stats.fastFails.Add(1)
			return nil, &UnavailableError{Op: op, RetryAt: retryAt}
		}
		tok := c.api.Token()
		c.stats.requests.Add(1)
		s, err := fn(ctx, c.api)
		err = classify(op, err)
		c.noteOutcome(err)
		if attempt == 0 && errors.Is(err, ErrPermissionDenied) && c.tokenRejected(ctx, tok) {
			if lerr := c.reloginAfterRefusal(ctx, tok); lerr != nil {
				// Only the request's error classifies the failure; the login error is context.
				return nil, fmt.Errorf("%w (and logging in again failed: %v)", err, lerr) //nolint:errorlint // see above
			}
			continue
		}
		return s, err
	}
}

// tokenRejected tells a refused token (expired, revoked) from a policy that
// does not grant the path: it looks the token up, which any valid token may.
func (c *Client) tokenRejected(ctx context.Context, tok string) bool {
	if c.api.Token() != tok {
		return true // replaced meanwhile; the retry uses the new one
	}
	lc, err := c.lapi.CloneWithHeaders()
	if err != nil {
		return false
	}
	lc.SetToken(tok)
	_, err = lc.Auth().Token().LookupSelfWithContext(ctx)
	return errors.Is(classify("", err), ErrPermissionDenied)
}

func (c *Client) reloginAfterRefusal(ctx context.Context, tok string) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if c.api.Token() != tok {
		return nil // another caller logged in already
	}
	if !c.loginLimiter.Allow() {
		return errors.New("logged in too recently; not retrying yet")
	}
	c.log.Info("vault refused the token (expired or revoked); logging in again")
	return c.loginLocked(ctx)
}
