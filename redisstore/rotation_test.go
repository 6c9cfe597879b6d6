package redisstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

var (
	keyA = bytes.Repeat([]byte{0xa1}, 32)
	keyB = bytes.Repeat([]byte{0xb2}, 32)
)

// storedKeyID is the key id the stored token of subject on route names
// ("" for version 1), read straight from Redis.
func storedKeyID(t *testing.T, r *replica, route, subject string) (id string, version byte) {
	t.Helper()
	rs := r.shared.Route(route, time.Second).(*routeStore)
	blob, err := r.client.HGet(context.Background(), rs.keys(subject).tok, "val").Bytes()
	if err != nil {
		t.Fatalf("reading the stored token of %s: %v", subject, err)
	}
	return sealedKeyID(blob), blob[0]
}

// The rotation walk: [a] seals; [b, a] opens a's tokens and seals under b;
// [b] alone takes a's tokens for absent (fetched anew, counted, logged
// once), never for an error; no request fails on the way, even with all
// three configurations serving at once.
func TestKeyRotation(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Hour, 0)
	ctx := context.Background()

	// 1. a alone seals.
	ra := newReplica(t, srv, bk, replicaOpts{keys: []Key{{ID: "a", Key: keyA}}})
	for _, sub := range []string{"alice", "carol"} {
		if _, _, err := ra.cache.Get(ctx, sub); err != nil {
			t.Fatal(err)
		}
		if id, v := storedKeyID(t, ra, "bc", sub); id != "a" || v != sealVersionKeyed {
			t.Fatalf("token of %s sealed under %q (version %d); want a, version 2", sub, id, v)
		}
	}

	// 2. b, a: a's tokens open (no token request), new ones seal under b.
	rba := newReplica(t, srv, bk, replicaOpts{keys: []Key{{ID: "b", Key: keyB}, {ID: "a", Key: keyA}}})
	before := bk.n.Load()
	if tok, _, err := rba.cache.Get(ctx, "alice"); err != nil || tok.Value != "tok-1" {
		t.Fatalf("b,a reading a's token: %v, %v; want tok-1", tok, err)
	}
	if n := bk.n.Load() - before; n != 0 {
		t.Fatalf("%d token requests to read a token sealed under a", n)
	}
	if _, _, err := rba.cache.Get(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if id, _ := storedKeyID(t, rba, "bc", "bob"); id != "b" {
		t.Fatalf("b,a sealed under %q; want b", id)
	}

	// 3. b alone: a's token is absent, through the store's API...
	obs := &keyMissObserver{}
	rb := newReplica(t, srv, bk, replicaOpts{keys: []Key{{ID: "b", Key: keyB}}, obs: obs})
	rs := rb.shared.Route("bc", 10*time.Second).(*routeStore)
	tok, gen, err := rs.load(ctx, "carol", rs.keys("carol"))
	if err != nil || tok != nil || gen == 0 {
		t.Fatalf("load of a token sealed under a key not held: %v, gen %d, %v; want absent with its generation", tok, gen, err)
	}
	// ... and through the token cache: fetched anew, no error, health intact.
	before = bk.n.Load()
	for _, sub := range []string{"alice", "carol"} {
		if _, _, err := rb.cache.Get(ctx, sub); err != nil {
			t.Fatalf("b alone, %s: %v", sub, err)
		}
		if id, _ := storedKeyID(t, rb, "bc", sub); id != "b" {
			t.Fatalf("b alone stored %s under %q; want b", sub, id)
		}
	}
	if n := bk.n.Load() - before; n != 2 {
		t.Fatalf("%d token requests for two tokens under a removed key; want 2", n)
	}
	if tok, _, err := rb.cache.Get(ctx, "bob"); err != nil || tok.Value != "tok-3" {
		t.Fatalf("b alone reading b's token: %v, %v; want tok-3", tok, err)
	}
	if err := rb.shared.Healthy(); err != nil {
		t.Fatalf("health after misses: %v", err)
	}
	if m := rb.shared.KeyMisses(); m != 5 { // the load above, then two reads (before and under the fetch lock) for alice and carol each
		t.Fatalf("%d key misses counted; want 5", m)
	}
	if m := obs.misses.Load(); m != 5 {
		t.Fatalf("the observer was told of %d key misses; want 5", m)
	}
	if n := rb.log.Count(`key id \"a\", which is not configured`); n != 1 {
		t.Fatalf("the miss under key a was logged %d times; want once:\n%s", n, rb.log)
	}

	// All three at once on a fresh subject: no request fails, and each
	// replica fetches at most once (then serves from memory).
	before = bk.n.Load()
	storm(t, []*replica{ra, rba, rb}, "dave", 60)
	if n := bk.n.Load() - before; n < 1 || n > 3 {
		t.Fatalf("%d token requests for one subject on three replicas; want 1 to 3", n)
	}
	for _, r := range []*replica{ra, rba, rb} {
		if err := r.shared.Healthy(); err != nil {
			t.Fatalf("health: %v", err)
		}
	}
}

