package consentstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketConsents = []byte("consents")
	bucketMeta     = []byte("meta")
	// legacyKeyCheck is the key check of a store written before key ids.
	legacyKeyCheck = []byte("keycheck")
)

// ErrHeld means another process (a running tokenproxy) holds the store
// file: bbolt lets one process at a time open it.
var ErrHeld = errors.New("another process, such as a running tokenproxy, holds the file (bbolt lets one process at a time open it)")

// Bolt is the embedded store: one bbolt file, every value sealed with
// AES-256-GCM under the keyring's newest key. Each Put commits with fsync
// before it returns.
type Bolt struct {
	db   *bolt.DB
	ring *Keyring
	// legacyID is the key that opens values from before key ids ("": none).
	legacyID string
	path     string
	// copyPath is the temporary copy a snapshot reads; "" for the file itself.
	copyPath string
	// now is the clock of started consents' expiry (SetClock); nil: time.Now.
	now func() time.Time
	// sweeper deletes past access counts once a day.
	sweeper accessSweeper
	// leases are the outbox's in-process leases and exclusive jobs.
	leasesOnce sync.Once
	leases     *boltLeases
}

// lockTimeout is how long OpenBolt waits for another process to release
// the file.
const lockTimeout = 2 * time.Second

// OpenBolt opens (creating if needed) the store file at path with the keys
// of ring. A new store records a key check per key; an existing one must
// open the checks of the keys it knows and hold no value under a key ring
// lacks, so a wrong or missing key is an error here, at start-up, never a
// silently empty store (ErrWrongKey, *MissingKeyError).
func OpenBolt(path string, ring *Keyring) (*Bolt, error) {
	return openBolt(path, ring, lockTimeout)
}

func openBolt(path string, ring *Keyring, timeout time.Duration) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		err = ErrHeld
	}
	if err != nil {
		return nil, fmt.Errorf("opening the consent store %s: %w", path, err)
	}
	b := &Bolt{db: db, ring: ring, path: path}
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
		if _, err := tx.CreateBucketIfNotExists(bucketConsents); err != nil {
			return fmt.Errorf("consent store %s: %w", b.path, err)
		}
		write, err := b.matchKeys(tx)
		if err != nil {
			return err
		}
		for _, id := range write {
			if err := meta.Put([]byte(keyCheckName(id)), b.ring.keyCheck(id)); err != nil {
				return fmt.Errorf("consent store %s: %w", b.path, err)
			}
		}
		return nil
	})
}

// matchKeys checks the ring against the store's key checks and values
// (Keyring.checkKeys, Keyring.missing), sets b.legacyID and returns the ids
// whose key check is still to be written.
func (b *Bolt) matchKeys(tx *bolt.Tx) ([]string, error) {
	meta, cons := tx.Bucket(bucketMeta), tx.Bucket(bucketConsents)
	checks := map[string][]byte{}
	var legacy []byte
	if meta != nil {
		c := meta.Cursor()
		pfx := []byte(keyCheckName(""))
		for k, v := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
			checks[string(k[len(pfx):])] = bytes.Clone(v)
		}
		legacy = meta.Get(legacyKeyCheck)
	}
	if len(checks) == 0 && legacy == nil && cons != nil {
		if k, _ := cons.Cursor().First(); k != nil {
			return nil, fmt.Errorf("consent store %s holds consents but no key check record; refusing to guess the key", b.path)
		}
	}
	write, legacyID, err := b.ring.checkKeys(checks, legacy)
	if err != nil {
		return nil, fmt.Errorf("consent store %s: %w", b.path, err)
	}
	b.legacyID = legacyID
	need := map[string]bool{}
	b.eachSealed(tx, func(_, _ []byte, id string) { need[id] = true })
	if err := b.ring.missing(need, legacyID); err != nil {
		return nil, fmt.Errorf("consent store %s: %w", b.path, err)
	}
	return write, nil
}

// eachSealed calls fn with every stored value's bucket, key and key id
// ("" for a value from before key ids).
func (b *Bolt) eachSealed(tx *bolt.Tx, fn func(bucket, k []byte, id string)) {
	for _, name := range [][]byte{bucketConsents, bucketPending} {
		bk := tx.Bucket(name)
		if bk == nil {
			continue
		}
		_ = bk.ForEach(func(k, v []byte) error {
			fn(name, k, valueKeyID(name, v))
			return nil
		})
	}
}

// A consent's value is its generation (8 bytes, big endian) with keyedFlag
// set, then the sealed record (see Keyring.seal). A value from before key
// ids lacks the flag and holds nonce | ciphertext under the legacy key.
// A started consent's value is its expiry (8 bytes) and the sealed record.
const keyedFlag = 1 << 63

// valueKeyID is the key id a stored value of bucket names; "" for a
// consent from before key ids, "?" for a malformed value.
func valueKeyID(bucket, v []byte) string {
	if len(v) < 8 {
		return "?"
	}
	if bytes.Equal(bucket, bucketConsents) && binary.BigEndian.Uint64(v)&keyedFlag == 0 {
		return ""
	}
	id, _, ok := sealedKeyID(v[8:])
	if !ok {
		return "?"
	}
	return id
}

// openValue opens the consent value v stored under k.
func (b *Bolt) openValue(k Key, v []byte) (plain []byte, gen uint64, err error) {
	if len(v) < 8 {
		return nil, 0, errOpen
	}
	raw := binary.BigEndian.Uint64(v)
	gen = raw &^ keyedFlag
	if raw&keyedFlag != 0 {
		plain, err = b.ring.open(v[8:], aad(k, gen))
		return plain, gen, err
	}
	if b.legacyID == "" {
		return nil, 0, &MissingKeyError{IDs: []string{""}}
	}
	plain, err = openAEAD(b.ring.AEAD(b.legacyID), v[8:], aad(k, gen))
	return plain, gen, err
}

// sealValue is the consent value for plain at generation gen, sealed under
// the newest key.
func (b *Bolt) sealValue(k Key, gen uint64, plain []byte) []byte {
	val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+64+len(plain)), gen|keyedFlag)
	return append(val, b.ring.seal(plain, aad(k, gen))...)
}

// valueGen is the generation of a stored consent value (0 for none).
func valueGen(v []byte) uint64 {
	if len(v) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v) &^ keyedFlag
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

func (b *Bolt) decode(k Key, v []byte) (*Consent, error) {
	p, gen, err := b.openValue(k, v)
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
func (b *Bolt) Get(ctx context.Context, k Key) (*Consent, error) {
	_, sp := startOp(ctx, "bbolt", opGet)
	defer sp.End()
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
func (b *Bolt) Put(ctx context.Context, c *Consent, expect uint64) (uint64, error) {
	_, sp := startOp(ctx, "bbolt", opPut)
	defer sp.End()
	return b.put(c, expect, nil)
}

// put writes c at expect+1 and, in the same transaction, calls also.
func (b *Bolt) put(c *Consent, expect uint64, also func(*bolt.Tx) error) (uint64, error) {
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
		if valueGen(bk.Get(key)) != expect {
			return ErrConflict
		}
		gen = expect + 1
		if err := bk.Put(key, b.sealValue(c.Key(), gen, plain)); err != nil {
			return err
		}
		if also != nil {
			return also(tx)
		}
		return nil
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
func (b *Bolt) Delete(ctx context.Context, k Key) error {
	_, sp := startOp(ctx, "bbolt", opDelete)
	defer sp.End()
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
