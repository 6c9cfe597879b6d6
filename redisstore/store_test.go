package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

func TestSeal(t *testing.T) {
	s, err := newSealer(Key{ID: DefaultKeyID, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSealer(Key{ID: DefaultKeyID, Key: bytes.Repeat([]byte{7}, 32)})
	tok := &tokencache.Token{Value: "secret-token", Type: "Bearer", Header: "Bearer secret-token", Expiry: time.Unix(2e9, 0), Issued: time.Unix(2e9-300, 0)}
	blob, err := s.sealToken(tok, tokenAAD("bc", "alice", 3))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, []byte("secret-token")) {
		t.Fatal("sealed value holds the token")
	}
	got, err := s.openToken(blob, tokenAAD("bc", "alice", 3))
	if err != nil || got.Value != tok.Value || !got.Expiry.Equal(tok.Expiry) || !got.Issued.Equal(tok.Issued) || got.Header != tok.Header {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	tests := []struct {
		name string
		s    *sealer
		aad  []byte
		blob []byte
	}{
		{"other route", s, tokenAAD("other", "alice", 3), blob},
		{"other subject", s, tokenAAD("bc", "bob", 3), blob},
		{"other generation", s, tokenAAD("bc", "alice", 4), blob},
		{"other key", other, tokenAAD("bc", "alice", 3), blob},
		{"truncated", s, tokenAAD("bc", "alice", 3), blob[:10]},
		{"unknown version", s, tokenAAD("bc", "alice", 3), append([]byte{9}, blob[1:]...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.s.openToken(tc.blob, tc.aad); err == nil {
				t.Fatal("opened")
			}
		})
	}
	if _, err := newSealer(Key{ID: DefaultKeyID, Key: []byte("short")}); err == nil {
		t.Fatal("accepted a 5-byte key")
	}
}

// Three replicas, 500 concurrent requests each after expiry: exactly one
// token request at the bank, every caller on the new token; Redis never
// holds the token in the clear.
func TestThreeReplicasOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(1500*time.Millisecond, 50*time.Millisecond)
	g := newGatedBank(b)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, g, replicaOpts{skew: 0}))
	}
	if seen := storm(t, rs, "", 1500); len(seen) != 1 || b.n.Load() != 1 {
		t.Fatalf("cold: %d token requests, tokens %v; want 1", b.n.Load(), seen)
	}
	if !time.Now().Before(g.expiry(t, "tok-1")) {
		t.Fatal("the cold storm outlasted the token's 1.5 s life; the test's premise does not hold on this machine")
	}
	waitExpired(t, g, "tok-1") // the token every replica and Redis hold
	if seen := storm(t, rs, "", 1500); b.n.Load() != 2 || seen["tok-2"] != 1500 {
		t.Fatalf("after expiry: %d token requests, tokens %v; want exactly one more", b.n.Load(), seen)
	}
	keys, err := rs[0].client.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		dump, _ := rs[0].client.Dump(context.Background(), k).Result()
		if bytes.Contains([]byte(k+dump), []byte("tok-")) {
			t.Fatalf("Redis key %q holds a token in the clear", k)
		}
	}
}

// A refresh ahead of expiry happens once across replicas; the replicas that
// lose the race keep serving their valid token meanwhile, then use the new one.
func TestRefreshAheadSingleAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedBank(newBank(time.Hour, 0))
	g.shape = func(n int64, tok *tokencache.Token) {
		if n == 1 {
			inRefreshWindow(tok)
		}
	}
	release := g.hold(2) // the refresh stays at the bank until released
	defer release()
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, g, replicaOpts{skew: 30 * time.Second}))
	}
	if seen := storm(t, rs, "", 30); seen["tok-1"] != 30 {
		t.Fatalf("cold: %v; want all on tok-1", seen)
	}
	// Callers of a token inside its refresh window start a refresh ahead of expiry.
	if seen := storm(t, rs, "", 30); seen["tok-1"] != 30 {
		t.Fatalf("starting the refresh: %v; want all on tok-1", seen)
	}
	g.waitArrival(t, 2) // the refresh is at the bank
	// Every caller gets the valid token while the refresh is held: none waits for it.
	within(t, 10*time.Second, "callers during the refresh", func() {
		if seen := storm(t, rs, "", 300); seen["tok-1"] != 300 {
			t.Errorf("during refresh: %v; want all on tok-1", seen)
		}
	})
	release()
	eventually(t, 5*time.Second, "every replica on tok-2", func() bool {
		seen := storm(t, rs, "", 30)
		return seen["tok-2"] == 30
	})
	if n := g.arrivals.Load(); n != 2 {
		t.Fatalf("%d token requests reached the bank, want 2", n)
	}
}