type keyMissObserver struct {
	fenceObserver
	misses atomic.Int64
}

func (o *keyMissObserver) KeyMiss(_, id string) {
	if id == "a" {
		o.misses.Add(1)
	}
}

// A key under an id the store knows must be the key it knows: another is
// refused at start-up, naming the id.
func TestKeyRotationWrongKeyUnderKnownID(t *testing.T) {
	srv := redistest.Start(t)
	newReplica(t, srv, newBank(time.Hour, 0), replicaOpts{keys: []Key{{ID: "a", Key: keyA}}})
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	for _, keys := range [][]Key{
		{{ID: "a", Key: keyB}},
		{{ID: "b", Key: keyB}, {ID: "a", Key: keyB}},
	} {
		_, err := New(context.Background(), Options{Client: c, Keys: keys, Prefix: "tp-test", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second})
		var wk *WrongKeyError
		if !errors.As(err, &wk) || wk.ID != "a" || !strings.Contains(err.Error(), `encryption key "a"`) {
			t.Fatalf("New with another key under id a: %v; want *WrongKeyError naming a", err)
		}
		if bytes.Contains([]byte(err.Error()), keyB) {
			t.Fatal("the error shows the key")
		}
	}
	// Bad ids and duplicates are refused before Redis is asked.
	for _, keys := range [][]Key{{{ID: "", Key: keyA}}, {{ID: "a b", Key: keyA}}, {{ID: "a", Key: keyA}, {ID: "a", Key: keyB}}, {{ID: "a", Key: keyA[:16]}}} {
		if _, err := New(context.Background(), Options{Client: c, Keys: keys, Prefix: "tp-test", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second}); err == nil {
			t.Fatalf("New accepted keys %v", keys)
		}
	}
}

// legacySeal seals as releases before key ids did: 1 | nonce | ciphertext,
// the additional data alone.
func legacySeal(t *testing.T, key, plain, aad []byte) []byte {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, a.NonceSize())
	_, _ = rand.Read(nonce)
	return a.Seal(append([]byte{1}, nonce...), nonce, plain, aad)
}

func legacyOpen(key, blob, aad []byte) ([]byte, error) {
	blk, _ := aes.NewCipher(key)
	a, _ := cipher.NewGCM(blk)
	n := a.NonceSize()
	if len(blob) < 1+n || blob[0] != 1 {
		return nil, errors.New("not version 1")
	}
	return a.Open(nil, blob[1:1+n], blob[1+n:], aad)
}

