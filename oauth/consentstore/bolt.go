package consentstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketConsents = []byte("consents")
	bucketMeta     = []byte("meta")
	keyCheck       = []byte("keycheck")
	keyCheckPlain  = []byte("tokenproxy consent store v1")
	keyCheckAAD    = []byte("tokenproxy-consent-keycheck")
)

// ErrWrongKey means the store was created with another key.
var ErrWrongKey = errors.New("the consent store key is not the one this store was created with")

// ErrHeld means another process (a running tokenproxy) holds the store
// file: bbolt lets one process at a time open it.
var ErrHeld = errors.New("another process, such as a running tokenproxy, holds the file (bbolt lets one process at a time open it)")

// Bolt is the embedded store: one bbolt file, every value sealed with
// AES-256-GCM. Each Put commits with fsync before it returns.
type Bolt struct {
	db   *bolt.DB
	seal *sealer
	path string
	// copyPath is the temporary copy a snapshot reads; "" for the file itself.
	copyPath string
	// now is the clock of started consents' expiry (SetClock); nil: time.Now.
	now func() time.Time
}

// lockTimeout is how long OpenBolt waits for another process to release
// the file.
const lockTimeout = 2 * time.Second

// OpenBolt opens (creating if needed) the store file at path with key (32
// bytes). A new store records a key check; an existing one must open it with
// key, so a wrong or missing key is an error here, at start-up, never a
// silently empty store.
func OpenBolt(path string, key []byte) (*Bolt, error) {
	return openBolt(path, key, lockTimeout)
}

func openBolt(path string, key []byte, timeout time.Duration) (*Bolt, error) {
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		err = ErrHeld
	}
	if err != nil {
		return nil, fmt.Errorf("opening the consent store %s: %w", path, err)
	}
	b := &Bolt{db: db, seal: s, path: path}
	if err := b.checkKey(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bolt) checkKey() error {
	return b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("consent store %s: %w", b.path, err)
		}
		cons, err := tx.CreateBucketIfNotExists(bucketConsents)
		if err != nil {
			return fmt.Errorf("consent store %s: %w", b.path, err)
		}
		kc := meta.Get(keyCheck)
		if kc == nil {
			if k, _ := cons.Cursor().First(); k != nil {
				return fmt.Errorf("consent store %s holds consents but no key check record; refusing to guess the key", b.path)
			}
			return meta.Put(keyCheck, b.seal.seal(keyCheckPlain, keyCheckAAD))
		}
		return b.matchKey(kc)
	})
}

// matchKey checks that b's key opens the key check record kc.
func (b *Bolt) matchKey(kc []byte) error {
	p, err := b.seal.open(kc, keyCheckAAD)
	if err != nil || !bytes.Equal(p, keyCheckPlain) {
		return fmt.Errorf("consent store %s: %w", b.path, ErrWrongKey)
	}
	return nil
}

// dbKey is route \0 owner \0 subject; names are validated to hold no NUL.
func dbKey(k Key) []byte {
	return []byte(k.Route + "\x00" + k.Owner + "\x00" + k.Subject)
}

func splitKey(b []byte) (Key, bool) {
	p := bytes.SplitN(b, []byte{0}, 3)
	if len(p) != 3 {
		return Key{}, false
	}
	return Key{string(p[0]), string(p[1]), string(p[2])}, true
}

// value layout: generation (8 bytes, big endian) | nonce | ciphertext.
func (b *Bolt) decode(k Key, v []byte) (*Consent, error) {
	if len(v) < 8 {
		return nil, errOpen
	}
	gen := binary.BigEndian.Uint64(v)
	p, err := b.seal.open(v[8:], aad(k, gen))
	if err != nil {
		return nil, err
	}
	c, err := decodeRecord(p, gen)
	if err != nil {
		return nil, err
	}
	if c.Key() != k {
		return nil, errOpen
	}
	return c, nil
}

// Get implements Store.
func (b *Bolt) Get(_ context.Context, k Key) (*Consent, error) {
	var c *Consent
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketConsents).Get(dbKey(k))
		if v == nil {
			return ErrNotFound
		}
		var err error
		c, err = b.decode(k, v)
		return err
	})
	return c, err
}

// Put implements Store.
func (b *Bolt) Put(_ context.Context, c *Consent, expect uint64) (uint64, error) {
	if err := ValidateKey(c.Key()); err != nil {
		return 0, err
	}
	plain, err := encodeRecord(c)
	if err != nil {
		return 0, err
	}
	var gen uint64
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketConsents)
		key := dbKey(c.Key())
		var cur uint64
		if v := bk.Get(key); len(v) >= 8 {
			cur = binary.BigEndian.Uint64(v)
		}
		if cur != expect {
			return ErrConflict
		}
		gen = cur + 1
		val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(plain)+28), gen)
		val = append(val, b.seal.seal(plain, aad(c.Key(), gen))...)
		return bk.Put(key, val)
	})
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return 0, err
		}
		return 0, fmt.Errorf("writing consent for subject %q on route %s: %w", c.Subject, c.Route, err)
	}
	return gen, nil
}

// Delete implements Store.
func (b *Bolt) Delete(_ context.Context, k Key) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketConsents).Delete(dbKey(k)) })
}

// List implements Store. It decrypts every matching record.
func (b *Bolt) List(ctx context.Context, f Filter) ([]*Consent, error) {
	var out []*Consent
	err := b.Scan(ctx, f, func(c *Consent) error { out = append(out, c); return nil })
	return out, err
}

// Scan calls fn with each consent f selects, one at a time, without holding
// them all in memory (a census of 100,000 consents).
func (b *Bolt) Scan(ctx context.Context, f Filter, fn func(*Consent) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketConsents).Cursor()
		var k, v []byte
		if f.Route != "" {
			k, v = cur.Seek([]byte(f.Route + "\x00"))
		} else {
			k, v = cur.First()
		}
		for ; k != nil; k, v = cur.Next() {
			key, ok := splitKey(k)
			if !ok || (f.Route != "" && key.Route != f.Route) {
				break
			}
			if !f.AnyOwner && key.Owner != f.Owner {
				continue
			}
			c, err := b.decode(key, v)
			if err != nil {
				return err
			}
			if f.match(c) {
				if err := fn(c); err != nil {
					return err
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close implements Store; a snapshot also removes its copy.
func (b *Bolt) Close() error {
	err := b.db.Close()
	if b.copyPath != "" {
		err = errors.Join(err, os.Remove(b.copyPath)) //nolint:gosec // G703: the temporary copy this process made
	}
	return err
}

// ValidateKey checks that route, owner and subject are usable names: 1 to
// 200 characters among letters, digits and . _ - : @ + = ~ (owner may be
// empty). The set keeps names safe in Vault paths, headers and URLs.
func ValidateKey(k Key) error {
	for _, p := range []struct{ what, v string }{{"route", k.Route}, {"owner", k.Owner}, {"subject", k.Subject}} {
		if p.v == "" && p.what == "owner" {
			continue
		}
		if len(p.v) == 0 || len(p.v) > 200 {
			return fmt.Errorf("the %s name must be 1 to 200 characters", p.what)
		}
		for i := 0; i < len(p.v); i++ {
			if !nameChar(p.v[i]) {
				return fmt.Errorf("the %s name may hold only letters, digits and . _ - : @ + = ~", p.what)
			}
		}
	}
	return nil
}

func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@+=~", c) >= 0
}
