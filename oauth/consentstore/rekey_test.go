package consentstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	bolt "go.etcd.io/bbolt"
)

var (
	keyA = bytes.Repeat([]byte{0xa}, KeySize)
	keyB = bytes.Repeat([]byte{0xb}, KeySize)
)

func keys(t testing.TB, ks ...StoreKey) *Keyring {
	t.Helper()
	r, err := NewKeyring(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewKeyring(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []StoreKey
		want string
	}{
		{"none", nil, "at least one key"},
		{"empty id", []StoreKey{{ID: "", Key: keyA}}, "1 to 32"},
		{"long id", []StoreKey{{ID: strings.Repeat("k", 33), Key: keyA}}, "1 to 32"},
		{"id with a slash", []StoreKey{{ID: "a/b", Key: keyA}}, "letters, digits"},
		{"twice", []StoreKey{{ID: "a", Key: keyA}, {ID: "a", Key: keyB}}, "listed twice"},
		{"short key", []StoreKey{{ID: "a", Key: keyA[:16]}}, "must be 32"},
		{"two", []StoreKey{{ID: "b", Key: keyB}, {ID: "a", Key: keyA}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewKeyring(tc.keys...)
			if tc.want == "" {
				if err != nil || r.Newest() != "b" || strings.Join(r.IDs(), ",") != "b,a" {
					t.Fatalf("%v %v", r, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want an error saying %q", err, tc.want)
			}
		})
	}
}

// The newest key seals; a ring that lists the sealing key opens the value,
// one that does not names the key id it lacks.
func TestKeyringSealsUnderNewestOpensAny(t *testing.T) {
	old, both, fresh := keys(t, StoreKey{ID: "a", Key: keyA}), keys(t, StoreKey{ID: "b", Key: keyB}, StoreKey{ID: "a", Key: keyA}), keys(t, StoreKey{ID: "b", Key: keyB})
	ad := []byte("ad")
	v := old.seal([]byte("x"), ad)
	if id, _, _ := sealedKeyID(v); id != "a" {
		t.Fatalf("sealed under %q", id)
	}
	if p, err := both.open(v, ad); err != nil || string(p) != "x" {
		t.Fatalf("%q %v", p, err)
	}
	var uk *UnknownKeyError
	if _, err := fresh.open(v, ad); !errors.As(err, &uk) || uk.ID != "a" {
		t.Fatalf("%v; want UnknownKeyError naming a", err)
	}
	if id, _, _ := sealedKeyID(both.seal([]byte("x"), ad)); id != "b" {
		t.Fatalf("both seal under %q; want b", id)
	}
	// Same id, other key: the value does not open.
	if _, err := keys(t, StoreKey{ID: "a", Key: keyB}).open(v, ad); !errors.Is(err, errOpen) {
		t.Fatalf("%v", err)
	}
}

// rotatable opens one sealed store (the same file or database every time)
// with a given keyring.
type rotatable func(t *testing.T, r *Keyring) (interface {
	Store
	Rekeyer
}, error)

func boltRotatable(t *testing.T) rotatable {
	path := filepath.Join(t.TempDir(), "consents.db")
	return func(_ *testing.T, r *Keyring) (interface {
		Store
		Rekeyer
	}, error) {
		return OpenBolt(path, r)
	}
}

func postgresRotatable(t *testing.T) rotatable {
	srv := pgtest.Start(t)
	cfg := pgConfig(srv, srv.NewDatabase(t))
	return func(_ *testing.T, r *Keyring) (interface {
		Store
		Rekeyer
	}, error) {
		return OpenPostgres(context.Background(), cfg, r, true)
	}
}

// TestKeyRotation walks a rotation: a store sealed under a, the new key b
// listed first, rekey, a removed; at each step a missing or wrong key is a
// start-up error naming the key id, and every consent stays readable.
func TestKeyRotation(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) rotatable
	}{{"bolt", boltRotatable}, {"postgres", postgresRotatable}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			open := tc.open(t)
			s, err := open(t, keys(t, StoreKey{ID: "a", Key: keyA}))
			if err != nil {
				t.Fatal(err)
			}
			const n = 50
			for i := range n {
				if _, err := s.Put(ctx, sample("psu-"+strconv.Itoa(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.PutPending(ctx, &Pending{State: "state-1", Route: "bpce", Subject: "psu-new", Verifier: "v",
				Expires: time.Now().Add(10 * time.Minute)}); err != nil {
				t.Fatal(err)
			}
			s.Close()

			// b alone: the values need a.
			var mk *MissingKeyError
			if _, err := open(t, keys(t, StoreKey{ID: "b", Key: keyB})); !errors.As(err, &mk) || strings.Join(mk.IDs, ",") != "a" {
				t.Fatalf("b alone over values sealed under a: %v; want MissingKeyError naming a", err)
			}
			// Another key under a's id.
			if _, err := open(t, keys(t, StoreKey{ID: "b", Key: keyB}, StoreKey{ID: "a", Key: keyB})); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), `"a"`) {
				t.Fatalf("another key under id a: %v; want ErrWrongKey naming a", err)
			}

			s, err = open(t, keys(t, StoreKey{ID: "b", Key: keyB}, StoreKey{ID: "a", Key: keyA}))
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.Get(ctx, Key{"bpce", "app-a", "psu-0"})
			if err != nil || c.RefreshToken.Reveal() != "rt-secret-psu-0" {
				t.Fatalf("%v %v", c, err)
			}
			if _, err := s.Put(ctx, c, c.Generation); err != nil { // now sealed under b
				t.Fatal(err)
			}
			if stale, err := s.Stale(ctx); err != nil || stale != n { // 49 consents and the started one
				t.Fatalf("stale %d %v; want %d", stale, err, n)
			}
			var calls int
			st, err := s.Rekey(ctx, 7, func(RekeyStats) { calls++ })
			if err != nil || st.Resealed != n || st.Remaining != 0 || calls < n/7 {
				t.Fatalf("rekey %+v %v after %d progress calls; want %d re-sealed in batches of 7, none remaining", st, err, calls, n)
			}
			if st, err := s.Rekey(ctx, 7, nil); err != nil || st.Resealed != 0 {
				t.Fatalf("a second rekey %+v %v; want nothing to do", st, err)
			}
			s.Close()

			s, err = open(t, keys(t, StoreKey{ID: "b", Key: keyB}))
			if err != nil {
				t.Fatalf("b alone after the rekey: %v", err)
			}
			defer s.Close()
			all, err := s.List(ctx, Filter{Route: "bpce", AnyOwner: true})
			if err != nil || len(all) != n {
				t.Fatalf("%d consents %v after the rekey; want %d", len(all), err, n)
			}
			for _, c := range all {
				if c.RefreshToken.Reveal() != "rt-secret-"+c.Subject {
					t.Fatalf("%s holds %q", c.Subject, c.RefreshToken.Reveal())
				}
			}
			if p, err := s.TakePending(ctx, "state-1"); err != nil || p.Subject != "psu-new" {
				t.Fatalf("the started consent after the rekey: %v %v", p, err)
			}
		})
	}
}

// A store written before key ids (one key check, values without a key id)
// opens with its key under any id, re-seals under the newest key, and then
// no longer needs the old key.
func TestBoltStoreFromBeforeKeyIDs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "consents.db")
	writeLegacyBolt(t, path, keyA, 20)

	var mk *MissingKeyError
	if _, err := OpenBolt(path, keys(t, StoreKey{ID: "b", Key: keyB})); !errors.As(err, &mk) || len(mk.IDs) != 1 || mk.IDs[0] != "" ||
		!strings.Contains(err.Error(), "first key") {
		t.Fatalf("another key over a store from before key ids: %v; want MissingKeyError for its first key", err)
	}
	s, err := OpenBolt(path, keys(t, StoreKey{ID: "b", Key: keyB}, StoreKey{ID: "old", Key: keyA}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Get(ctx, Key{"bpce", "app-a", "psu-3"})
	if err != nil || c.RefreshToken.Reveal() != "rt-secret-psu-3" || c.Generation != 1 {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := s.Put(ctx, c, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, c, 1); !errors.Is(err, ErrConflict) {
		t.Fatalf("a stale generation over a re-sealed value: %v; want ErrConflict", err)
	}
	if st, err := s.Rekey(ctx, DefaultRekeyBatch, nil); err != nil || st.Resealed != 19 || st.Remaining != 0 {
		t.Fatalf("rekey %+v %v", st, err)
	}
	s.Close()
	s, err = OpenBolt(path, keys(t, StoreKey{ID: "b", Key: keyB}))
	if err != nil {
		t.Fatalf("b alone after the rekey: %v", err)
	}
	defer s.Close()
	if all, err := s.List(ctx, Filter{Route: "bpce", AnyOwner: true}); err != nil || len(all) != 20 {
		t.Fatalf("%d %v", len(all), err)
	}
}

// writeLegacyBolt writes a store as tokenproxy wrote it before key ids:
// meta/keycheck and consents values generation | nonce | ciphertext.
func writeLegacyBolt(t *testing.T, path string, key []byte, n int) {
	t.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	seal := func(plain, ad []byte) []byte {
		nonce := make([]byte, a.NonceSize())
		_, _ = crand.Read(nonce)
		return a.Seal(nonce, nonce, plain, ad)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bucketMeta)
		cons, _ := tx.CreateBucket(bucketConsents)
		if err := meta.Put(legacyKeyCheck, seal(keyCheckPlain, keyCheckAAD)); err != nil {
			return err
		}
		for i := range n {
			c := sample("psu-" + strconv.Itoa(i))
			plain, err := encodeRecord(c)
			if err != nil {
				return err
			}
			if err := cons.Put(dbKey(c.Key()), append(binary.BigEndian.AppendUint64(nil, 1), seal(plain, aad(c.Key(), 1))...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Rekey under load on Postgres: replicas (new key first) refresh and read
// consents while the rekey runs; every read succeeds throughout and no
// value is left under the old key.
func TestPostgresRekeyUnderLoad(t *testing.T) {
	ctx := context.Background()
	open := postgresRotatable(t)
	s, err := open(t, keys(t, StoreKey{ID: "a", Key: keyA}))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	rows := make([]*Consent, n)
	for i := range rows {
		rows[i] = sample("psu-" + strconv.Itoa(i))
	}
	pgBulkLoadConsents(t, s.(*Postgres), rows)
	s.Close()

	both := keys(t, StoreKey{ID: "b", Key: keyB}, StoreKey{ID: "a", Key: keyA})
	var replicas []Store
	for range 2 {
		r, err := open(t, both)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		replicas = append(replicas, r)
	}
	rk, err := open(t, both)
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads, writes atomic.Int64
	for i, r := range replicas {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i+1), 1)) //nolint:gosec // G115: a small index
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := Key{"bpce", "app-a", "psu-" + strconv.Itoa(rng.IntN(n))}
				c, err := r.Get(ctx, k)
				if err != nil {
					t.Errorf("reading %s during the rekey: %v", k.Subject, err)
					return
				}
				reads.Add(1)
				if i == 0 { // this replica also refreshes
					if _, err := r.Put(ctx, c, c.Generation); err != nil && !errors.Is(err, ErrConflict) {
						t.Errorf("refreshing %s during the rekey: %v", k.Subject, err)
						return
					}
					writes.Add(1)
				}
			}
		})
	}
	st, err := rk.Rekey(ctx, 100, nil)
	close(stop)
	wg.Wait()
	if err != nil || st.Remaining != 0 || st.Resealed+int(writes.Load()) < n/2 {
		t.Fatalf("rekey %+v %v (%d refreshes meanwhile)", st, err, writes.Load())
	}
	if reads.Load() == 0 || writes.Load() == 0 {
		t.Fatalf("%d reads and %d writes during the rekey; want both", reads.Load(), writes.Load())
	}
	var old int
	if err := rk.(*Postgres).pool.QueryRow(ctx, `SELECT count(*) FROM consents WHERE key_id <> 'b' OR get_byte(value, 1) <> ascii('b')`).Scan(&old); err != nil || old != 0 {
		t.Fatalf("%d rows not sealed under b %v", old, err)
	}
	t.Logf("re-sealed %d, %d refreshes and %d reads meanwhile", st.Resealed, writes.Load(), reads.Load())
}

// pgBulkLoadConsents copies cs, sealed under s's newest key, in one COPY.
func pgBulkLoadConsents(t testing.TB, s *Postgres, cs []*Consent) {
	t.Helper()
	rows := make([][]any, 0, len(cs))
	for _, c := range cs {
		plain, err := encodeRecord(c)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, []any{c.Route, c.Owner, c.Subject, int64(1), s.ring.seal(plain, aad(c.Key(), 1)), s.ring.Newest(), string(c.State), c.RefreshExpiry})
	}
	if _, err := s.pool.CopyFrom(context.Background(), pgx.Identifier{"consents"},
		[]string{"route", "owner", "subject", "generation", "value", "key_id", "state", "refresh_expiry"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
}