// A replica without a token (just started) takes the valid token another
// replica stored, even while that one is being refreshed, instead of waiting.
func TestColdReplicaTakesValidSharedToken(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedBank(newBank(time.Hour, 0))
	g.shape = func(n int64, tok *tokencache.Token) {
		if n == 1 {
			inRefreshWindow(tok)
		}
	}
	release := g.hold(2) // the refresh stays at the bank until released
	defer release()
	a := newReplica(t, srv, g, replicaOpts{skew: 30 * time.Second})
	if _, _, err := a.cache.Get(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if tok, _, _ := a.cache.Get(context.Background(), ""); tok.Value != "tok-1" { // starts the refresh
		t.Fatalf("a: %s", tok.Value)
	}
	g.waitArrival(t, 2)
	cold := newReplica(t, srv, g, replicaOpts{skew: 30 * time.Second})
	within(t, 10*time.Second, "the cold replica", func() {
		tok, _, err := cold.cache.Get(context.Background(), "")
		if err != nil || tok.Value != "tok-1" {
			t.Errorf("cold replica: %v %v; want tok-1 while the refresh is held", tok, err)
		}
	})
	release()
	eventually(t, 5*time.Second, "both on tok-2", func() bool {
		ta, _, _ := a.cache.Get(context.Background(), "")
		tc, _, _ := cold.cache.Get(context.Background(), "")
		return ta.Value == "tok-2" && tc.Value == "tok-2"
	})
	if n := g.arrivals.Load(); n != 2 {
		t.Fatalf("%d token requests reached the bank, want 2", n)
	}
}

// A token read back from Redis passes the same check as a cached one: a
// replica without a token of its own does not take one within the skew of
// its expiry, it fetches anew.
func TestColdReplicaRefusesSharedTokenWithinSkew(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(2*time.Second, 10*time.Millisecond)
	a := newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second}) // capped to 500 ms: usable until 1.5 s
	first, _, err := a.cache.Get(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(first.Issued.Add(1600 * time.Millisecond)))
	cold := newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second})
	tok, _, err := cold.cache.Get(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.Expiry); tok.Value != "tok-2" || left <= 500*time.Millisecond {
		t.Fatalf("cold replica got %s with %v left; want a new token, not one within the 500ms skew", tok.Value, left.Round(time.Millisecond))
	}
}

// Three replicas never hand out a token within the skew of its expiry, also
// while its refresh waits for the shared budget: their callers wait for it
// within their context, or get a *ThrottledError (503 token_throttled). Seen
// from outside: a 2 s token sent 1.996 s into its life reached the bank after
// its expiry.
func TestReplicasNoTokenWithinSkewWhileRefreshWaits(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(2*time.Second, 10*time.Millisecond)
	// One request per 2 s window: tok-1's refresh, due from 1 s, is sent at about 2 s.
	budget := tokencache.Budget{PerMinute: 1, Burst: 1, Window: 2 * time.Second, Margin: time.Millisecond}
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second, budget: budget})) // capped to 500 ms
	}
	const skew = 500 * time.Millisecond
	var mu sync.Mutex
	served := map[string]int{}
	var throttled int
	var late string // the token handed out closest to its expiry, if any within its skew
	leastLeft := skew
	start := time.Now()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			for time.Since(start) < 3*time.Second {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				asked := time.Now() // the cache decides between asked and the return
				tok, _, err := r.cache.Get(ctx, "")
				cancel()
				var te *tokencache.ThrottledError
				mu.Lock()
				switch {
				case errors.As(err, &te):
					throttled++
				case err != nil:
					t.Errorf("at %v: %v", time.Since(start), err)
				case tok.Expiry.Sub(asked) <= skew:
					// Already within the skew when it was asked for: a
					// token handed out late, however slow the machine.
					if left := tok.Expiry.Sub(asked); left <= leastLeft {
						leastLeft = left
						late = fmt.Sprintf("%s handed out when asked for %v into its %v life, %v before its expiry; want none within the %v skew",
							tok.Value, asked.Sub(tok.Issued).Round(time.Millisecond), tok.Expiry.Sub(tok.Issued), left.Round(time.Millisecond), skew)
					}
				default:
					served[tok.Value]++
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if late != "" {
		t.Fatal(late)
	}
	arrivals := b.arrivalTimes()
	if len(arrivals) != 2 || arrivals[1].Sub(arrivals[0]) < 2*time.Second {
		t.Fatalf("token requests at %v; want two, the second held by the budget for 2 s", arrivals)
	}
	if throttled == 0 || served["tok-1"] == 0 || served["tok-2"] == 0 {
		t.Fatalf("served %v, throttled %d; want tok-1, then 503s while no token is usable, then tok-2", served, throttled)
	}
}

// Rotating refresh tokens: two replicas × 200 concurrent requests for one
// subject after expiry refresh it once, and no refresh token is used twice.
func TestRotatingSubjectRefreshSingle(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Second, 100*time.Millisecond)
	g := newGatedBank(b)
	rs := []*replica{newReplica(t, srv, g, replicaOpts{}), newReplica(t, srv, g, replicaOpts{})}
	for round := range 3 {
		seen := storm(t, rs, "alice", 400)
		if len(seen) != 1 || b.n.Load() != int64(round+1) {
			t.Fatalf("round %d: %d refreshes, tokens %v", round, b.n.Load(), seen)
		}
		for v := range seen {
			waitExpired(t, g, v)
		}
	}
	storm(t, rs, "bob", 10)
	if b.invalid != 0 || b.n.Load() != 4 {
		t.Fatalf("%d invalid_grant, %d refreshes; want 0 and 4", b.invalid, b.n.Load())
	}
}

