package consentstore

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenproxy/tokenproxy/internal/keyset"
	"github.com/tokenproxy/tokenproxy/secret"
)

// record is the plaintext form of a Consent inside a sealed value: the
// secrets as plain strings, which is why it never leaves this package.
type record struct {
	Consent
	RT string `json:"rt,omitempty"`
	AT string `json:"at,omitempty"`
}

func encodeRecord(c *Consent) ([]byte, error) {
	b, err := json.Marshal(record{Consent: *c, RT: c.RefreshToken.Reveal(), AT: c.AccessToken.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("encoding the consent: %w", err)
	}
	return b, nil
}

func decodeRecord(b []byte, gen uint64) (*Consent, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, errors.New("decoding a stored consent: not valid JSON")
	}
	c := r.Consent
	c.RefreshToken, c.AccessToken, c.Generation = secret.New(r.RT), secret.New(r.AT), gen
	return &c, nil
}

// KeySize is the length of a consent-store key: AES-256.
const KeySize = keyset.Size

// ParseKey decodes a store key given as 64 hex digits or as standard or URL
// base64 of 32 bytes (`openssl rand -base64 32`).
func ParseKey(v secret.Value) ([]byte, error) {
	s := strings.TrimSpace(v.Reveal())
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("the consent store key must be %d bytes, given as 64 hex digits or base64 (openssl rand -base64 32)", KeySize)
}

// aad is route|owner|subject|generation, length-prefixed so no two keys collide.
func aad(k Key, gen uint64) []byte {
	b := make([]byte, 0, 32+len(k.Route)+len(k.Owner)+len(k.Subject))
	for _, s := range []string{k.Route, k.Owner, k.Subject} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s))) //nolint:gosec // G115: route, owner and subject are validated short names
		b = append(b, s...)
	}
	return binary.BigEndian.AppendUint64(b, gen)
}
