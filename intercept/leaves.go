package intercept

import (
	"container/list"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LeafConfig bounds leaf issuance.
//
//	interception:
//	  leaf_ttl: 24h
//	  cache_size: 1000
//	  issue_rate: 10    # per second
//	  issue_burst: 20
type LeafConfig struct {
	TTL        time.Duration // lifetime of a leaf (default 24h)
	CacheSize  int           // leaves kept, least recently used evicted first (default 1000)
	IssueRate  rate.Limit    // leaves signed per second (default 10)
	IssueBurst int           // leaves signed at once before the rate applies (default 20)
	// MaxWait is the longest a handshake waits for issuance budget before it
	// is refused as rate limited (default 2s).
	MaxWait  time.Duration
	Now      func() time.Time
	Observer Observer
}

func (c LeafConfig) withDefaults() LeafConfig {
	if c.TTL <= 0 {
		c.TTL = 24 * time.Hour
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 1000
	}
	if c.IssueRate <= 0 {
		c.IssueRate = 10
	}
	if c.IssueBurst <= 0 {
		c.IssueBurst = 20
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 2 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	return c
}

// Leaves issues and caches leaf certificates from a CA. Each leaf has a
// fresh ECDSA P-256 key and names one host. It is safe for concurrent use:
// one mutex guards the cache and the in-flight map; signing runs outside it,
// once per host and CA generation however many handshakes wait for it.
type Leaves struct {
	ca      CA
	cfg     LeafConfig
	limiter *rate.Limiter

	mu      sync.Mutex
	gen     uint64 // CA generation the cache holds
	lru     *list.List
	entries map[string]*list.Element // host -> element holding *leafEntry
	flights map[flightKey]*flight
}

type leafEntry struct {
	host    string
	cert    *tls.Certificate
	renewAt time.Time
}

type flightKey struct {
	gen  uint64
	host string
}

type flight struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// NewLeaves returns an issuer of leaves signed by ca.
func NewLeaves(ca CA, cfg LeafConfig) *Leaves {
	cfg = cfg.withDefaults()
	return &Leaves{
		ca:      ca,
		cfg:     cfg,
		limiter: rate.NewLimiter(cfg.IssueRate, cfg.IssueBurst),
		lru:     list.New(),
		entries: map[string]*list.Element{},
		flights: map[flightKey]*flight{},
	}
}

// Certificate returns a leaf for host, from the cache when one for the
// current CA generation is still fresh, else newly signed. A host allow
// refuses gets a *RefusedError and nothing is signed.
func (l *Leaves) Certificate(ctx context.Context, host string, allow Allow) (*tls.Certificate, error) {
	h, err := NormalizeHost(host)
	if err != nil {
		l.cfg.Observer.Refused(host, ReasonBadHost)
		return nil, err
	}
	if allow == nil || !allow(h) {
		l.cfg.Observer.Refused(h, ReasonNotIntercepted)
		return nil, &RefusedError{Reason: ReasonNotIntercepted, Host: h}
	}
	gen := l.ca.Generation()
	l.mu.Lock()
	if gen != l.gen { // the CA rotated: nothing cached is served again
		l.gen = gen
		l.lru.Init()
		clear(l.entries)
	}
	if el, ok := l.entries[h]; ok {
		e := el.Value.(*leafEntry)
		if l.cfg.Now().Before(e.renewAt) {
			l.lru.MoveToFront(el)
			l.mu.Unlock()
			l.cfg.Observer.CacheHit(h)
			return e.cert, nil
		}
	}
	k := flightKey{gen, h}
	f, running := l.flights[k]
	if !running {
		f = &flight{done: make(chan struct{})}
		l.flights[k] = f
	}
	l.mu.Unlock()
	if !running {
		// Detached from the first caller's context: the others wait for it too.
		f.cert, f.err = l.issue(context.WithoutCancel(ctx), h)
		l.mu.Lock()
		delete(l.flights, k)
		if f.err == nil && l.gen == gen {
			l.store(h, f.cert)
		}
		l.mu.Unlock()
		close(f.done)
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the interception certificate for %q: %w", h, ctx.Err())
	}
	if f.err != nil {
		var re *RefusedError
		reason := ReasonCAUnavailable
		if errors.As(f.err, &re) {
			reason = re.Reason
		}
		l.cfg.Observer.Refused(h, reason)
		return nil, f.err
	}
	return f.cert, nil
}

// store caches cert for host; l.mu is held.
func (l *Leaves) store(host string, cert *tls.Certificate) {
	life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)
	e := &leafEntry{host: host, cert: cert, renewAt: cert.Leaf.NotBefore.Add(life * 2 / 3)}
	if el, ok := l.entries[host]; ok {
		el.Value = e
		l.lru.MoveToFront(el)
		return
	}
	l.entries[host] = l.lru.PushFront(e)
	for l.lru.Len() > l.cfg.CacheSize {
		old := l.lru.Back()
		l.lru.Remove(old)
		delete(l.entries, old.Value.(*leafEntry).host)
	}
}

// issue waits for issuance budget (at most MaxWait), makes a key and has
// the CA sign it.
func (l *Leaves) issue(ctx context.Context, host string) (*tls.Certificate, error) {
	r := l.limiter.ReserveN(l.cfg.Now(), 1)
	if d := r.DelayFrom(l.cfg.Now()); d > l.cfg.MaxWait {
		r.CancelAt(l.cfg.Now())
		return nil, &RefusedError{Reason: ReasonRateLimited, Host: host}
	} else if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			r.Cancel()
			return nil, ctx.Err()
		}
	}
	start := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, &RefusedError{Reason: ReasonCAUnavailable, Host: host, Err: fmt.Errorf("generating a key: %w", err)}
	}
	chain, err := l.ca.sign(ctx, host, key, l.cfg.TTL)
	if err != nil {
		return nil, &RefusedError{Reason: ReasonCAUnavailable, Host: host, Err: err}
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, &RefusedError{Reason: ReasonCAUnavailable, Host: host, Err: fmt.Errorf("parsing the signed certificate: %w", err)}
	}
	l.cfg.Observer.LeafIssued(host, time.Since(start))
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// Len returns how many leaves are cached.
func (l *Leaves) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