// A replica with another encryption key is refused at start, and a token
// written under another key is a clear error, not a miss.
func TestWrongKey(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Hour, 0)
	a := newReplica(t, srv, b, replicaOpts{})
	if _, _, err := a.cache.Get(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	_, err := New(context.Background(), Options{Client: c, Key: bytes.Repeat([]byte{1}, 32), Prefix: "tp-test", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second})
	var wk *WrongKeyError
	if !errors.As(err, &wk) {
		t.Fatalf("New with another key: %v; want *WrongKeyError", err)
	}
	// Past the start-up check (the check value was cleared): the first read says why.
	if err := c.Del(context.Background(), "tp-test:keycheck:default").Err(); err != nil {
		t.Fatal(err)
	}
	other := newReplica(t, srv, b, replicaOpts{key: bytes.Repeat([]byte{1}, 32)})
	_, _, err = other.cache.Get(context.Background(), "")
	if !errors.As(err, &wk) || !errors.As(other.shared.Healthy(), &wk) {
		t.Fatalf("Get: %v, health %v; want *WrongKeyError", err, other.shared.Healthy())
	}
	if b.n.Load() != 1 {
		t.Fatalf("%d token requests; the wrong key must not fetch over the others' token", b.n.Load())
	}
}

type fenceObserver struct{ fenced, hits, waits atomic.Int64 }

func (o *fenceObserver) SharedHit(string)               { o.hits.Add(1) }
func (o *fenceObserver) LockWait(string, time.Duration) { o.waits.Add(1) }
func (o *fenceObserver) FencingRejected(string)         { o.fenced.Add(1) }

// A replica whose lock expired during a slow fetch cannot overwrite the
// newer token another replica stored meanwhile; it uses the newer one.
func TestFencing(t *testing.T) {
	srv := redistest.Start(t)
	obs := &fenceObserver{}
	slow := newBank(time.Hour, 0)
	a := newReplica(t, srv, slow, replicaOpts{obs: obs})
	b := newReplica(t, srv, slow, replicaOpts{obs: obs})
	ra := a.shared.Route("fenced", 100*time.Millisecond).(*routeStore) // lock lives 2.1 s
	rb := b.shared.Route("fenced", time.Second).(*routeStore)
	fresh := func(*tokencache.Token) bool { return true }
	mk := func(v string) *tokencache.Token {
		return &tokencache.Token{Value: v, Header: "Bearer " + v, Expiry: time.Now().Add(time.Hour)}
	}
	started, proceed := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var got *tokencache.Token
	wg.Go(func() {
		var err error
		got, _, err = ra.Refresh(context.Background(), "", 0, fresh, func(context.Context) (*tokencache.Token, error) {
			close(started)
			<-proceed // until the lock has expired and a newer token is stored
			return mk("late"), nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	<-started
	// The fetch outlives its lock: Redis expires the lock now instead of in 2.1 s.
	lock := ra.keys("").lock
	if ttl, err := b.client.PTTL(context.Background(), lock).Result(); err != nil || ttl <= 0 || ttl > 2100*time.Millisecond {
		t.Fatalf("the fetch lock's TTL is %v (%v); want at most the 2.1 s fetch bound", ttl, err)
	}
	if err := b.client.PExpire(context.Background(), lock, time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the lock expires", func() bool {
		n, _ := b.client.Exists(context.Background(), lock).Result()
		return n == 0
	})
	tb, gb, err := rb.Refresh(context.Background(), "", 0, func(*tokencache.Token) bool { return false }, func(context.Context) (*tokencache.Token, error) {
		return mk("newer"), nil
	})
	if err != nil || tb.Value != "newer" {
		t.Fatalf("second writer: %v %v", tb, err)
	}
	close(proceed)
	wg.Wait()
	if got.Value != "newer" || obs.fenced.Load() != 1 {
		t.Fatalf("late writer got %q, %d fencing rejections; want the newer token and 1", got.Value, obs.fenced.Load())
	}
	if stored, gen, _ := rb.load(context.Background(), "", rb.keys("")); stored.Value != "newer" || gen != gb {
		t.Fatalf("stored %q gen %d", stored.Value, gen)
	}
}

// A 429 seen by one replica stops the others until its Retry-After.
func TestSharedBackoff(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Hour, 0)
	b.retry = 2 * time.Second
	a := newReplica(t, srv, b, replicaOpts{maxWait: 100 * time.Millisecond})
	other := newReplica(t, srv, b, replicaOpts{route: "other", maxWait: 100 * time.Millisecond})
	_, _, err := a.cache.Get(context.Background(), "")
	var te *tokencache.ThrottledError
	if !errors.As(err, &te) || te.RetryAfter <= 0 || te.RetryAfter > 2*time.Second {
		t.Fatalf("first: %v; want throttled for the 2 s Retry-After", err)
	}
	// The back-off is shared through Redis for the Retry-After.
	key := "tp-test:{budget:" + b.Host() + "}:backoff"
	if ttl, err := a.client.PTTL(context.Background(), key).Result(); err != nil || ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("shared back-off TTL %v (%v); want up to the 2 s Retry-After", ttl, err)
	}
	_, _, err = other.cache.Get(context.Background(), "")
	if !errors.As(err, &te) || b.n.Load() != 0 || len(b.arrivalTimes()) != 1 {
		t.Fatalf("other replica during the back-off: %v, %d requests; want throttled, none sent", err, len(b.arrivalTimes()))
	}
	// The Retry-After runs out on Redis's clock: end it there instead of waiting 2 s.
	if err := a.client.PExpire(context.Background(), key, time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the back-off ends", func() bool {
		n, _ := a.client.Exists(context.Background(), key).Result()
		return n == 0
	})
	if _, _, err := other.cache.Get(context.Background(), ""); err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
}

