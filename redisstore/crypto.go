package redisstore

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/keyset"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Seal versions prefix every sealed value, so formats can coexist.
const (
	// sealVersion (1) is version | nonce | ciphertext, under the store's
	// one key from before key ids (the key that opens its legacy key check).
	sealVersion = 1
	// sealVersionKeyed (2) is version | id length | id | nonce |
	// ciphertext, under the key of that id; the header is authenticated
	// with the value.
	sealVersionKeyed = 2
)

// DefaultKeyID is the id of a key given alone (Options.Key, the
// configuration's encryption_key).
const DefaultKeyID = "default"

// Key is one key of the store: ID names it in every value it seals (1 to
// 32 letters, digits and . _ -), Key is 32 bytes.
type Key = keyset.Key

// WrongKeyError means a value in Redis does not open under the key this
// process holds for it: another replica (or an earlier deployment) wrote it
// with a different key under the same id. No retry fixes it; the replicas
// must share their keys.
type WrongKeyError struct {
	What string // which value, e.g. `the token of route "bc"`
	// ID is the key id the value names; "" for a value from before key ids.
	ID string
}

func (e *WrongKeyError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("redis store: %s does not decrypt with this process's encryption key %q; "+
			"every replica must hold the same key under an id (a new key needs a new id)", e.What, e.ID)
	}
	return "redis store: " + e.What + " does not decrypt with this process's encryption key; " +
		"every replica must use the same store encryption key (or clear the store's keys after changing it)"
}

// unknownKeyError is a value sealed under a key id this process does not
// hold: it is treated as absent (a token is fetched anew).
type unknownKeyError struct{ id string }

func (e *unknownKeyError) Error() string {
	if e.id == "" {
		return "redis store: a value is sealed under the store's key from before key ids, which is not configured"
	}
	return fmt.Sprintf("redis store: a value is sealed under key id %q, which is not configured", e.id)
}

// sealer encrypts values with AES-256-GCM before they reach Redis: under
// the first key, each value naming its key id; any key opens the values
// sealed under its id.
type sealer struct {
	*keyset.Set
	// legacy is the id of the key that opens values from before key ids
	// (set by the key check; "" when none does), as a *string.
	legacy atomic.Pointer[string]
}

func newSealer(keys ...Key) (*sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("redis store: no encryption key")
	}
	set, err := keyset.New(keys...)
	if err != nil {
		return nil, fmt.Errorf("redis store: %w", err)
	}
	return &sealer{Set: set}, nil
}

// legacyID is the id of the key that opens values from before key ids.
func (s *sealer) legacyID() string {
	if p := s.legacy.Load(); p != nil {
		return *p
	}
	return ""
}

// seal seals plain, bound to aad, under the first key. While that key is
// the one the store had before key ids, it keeps the old format (version
// 1), which replicas of an earlier release still read during an upgrade;
// otherwise the value names its key (version 2).
func (s *sealer) seal(plain, aad []byte) ([]byte, error) {
	id := s.Newest()
	if s.legacyID() == id {
		return sealWith(s.AEAD(id), []byte{sealVersion}, plain, aad)
	}
	return s.sealKeyed(id, plain, aad)
}

// sealKeyed seals plain under id's key in version 2.
func (s *sealer) sealKeyed(id string, plain, aad []byte) ([]byte, error) {
	head := append([]byte{sealVersionKeyed, byte(len(id))}, id...) //nolint:gosec // G115: ids are at most 32 bytes (keyset.ValidateID)
	return sealWith(s.AEAD(id), head, plain, aad)
}

// sealWith returns head | nonce | ciphertext; a keyed head is
// authenticated with the value.
func sealWith(a cipher.AEAD, head, plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("redis store: nonce: %w", err)
	}
	out := make([]byte, 0, len(head)+len(nonce)+len(plain)+a.Overhead())
	out = append(append(out, head...), nonce...)
	return a.Seal(out, nonce, plain, headAAD(head, aad)), nil
}

