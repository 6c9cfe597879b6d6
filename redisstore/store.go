// Package redisstore shares tokens, one fetch per credential and the token
// request budget between tokenproxy replicas through Redis.
//
// What it promises, with every replica configured alike:
//   - Redis never holds a usable token: values are sealed with AES-256-GCM
//     under a key the replicas share, bound to route, subject and generation;
//   - each replica keeps its tokens in memory (tokencache.Cache), so a cached
//     token costs no Redis call;
//   - one fetch per credential (route + subject) at a time across replicas: a
//     lock with a unique owner and a TTL above the fetch bound, released by
//     compare-and-delete; a fencing generation taken with the lock so a
//     writer whose lock expired cannot overwrite a newer token; replicas that
//     lose the race keep serving their valid token and pick up the winner's
//     (pub/sub, with polling as a fallback);
//   - the budget of tokencache (no rolling window at the provider sees more
//     than N requests) holds for all replicas together, kept in Redis by a
//     sliding-window log on Redis's clock; a 429 seen by one replica stops
//     all until its Retry-After;
//   - when Redis is unreachable, cached tokens serve until the skew before
//     their expiry (tokencache.Usable, as for a token read from Redis); new
//     fetches wait until every request the shared window may still count has
//     left it, then use a local budget of floor(N / MaxReplicas); on rejoining,
//     the requests sent locally are added to the shared window.
package redisstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Options configure a Shared store. Configuration supplies every field
// marked required; New applies no defaults.
type Options struct {
	// Client reaches Redis (standalone, Sentinel or Cluster), built by the
	// caller with its addresses, TLS and ACL username/password. Required.
	Client redis.UniversalClient
	// Key is the 32-byte AES-256 key that seals tokens, read from a secret
	// reference, under the id DefaultKeyID. Required unless Keys is given;
	// every replica must use the same key.
	Key []byte
	// Keys replaces Key to rotate keys: the first seals every value
	// written, any of them opens the values sealed under its id. A value
	// sealed under an id not listed is treated as absent (the token is
	// fetched anew): tokens are short-lived, so a key can be removed once
	// the longest token lifetime has passed since every replica sealed
	// under its successor.
	Keys []Key
	// Prefix starts every Redis key and channel of this deployment. Required.
	Prefix string
	// MaxReplicas is the most replicas that may run at once: while Redis is
	// unreachable each replica sends at most floor(N / MaxReplicas) token
	// requests per window. Required, ≥ 1.
	MaxReplicas int
	// PollInterval is how often a replica waiting for another's fetch looks
	// for the new token when no notification came. Required.
	PollInterval time.Duration
	// HealthInterval is how often Redis is pinged to notice an outage or
	// its end. Required.
	HealthInterval time.Duration
	// Log receives state changes (Redis lost, rejoined) and failures.
	Log *zap.Logger
	// OnDependency is called by New with the initial state, then with false
	// when Redis becomes unreachable and with true when it is back
	// (tokenproxy_dependency_up{dependency="redis"}).
	OnDependency func(up bool)
	// Observer receives shared-store events for metrics; may be nil.
	Observer Observer
}

// Observer receives the store's events. Methods must not block.
type Observer interface {
	// SharedHit: a replica took a token another replica fetched.
	SharedHit(route string)
	// LockWait: a replica waited d for another replica's fetch.
	LockWait(route string, d time.Duration)
	// FencingRejected: a token fetched under an expired lock was not stored
	// because a newer one was.
	FencingRejected(route string)
}

// KeyMissObserver is an Observer that is also told of each shared token
// treated as absent because it is sealed under a key id this process does
// not hold (keyID "" for the store's key from before key ids).
type KeyMissObserver interface {
	KeyMiss(route, keyID string)
}

// Shared is one process's connection to the shared store.
type Shared struct {
	opts   Options
	rdb    redis.UniversalClient
	seal   *sealer
	log    *zap.Logger
	notify string // pub/sub channel

	up      atomic.Bool
	lastUp  atomic.Int64 // unix nanos of the last successful Redis call
	mu      sync.Mutex   // guards health, waiters, pacers, forgets, acks
	health  error
	waiters map[string][]chan struct{}
	pacers  map[string]*pacer
	forgets map[string]map[*forgetFn]struct{} // by route: the caches' Forget
	acks    map[string]chan struct{}          // by nonce: a Forget waiting for acknowledgements

	keysChecked atomic.Bool  // the key checks were read (Check reached Redis)
	keyMisses   atomic.Int64 // tokens treated as absent: key id not held
	missLogged  sync.Map     // key id → struct{}: misses under it were logged
	cancel      context.CancelFunc
	done        chan struct{}
}

