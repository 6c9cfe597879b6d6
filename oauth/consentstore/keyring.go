package consentstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tokenproxy/tokenproxy/internal/keyset"
)

// DefaultKeyID is the id of a store key given alone (`key:` rather than
// `keys:`).
const DefaultKeyID = "default"

// StoreKey is one key of a sealed store; ID names it in every value it seals.
type StoreKey = keyset.Key

// Keyring is a sealed store's keys. The first seals every value written;
// any of them opens a value sealed under its id. Rotating a key is adding
// the new one first, re-sealing (Rekey), then removing the old one.
type Keyring struct{ *keyset.Set }

// NewKeyring checks keys (at least one; ids of 1 to 32 letters, digits and
// . _ -, each once; 32 bytes each) and returns their ring, keys[0] sealing.
func NewKeyring(keys ...StoreKey) (*Keyring, error) {
	s, err := keyset.New(keys...)
	if err != nil {
		return nil, err
	}
	return &Keyring{s}, nil
}

// SingleKey is the ring of one key under DefaultKeyID.
func SingleKey(key []byte) (*Keyring, error) {
	return NewKeyring(StoreKey{ID: DefaultKeyID, Key: key})
}

// seal seals plain under the newest key: id length (1 byte) | id | nonce |
// ciphertext, the additional data ad binding it to where it is kept.
func (r *Keyring) seal(plain, ad []byte) []byte { return r.sealWith(r.Newest(), plain, ad) }

func (r *Keyring) sealWith(id string, plain, ad []byte) []byte {
	a := r.AEAD(id)
	out := make([]byte, 0, 1+len(id)+a.NonceSize()+len(plain)+a.Overhead())
	out = append(append(out, byte(len(id))), id...) //nolint:gosec // G115: ids are at most 32 bytes (keyset.ValidateID)
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens (crypto/rand does not fail on Linux)
	}
	out = append(out, nonce...)
	return a.Seal(out, nonce, plain, ad)
}

// sealedKeyID returns the id a sealed value names and the rest of it.
func sealedKeyID(sealed []byte) (id string, rest []byte, ok bool) {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0]) || sealed[0] == 0 {
		return "", nil, false
	}
	n := int(sealed[0])
	return string(sealed[1 : 1+n]), sealed[1+n:], true
}

var errOpen = errors.New("a stored consent does not decrypt with this key (wrong key, or the value was moved or altered)")

// UnknownKeyError is a sealed value whose key id the ring lacks.
type UnknownKeyError struct{ ID string }

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("a stored value is sealed under key id %q, which is not configured; list it under keys (the first key seals, any listed key opens)", e.ID)
}

// open opens a value seal made, under whichever listed key it names.
func (r *Keyring) open(sealed, ad []byte) ([]byte, error) {
	id, rest, ok := sealedKeyID(sealed)
	if !ok {
		return nil, errOpen
	}
	a := r.AEAD(id)
	if a == nil {
		return nil, &UnknownKeyError{ID: id}
	}
	return openAEAD(a, rest, ad)
}

// openAEAD opens nonce | ciphertext.
func openAEAD(a cipher.AEAD, v, ad []byte) ([]byte, error) {
	n := a.NonceSize()
	if len(v) < n+a.Overhead() {
		return nil, errOpen
	}
	p, err := a.Open(nil, v[:n], v[n:], ad)
	if err != nil {
		return nil, errOpen
	}
	return p, nil
}

// Key checks. A store records, per key id, a known value sealed under that
// key when it first meets the id; a key given later under the same id must
// open it. Stores written before key ids hold one check without an id (the
// legacy check) and values without one, sealed under that check's key.
var (
	keyCheckPlain = []byte("tokenproxy consent store v1")
	keyCheckAAD   = []byte("tokenproxy-consent-keycheck")
)

// keyCheckName is the name of id's key check record.
func keyCheckName(id string) string { return "keycheck:" + id }

func keyCheckAD(id string) []byte { return append(append(slices.Clone(keyCheckAAD), 0), id...) }

// keyCheck is the record for id, sealed under id's key.
func (r *Keyring) keyCheck(id string) []byte { return r.sealWith(id, keyCheckPlain, keyCheckAD(id)) }

// ErrWrongKey means a configured key is not the one the store knows by
// its id.
var ErrWrongKey = errors.New("the consent store key is not the one this store was created with")

// MissingKeyError is a store holding values sealed under key ids the
// configuration does not list.
type MissingKeyError struct {
	// IDs are the missing key ids; "" stands for the store's first key,
	// from before keys had ids.
	IDs []string
}

func (e *MissingKeyError) Error() string {
	var names []string
	for _, id := range e.IDs {
		if id == "" {
			names = append(names, "the store's first key (from before key ids; list it under any id)")
		} else {
			names = append(names, fmt.Sprintf("%q", id))
		}
	}
	return "the store holds values sealed under key id " + strings.Join(names, ", ") +
		", which the configuration does not list; list it under keys (the first key seals, any listed key opens) and run `tokenproxy store rekey` before removing it"
}

// checkKeys matches the ring against the key check records a store holds
// (by id, plus the legacy one, nil when absent). It returns the ids whose
// check must be written (new keys) and the id of the key that opens the
// legacy check ("" when none does or there is none). A listed key that
// fails its id's check is ErrWrongKey; whether the store's values need a
// key the ring lacks is for missing to say.
func (r *Keyring) checkKeys(checks map[string][]byte, legacy []byte) (write []string, legacyID string, err error) {
	for _, id := range r.IDs() {
		kc, ok := checks[id]
		if !ok {
			write = append(write, id)
			continue
		}
		p, err := r.open(kc, keyCheckAD(id))
		if err != nil || !bytes.Equal(p, keyCheckPlain) {
			return nil, "", fmt.Errorf("key id %q: %w (a new key needs a new id)", id, ErrWrongKey)
		}
	}
	if legacy != nil {
		for _, id := range r.IDs() {
			if p, err := openAEAD(r.AEAD(id), legacy, keyCheckAAD); err == nil && bytes.Equal(p, keyCheckPlain) {
				return write, id, nil
			}
		}
	}
	return write, "", nil
}

// missing returns, sorted, the ids in need that the ring cannot open;
// "" (legacy values) counts as missing unless legacyID is set.
func (r *Keyring) missing(need map[string]bool, legacyID string) error {
	var out []string
	for id := range need {
		if (id == "" && legacyID == "") || (id != "" && !r.Has(id)) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil
	}
	sort.Strings(out)
	return &MissingKeyError{IDs: out}
}

// RekeyStats counts a rekey's work.
type RekeyStats struct {
	// Resealed values now sealed under the newest key.
	Resealed int
	// Changed values another writer rewrote (or removed) meanwhile; a
	// writer seals under its own newest key.
	Changed int
	// Remaining values still not under the newest key when Rekey returned.
	Remaining int
}

// Rekeyer is a store that can re-seal its values under its newest key
// while in use, in batches, resumably: an interrupted Rekey is run again.
type Rekeyer interface {
	// SealingKey is the id of the key values are sealed under.
	SealingKey() string
	// Stale counts the values not sealed under the newest key.
	Stale(ctx context.Context) (int, error)
	// Rekey re-seals them batch values per transaction, calling progress
	// after each batch.
	Rekey(ctx context.Context, batch int, progress func(RekeyStats)) (RekeyStats, error)
}

// SealingKey is the id of the key the store seals under.
func (b *Bolt) SealingKey() string { return b.ring.Newest() }

// SealingKey is the id of the key the store seals under.
func (p *Postgres) SealingKey() string { return p.ring.Newest() }
