package redisstore

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

func TestSeal(t *testing.T) {
	s, err := newSealer(testKey)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSealer(bytes.Repeat([]byte{7}, 32))
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
	if _, err := newSealer([]byte("short")); err == nil {
		t.Fatal("accepted a 5-byte key")
	}
}

// Three replicas, 500 concurrent requests each after expiry: exactly one
// token request at the bank, every caller on the new token; Redis never
// holds the token in the clear.
func TestThreeReplicasOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(1500*time.Millisecond, 50*time.Millisecond)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, b, replicaOpts{skew: 0}))
	}
	if seen := storm(t, rs, "", 1500); len(seen) != 1 || b.n.Load() != 1 {
		t.Fatalf("cold: %d token requests, tokens %v; want 1", b.n.Load(), seen)
	}
	time.Sleep(time.Until(time.Now().Add(1600 * time.Millisecond))) // the shared token expires
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
	b := newBank(2*time.Second, 300*time.Millisecond)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second})) // capped to 500 ms
	}
	storm(t, rs, "", 30)
	time.Sleep(1600 * time.Millisecond) // inside the capped skew, still valid
	start := time.Now()
	if seen := storm(t, rs, "", 300); seen["tok-1"] != 300 || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("during refresh: %v after %v; want all on tok-1 at once", seen, time.Since(start))
	}
	eventually(t, 2*time.Second, "every replica on tok-2", func() bool {
		seen := storm(t, rs, "", 30)
		return seen["tok-2"] == 30
	})
	if n := b.n.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
}

// A replica without a token (just started) takes the valid token another
// replica stored, even while that one is being refreshed, instead of waiting.
func TestColdReplicaTakesValidSharedToken(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(2*time.Second, 800*time.Millisecond)
	a := newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second}) // capped to 500 ms
	if _, _, err := a.cache.Get(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1600 * time.Millisecond)
	if tok, _, _ := a.cache.Get(context.Background(), ""); tok.Value != "tok-1" { // starts the slow refresh
		t.Fatalf("a: %s", tok.Value)
	}
	cold := newReplica(t, srv, b, replicaOpts{skew: 30 * time.Second})
	start := time.Now()
	tok, _, err := cold.cache.Get(context.Background(), "")
	if err != nil || tok.Value != "tok-1" || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("cold replica: %v %v after %v; want tok-1 at once", tok, err, time.Since(start))
	}
	eventually(t, 3*time.Second, "both on tok-2", func() bool {
		ta, _, _ := a.cache.Get(context.Background(), "")
		tc, _, _ := cold.cache.Get(context.Background(), "")
		return ta.Value == "tok-2" && tc.Value == "tok-2"
	})
	if n := b.n.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}
}

// Rotating refresh tokens: two replicas × 200 concurrent requests for one
// subject after expiry refresh it once, and no refresh token is used twice.
func TestRotatingSubjectRefreshSingle(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Second, 100*time.Millisecond)
	rs := []*replica{newReplica(t, srv, b, replicaOpts{}), newReplica(t, srv, b, replicaOpts{})}
	for round := range 3 {
		seen := storm(t, rs, "alice", 400)
		if len(seen) != 1 || b.n.Load() != int64(round+1) {
			t.Fatalf("round %d: %d refreshes, tokens %v", round, b.n.Load(), seen)
		}
		time.Sleep(1100 * time.Millisecond)
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
	if err := c.Del(context.Background(), "tp-test:keycheck").Err(); err != nil {
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
	started := make(chan struct{})
	var wg sync.WaitGroup
	var got *tokencache.Token
	wg.Go(func() {
		var err error
		got, _, err = ra.Refresh(context.Background(), "", 0, fresh, func(context.Context) (*tokencache.Token, error) {
			close(started)
			time.Sleep(2500 * time.Millisecond) // outlives the lock
			return mk("late"), nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	<-started
	eventually(t, 5*time.Second, "the lock expires", func() bool {
		n, _ := b.client.Exists(context.Background(), ra.keys("").lock).Result()
		return n == 0
	})
	tb, gb, err := rb.Refresh(context.Background(), "", 0, func(*tokencache.Token) bool { return false }, func(context.Context) (*tokencache.Token, error) {
		return mk("newer"), nil
	})
	if err != nil || tb.Value != "newer" {
		t.Fatalf("second writer: %v %v", tb, err)
	}
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
	if !errors.As(err, &te) || te.RetryAfter < 1900*time.Millisecond {
		t.Fatalf("first: %v", err)
	}
	_, _, err = other.cache.Get(context.Background(), "")
	if !errors.As(err, &te) || b.n.Load() != 0 || len(b.arrivalTimes()) != 1 {
		t.Fatalf("other replica during the back-off: %v, %d requests; want throttled, none sent", err, len(b.arrivalTimes()))
	}
	time.Sleep(2100 * time.Millisecond)
	if _, _, err := other.cache.Get(context.Background(), ""); err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
}