// New connects the store. It fails on bad options and on a store sealed with
// another key; an unreachable Redis is not an error here (the store starts
// degraded and reconnects), Check reports it.
func New(ctx context.Context, o Options) (*Shared, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("redis store: no client")
	case o.Prefix == "":
		return nil, errors.New("redis store: no key prefix")
	case o.MaxReplicas < 1:
		return nil, fmt.Errorf("redis store: max_replicas %d must be at least 1", o.MaxReplicas)
	case o.PollInterval <= 0 || o.HealthInterval <= 0:
		return nil, errors.New("redis store: poll and health intervals must be positive")
	}
	keys := o.Keys
	if len(keys) == 0 {
		keys = []Key{{ID: DefaultKeyID, Key: o.Key}}
	}
	sl, err := newSealer(keys...)
	if err != nil {
		return nil, err
	}
	s := &Shared{opts: o, rdb: o.Client, seal: sl, log: o.Log, notify: o.Prefix + ":notify",
		waiters: map[string][]chan struct{}{}, pacers: map[string]*pacer{}, forgets: map[string]map[*forgetFn]struct{}{},
		acks: map[string]chan struct{}{},
		done: make(chan struct{})}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.up.Store(true)
	s.lastUp.Store(time.Now().UnixNano())
	if err := s.Check(ctx); err != nil {
		var wk *WrongKeyError
		if errors.As(err, &wk) {
			return nil, err
		}
		s.down(err)
	}
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ps := s.rdb.Subscribe(bg, s.notify)
	go s.run(bg, ps)
	if s.opts.OnDependency != nil {
		s.opts.OnDependency(s.Up())
	}
	return s, nil
}

// Close stops the store's goroutines. It does not close the client.
func (s *Shared) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// Key check values: per key id, a known value sealed under that key,
// written when the store first meets the id (SET NX); a key given later
// under the same id must open it. A store written before key ids holds one
// check without an id (the legacy check), sealed in version 1.
var (
	keyCheckPlain = []byte("ok")
	keyCheckAAD   = []byte("tokenproxy key check")
)

func (s *Shared) keyCheckKey(id string) string { return s.opts.Prefix + ":keycheck:" + id }

// Check pings Redis and verifies that every key opens its id's key check
// value (writing those not there yet), and finds the key that opens the
// store's key check from before key ids, if any: values from before key ids
// open with it. A store whose legacy check no key opens, while none of the
// keys is known to it yet, was sealed under another key: refused.
func (s *Shared) Check(ctx context.Context) error {
	legacyKey := s.opts.Prefix + ":keycheck"
	legacy, err := s.rdb.Get(ctx, legacyKey).Bytes()
	if errors.Is(err, redis.Nil) {
		legacy, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("redis store: %w", err)
	}
	known := false
	for _, id := range s.seal.IDs() {
		k := s.keyCheckKey(id)
		blob, err := s.rdb.Get(ctx, k).Bytes()
		switch {
		case err == nil:
			known = true
		case errors.Is(err, redis.Nil):
			v, serr := s.seal.sealKeyed(id, keyCheckPlain, keyCheckAAD)
			if serr != nil {
				return serr
			}
			if err := s.rdb.SetNX(ctx, k, v, 0).Err(); err != nil {
				return fmt.Errorf("redis store: writing the key check of key id %q: %w", id, err)
			}
			blob, err = s.rdb.Get(ctx, k).Bytes()
		}
		if err != nil {
			return fmt.Errorf("redis store: %w", err)
		}
		if sealedKeyID(blob) != id {
			return s.wrongKey(&WrongKeyError{What: "the key check value (" + k + ")", ID: id})
		}
		if p, err := s.seal.open(blob, keyCheckAAD); err != nil || !bytes.Equal(p, keyCheckPlain) {
			return s.wrongKey(&WrongKeyError{What: "the key check value (" + k + ")", ID: id})
		}
	}
	legacyID := ""
	if len(legacy) > 1 && legacy[0] == sealVersion {
		for _, id := range s.seal.IDs() {
			if p, err := openWith(s.seal.AEAD(id), legacy[1:], keyCheckAAD); err == nil && bytes.Equal(p, keyCheckPlain) {
				legacyID = id
				break
			}
		}
	}
	if legacy != nil && legacyID == "" && !known {
		return s.wrongKey(&WrongKeyError{What: "the key check value (" + legacyKey + ")"})
	}
	s.seal.legacy.Store(&legacyID)
	s.keysChecked.Store(true)
	return nil
}

// wrongKey records err as the store's health and returns it.
func (s *Shared) wrongKey(err *WrongKeyError) error {
	s.setHealth(err)
	return err
}