// headAAD is the additional data of a value with head: aad alone for
// version 1 (as it always was), the head and aad for version 2.
func headAAD(head, aad []byte) []byte {
	if head[0] == sealVersion {
		return aad
	}
	return append(append([]byte(nil), head...), aad...)
}

var errSealed = errors.New("sealed value does not open")

// open opens a value seal made under any of the keys. A value naming a key
// id this process lacks (or from before key ids, when no key opens the
// store's legacy key check) is an *unknownKeyError; any other failure is
// errSealed.
func (s *sealer) open(blob, aad []byte) ([]byte, error) {
	id, head, rest, err := s.parse(blob)
	if err != nil {
		return nil, err
	}
	return openWith(s.AEAD(id), rest, headAAD(head, aad))
}

// parse splits blob into the id of its key (held by this process), its
// head and nonce | ciphertext.
func (s *sealer) parse(blob []byte) (id string, head, rest []byte, err error) {
	if len(blob) == 0 {
		return "", nil, nil, errSealed
	}
	switch blob[0] {
	case sealVersion:
		id = s.legacyID()
		if id == "" {
			return "", nil, nil, &unknownKeyError{}
		}
		return id, blob[:1], blob[1:], nil
	case sealVersionKeyed:
		if len(blob) < 2 || blob[1] == 0 || len(blob) < 2+int(blob[1]) {
			return "", nil, nil, errSealed
		}
		n := 2 + int(blob[1])
		id = string(blob[2:n])
		if s.AEAD(id) == nil {
			return "", nil, nil, &unknownKeyError{id: id}
		}
		return id, blob[:n], blob[n:], nil
	}
	return "", nil, nil, errSealed
}

// sealedKeyID is the key id blob names; "" for a value from before key
// ids or one too short to name any.
func sealedKeyID(blob []byte) string {
	if len(blob) < 2 || blob[0] != sealVersionKeyed || len(blob) < 2+int(blob[1]) {
		return ""
	}
	return string(blob[2 : 2+int(blob[1])])
}

func openWith(a cipher.AEAD, v, aad []byte) ([]byte, error) {
	n := a.NonceSize()
	if len(v) < n+a.Overhead() {
		return nil, errSealed
	}
	plain, err := a.Open(nil, v[:n], v[n:], aad)
	if err != nil {
		return nil, errSealed
	}
	return plain, nil
}

// tokenAAD binds a sealed token to its credential and generation: a value
// copied to another route, subject or generation does not open.
func tokenAAD(route, subject string, gen uint64) []byte {
	return []byte(route + "|" + subject + "|" + strconv.FormatUint(gen, 10))
}

// sealedToken is a token's plaintext inside the seal.
type sealedToken struct {
	Value  string `json:"v"`
	Type   string `json:"t"`
	Header string `json:"h"`
	Expiry int64  `json:"e"` // unix nanoseconds
	Issued int64  `json:"i"`
	// Binding is Token.Binding: the key or certificate the token is bound to.
	Binding string `json:"b,omitempty"`
}

func (s *sealer) sealToken(t *tokencache.Token, aad []byte) ([]byte, error) {
	var issued int64
	if !t.Issued.IsZero() {
		issued = t.Issued.UnixNano()
	}
	plain, err := json.Marshal(sealedToken{Value: t.Value, Type: t.Type, Header: t.Header, Expiry: t.Expiry.UnixNano(), Issued: issued, Binding: t.Binding})
	if err != nil {
		return nil, fmt.Errorf("redis store: encoding a token: %w", err)
	}
	return s.seal(plain, aad)
}

func (s *sealer) openToken(blob, aad []byte) (*tokencache.Token, error) {
	plain, err := s.open(blob, aad)
	if err != nil {
		return nil, err
	}
	var st sealedToken
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("redis store: decoding a token: %w", err)
	}
	t := &tokencache.Token{Value: st.Value, Type: st.Type, Header: st.Header, Expiry: time.Unix(0, st.Expiry), Binding: st.Binding}
	if st.Issued != 0 {
		t.Issued = time.Unix(0, st.Issued)
	}
	return t, nil
}
