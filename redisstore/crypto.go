package redisstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// sealVersion prefixes every sealed value, so a later format can coexist.
const sealVersion = 1

// WrongKeyError means a value in Redis does not open under this process's
// encryption key: another replica (or an earlier deployment) wrote it with a
// different key. No retry fixes it; the replicas must share one key.
type WrongKeyError struct {
	What string // which value, e.g. `the token of route "bc"`
}

func (e *WrongKeyError) Error() string {
	return "redis store: " + e.What + " does not decrypt with this process's encryption key; " +
		"every replica must use the same store encryption key (or clear the store's keys after changing it)"
}

// sealer encrypts values with AES-256-GCM before they reach Redis.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("redis store: the encryption key is %d bytes; AES-256 needs exactly 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("redis store: encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("redis store: encryption key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal returns version | nonce | ciphertext of plain, bound to aad.
func (s *sealer) seal(plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("redis store: nonce: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(plain)+s.aead.Overhead())
	out = append(append(out, sealVersion), nonce...)
	return s.aead.Seal(out, nonce, plain, aad), nil
}

var errSealed = errors.New("sealed value does not open")

func (s *sealer) open(blob, aad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(blob) < 1+n || blob[0] != sealVersion {
		return nil, errSealed
	}
	plain, err := s.aead.Open(nil, blob[1:1+n], blob[1+n:], aad)
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
}

func (s *sealer) sealToken(t *tokencache.Token, aad []byte) ([]byte, error) {
	var issued int64
	if !t.Issued.IsZero() {
		issued = t.Issued.UnixNano()
	}
	plain, err := json.Marshal(sealedToken{Value: t.Value, Type: t.Type, Header: t.Header, Expiry: t.Expiry.UnixNano(), Issued: issued})
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
	t := &tokencache.Token{Value: st.Value, Type: st.Type, Header: st.Header, Expiry: time.Unix(0, st.Expiry)}
	if st.Issued != 0 {
		t.Issued = time.Unix(0, st.Issued)
	}
	return t, nil
}