// keyMiss counts a token treated as absent because its key id is not held,
// logging the first for each id.
func (s *Shared) keyMiss(route, id string) {
	s.keyMisses.Add(1)
	if o, ok := s.opts.Observer.(KeyMissObserver); ok {
		o.KeyMiss(route, id)
	}
	if _, logged := s.missLogged.LoadOrStore(id, struct{}{}); logged {
		return
	}
	what := fmt.Sprintf("key id %q", id)
	if id == "" {
		what = "the store's key from before key ids"
	}
	s.log.Warn("a shared token is sealed under "+what+", which is not configured: treating such tokens as absent and fetching them anew (expected for a while after a key was removed; logged once)",
		zap.String("route", route), zap.String("key_id", id))
}

// KeyMisses counts the reads of a shared token treated as absent because
// it is sealed under a key id this process does not hold (a refresh reads
// twice: before and under the fetch lock).
func (s *Shared) KeyMisses() int64 { return s.keyMisses.Load() }

// Healthy reports nil while Redis is reachable and the key matches, else why
// not (for /readyz: tokens keep being served, degraded).
func (s *Shared) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *Shared) setHealth(err error) {
	s.mu.Lock()
	s.health = err
	s.mu.Unlock()
}

// ok records a successful Redis call.
func (s *Shared) ok() {
	s.lastUp.Store(time.Now().UnixNano())
	if s.up.Load() {
		return
	}
	s.mu.Lock()
	if s.up.Load() {
		s.mu.Unlock()
		return
	}
	s.up.Store(true)
	s.health = nil
	pacers := make([]*pacer, 0, len(s.pacers))
	for _, p := range s.pacers {
		pacers = append(pacers, p)
	}
	s.mu.Unlock()
	for _, p := range pacers {
		p.rejoin()
	}
	s.log.Info("redis store reachable again; tokens and the token budget are shared again")
	if s.opts.OnDependency != nil {
		s.opts.OnDependency(true)
	}
}

// down records a failed Redis call (a connection or server failure).
func (s *Shared) down(err error) {
	s.mu.Lock()
	if !s.up.Load() {
		s.mu.Unlock()
		return
	}
	s.up.Store(false)
	s.health = fmt.Errorf("redis store unreachable: %w", err)
	s.mu.Unlock()
	s.log.Warn("redis store unreachable; serving cached tokens until they expire, new token requests on the local budget",
		zap.Int("max_replicas", s.opts.MaxReplicas), zap.Error(err))
	if s.opts.OnDependency != nil {
		s.opts.OnDependency(false)
	}
}

// Up reports whether the last Redis call succeeded.
func (s *Shared) Up() bool { return s.up.Load() }

// run pings Redis on HealthInterval and fans notifications out to waiters.
func (s *Shared) run(ctx context.Context, ps *redis.PubSub) {
	defer close(s.done)
	defer ps.Close()
	tick := time.NewTicker(s.opts.HealthInterval)
	defer tick.Stop()
	msgs := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch {
			case strings.HasPrefix(m.Payload, forgetPrefix):
				s.forgotten(m.Payload)
			case strings.HasPrefix(m.Payload, ackPrefix):
				s.acked(m.Payload)
			default:
				s.wake(m.Payload)
			}
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, s.opts.HealthInterval)
			err := s.healthCheck(pctx)
			cancel()
			switch {
			case err == nil:
				s.ok()
				if !s.keysChecked.Load() {
					s.checkLate(ctx)
				}
			case ctx.Err() == nil:
				s.down(err)
			}
		}
	}
}

// checkLate runs the key check of a store that started while Redis was
// unreachable, once Redis answers.
func (s *Shared) checkLate(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.opts.HealthInterval)
	defer cancel()
	err := s.Check(cctx)
	var wk *WrongKeyError
	if errors.As(err, &wk) {
		s.log.Error("redis store refuses this process's encryption key", zap.Error(err))
	}
}

// healthCheck is one health tick: reading each budget window's epoch (which
// also notices a Redis restarted without its data, within one interval,
// even on a replica that sends no token request), or a PING when there is
// no budget window yet.
func (s *Shared) healthCheck(ctx context.Context) error {
	s.mu.Lock()
	pacers := make([]*pacer, 0, len(s.pacers))
	for _, p := range s.pacers {
		pacers = append(pacers, p)
	}
	s.mu.Unlock()
	if len(pacers) == 0 {
		return s.rdb.Ping(ctx).Err()
	}
	for _, p := range pacers {
		if err := p.resync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// watch returns a channel closed at the next notification for id.
func (s *Shared) watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		ws := s.waiters[id]
		for i, w := range ws {
			if w == ch {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(s.waiters, id)
		} else {
			s.waiters[id] = ws
		}
	}
}

func (s *Shared) wake(id string) {
	s.mu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

// credentialID names a credential in Redis without revealing the subject.
func credentialID(route, subject string) string {
	h := sha256.Sum256([]byte(route + "\x00" + subject))
	return hex.EncodeToString(h[:16])
}

func uniqueID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
