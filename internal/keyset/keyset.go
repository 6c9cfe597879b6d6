// Package keyset holds the AES-256-GCM keys of a sealed store, each under
// an id that the store writes beside every value it seals: the first key
// seals, any key opens the values sealed under its id. The value formats
// are the stores' own (consentstore, redisstore); the keys, their ids and
// their checks are here, once.
package keyset

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"slices"
)

// Size is the length of a key: AES-256.
const Size = 32

// Key is one key of a set: ID names it in every value it seals.
type Key struct {
	ID  string
	Key []byte
}

// Set is a store's keys, the sealing one first.
type Set struct {
	ids   []string
	aeads map[string]cipher.AEAD
}

// New checks keys (at least one; ids of 1 to 32 letters, digits and . _ -,
// each once; Size bytes each) and returns their set, keys[0] sealing.
func New(keys ...Key) (*Set, error) {
	if len(keys) == 0 {
		return nil, errors.New("a sealed store needs at least one key")
	}
	s := &Set{aeads: make(map[string]cipher.AEAD, len(keys))}
	for _, k := range keys {
		if err := ValidateID(k.ID); err != nil {
			return nil, err
		}
		if _, dup := s.aeads[k.ID]; dup {
			return nil, fmt.Errorf("key id %q is listed twice", k.ID)
		}
		if len(k.Key) != Size {
			return nil, fmt.Errorf("key %q: the key is %d bytes; it must be %d (AES-256)", k.ID, len(k.Key), Size)
		}
		blk, err := aes.NewCipher(k.Key)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.ID, err)
		}
		a, err := cipher.NewGCM(blk)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.ID, err)
		}
		s.ids = append(s.ids, k.ID)
		s.aeads[k.ID] = a
	}
	return s, nil
}

// ValidateID checks a key id: 1 to 32 letters, digits and . _ -.
func ValidateID(id string) error {
	if id == "" || len(id) > 32 {
		return fmt.Errorf("key id %q must be 1 to 32 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("key id %q may hold only letters, digits and . _ -", id)
		}
	}
	return nil
}

// Newest is the id of the key that seals.
func (s *Set) Newest() string { return s.ids[0] }

// IDs lists the set's key ids, the sealing one first.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// Has reports whether id is one of the set's keys.
func (s *Set) Has(id string) bool { _, ok := s.aeads[id]; return ok }

// AEAD is the cipher of key id; nil when the set lacks it.
func (s *Set) AEAD(id string) cipher.AEAD { return s.aeads[id] }