// A store written before key ids: its key check and a token sealed in
// version 1 under the one key.
func legacyStore(t *testing.T, srv *redistest.Server, key []byte) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "tp-test:keycheck", legacySeal(t, key, []byte("ok"), []byte("tokenproxy key check")), 0).Err(); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	plain, _ := json.Marshal(sealedToken{Value: "tok-legacy", Type: "Bearer", Header: "Bearer tok-legacy", Expiry: exp.UnixNano()})
	rs := &routeStore{s: &Shared{opts: Options{Prefix: "tp-test"}}, route: "bc"}
	k := rs.keys("alice")
	if err := c.HSet(ctx, k.tok, "gen", 5, "val", legacySeal(t, key, plain, tokenAAD("bc", "alice", 5))).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, k.gen, 5, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// An upgrade loses no shared token: the version 1 token opens with the key
// that opens the store's key check from before key ids, given alone or
// under any id beside others; while that key seals, it keeps sealing in
// version 1 (replicas of the earlier release still read it). A store whose
// old check no configured key opens, and that knows none of the keys, was
// sealed under another key: refused.
func TestKeyRotationLegacyStore(t *testing.T) {
	ctx := context.Background()
	t.Run("key alone", func(t *testing.T) {
		srv := redistest.Start(t)
		legacyStore(t, srv, keyA)
		bk := newBank(time.Hour, 0)
		r := newReplica(t, srv, bk, replicaOpts{key: keyA})
		if tok, _, err := r.cache.Get(ctx, "alice"); err != nil || tok.Value != "tok-legacy" {
			t.Fatalf("legacy token: %v, %v", tok, err)
		}
		if _, _, err := r.cache.Get(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		rs := r.shared.Route("bc", time.Second).(*routeStore)
		vals, err := r.client.HMGet(ctx, rs.keys("bob").tok, "gen", "val").Result()
		if err != nil {
			t.Fatal(err)
		}
		gs, _ := vals[0].(string)
		blob, _ := vals[1].(string)
		gen, err := strconv.ParseUint(gs, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := legacyOpen(keyA, []byte(blob), tokenAAD("bc", "bob", gen)); err != nil {
			t.Fatalf("a token written on a store from before key ids does not open as that release opened it: %v", err)
		}
	})
	t.Run("key under another id, after a new one", func(t *testing.T) {
		srv := redistest.Start(t)
		legacyStore(t, srv, keyA)
		bk := newBank(time.Hour, 0)
		r := newReplica(t, srv, bk, replicaOpts{keys: []Key{{ID: "2026-12", Key: keyB}, {ID: "old", Key: keyA}}})
		if tok, _, err := r.cache.Get(ctx, "alice"); err != nil || tok.Value != "tok-legacy" {
			t.Fatalf("legacy token: %v, %v", tok, err)
		}
		if _, _, err := r.cache.Get(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if id, _ := storedKeyID(t, r, "bc", "bob"); id != "2026-12" {
			t.Fatalf("new token sealed under %q; want 2026-12", id)
		}
		// Then the old key removed: the legacy token is absent, not an error.
		rb := newReplica(t, srv, bk, replicaOpts{keys: []Key{{ID: "2026-12", Key: keyB}}})
		before := bk.n.Load()
		if tok, _, err := rb.cache.Get(ctx, "alice"); err != nil || tok.Value == "tok-legacy" {
			t.Fatalf("legacy token without its key: %v, %v; want a new token", tok, err)
		}
		if bk.n.Load()-before != 1 || rb.shared.KeyMisses() != 2 { // read before and under the fetch lock
			t.Fatalf("%d requests, %d misses; want 1 and 2", bk.n.Load()-before, rb.shared.KeyMisses())
		}
	})
	t.Run("another key", func(t *testing.T) {
		srv := redistest.Start(t)
		legacyStore(t, srv, keyA)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer c.Close()
		_, err := New(ctx, Options{Client: c, Key: keyB, Prefix: "tp-test", MaxReplicas: 1, PollInterval: time.Second, HealthInterval: time.Second})
		var wk *WrongKeyError
		if !errors.As(err, &wk) || !strings.Contains(err.Error(), "tp-test:keycheck)") {
			t.Fatalf("New with another key on a store from before key ids: %v; want *WrongKeyError", err)
		}
	})
}