// gatedBank is the bank seen through the test: it numbers the requests as
// they arrive, holds the ones the test names until released, and lets the
// test shape a token's lifetime, so that a test reaches the moment it
// asserts about (a refresh in flight, a token inside its refresh window)
// by a signal instead of by waiting real seconds.
type gatedBank struct {
	*bank
	arrivals atomic.Int64 // requests that reached the bank

	mu      sync.Mutex
	holds   map[int64]chan struct{}              // request number → released when closed
	shape   func(n int64, tok *tokencache.Token) // adjusts the n-th request's token
	expires map[string]time.Time                 // token value → expiry
}

func newGatedBank(b *bank) *gatedBank {
	return &gatedBank{bank: b, holds: map[int64]chan struct{}{}, expires: map[string]time.Time{}}
}

// hold makes request n wait at the bank until the returned function is called.
func (g *gatedBank) hold(n int64) (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.holds[n] = ch
	g.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (g *gatedBank) Fetch(ctx context.Context, subject string) (*tokencache.Token, error) {
	n := g.arrivals.Add(1)
	g.mu.Lock()
	ch, shape := g.holds[n], g.shape
	g.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	tok, err := g.bank.Fetch(ctx, subject)
	if err != nil {
		return nil, err
	}
	if shape != nil {
		shape(n, tok)
	}
	g.mu.Lock()
	g.expires[tok.Value] = tok.Expiry
	g.mu.Unlock()
	return tok, nil
}

// expiry is when the token with value v expires.
func (g *gatedBank) expiry(t *testing.T, v string) time.Time {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.expires[v]
	if !ok {
		t.Fatalf("the bank issued no token %q", v)
	}
	return e
}

// waitArrival waits for request n to reach the bank.
func (g *gatedBank) waitArrival(t *testing.T, n int64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("token request %d at the bank", n), func() bool { return g.arrivals.Load() >= n })
}

// waitExpired waits until the token with value v has expired by the clock
// the caches compare it with.
func waitExpired(t *testing.T, g *gatedBank, v string) {
	t.Helper()
	e := g.expiry(t, v)
	eventually(t, time.Until(e)+5*time.Second, v+" expired", func() bool { return !time.Now().Before(e) })
}

// inRefreshWindow shapes a token so that it is valid for a while but
// inside its refresh window for a 30 s skew: issued an hour ago,
// expiring in 45 s.
func inRefreshWindow(tok *tokencache.Token) {
	now := time.Now()
	// With a 30 s skew the refresh starts 60 s before expiry and the token
	// is handed out until 30 s before it: 45 s left is inside that window.
	tok.Issued, tok.Expiry = now.Add(-time.Hour), now.Add(45*time.Second)
}

// within runs f and fails the test if it has not returned by d: a guard
// against a hang, not a measure of speed.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %v", what, d)
	}
}
