package tokenclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// tokenResponse is the JSON a token endpoint answers with.
type tokenResponse struct {
	AccessToken string          `json:"access_token"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
	TokenType   string          `json:"token_type"`
}

// Errors from parsing a token response. They never contain the response body.
var (
	errNoAccessToken = errors.New("token response has no access_token")
	errBadExpiresIn  = errors.New("token response has an expires_in that is neither a number nor a numeric string")
	errBadJSON       = errors.New("token response is not a JSON object")
)

// ParseToken decodes a token endpoint's JSON body. expires_in may be a
// JSON number or a numeric string (Banking Circle sends "300"); when it is
// absent, defaultTTL applies.
func ParseToken(body []byte, now time.Time, defaultTTL time.Duration) (*tokencache.Token, error) {
	var r tokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, errBadJSON
	}
	if r.AccessToken == "" {
		return nil, errNoAccessToken
	}
	ttl, ok, err := ParseExpiresIn(r.ExpiresIn)
	if err != nil {
		return nil, err
	}
	if !ok {
		ttl = defaultTTL
	}
	typ := r.TokenType
	if typ == "" || equalFold(typ, "bearer") {
		typ = "Bearer"
	}
	return &tokencache.Token{Value: r.AccessToken, Type: typ, Expiry: now.Add(ttl), Issued: now, Header: typ + " " + r.AccessToken}, nil
}

// ParseExpiresIn reads a lifetime in seconds given as a JSON number or a
// numeric string (expires_in, refresh_expires_in): at least 0, at most ten
// years, fractions allowed. ok is false when raw is empty or null.
func ParseExpiresIn(raw json.RawMessage) (d time.Duration, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, false, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, errBadExpiresIn
		}
		raw = []byte(s)
	}
	secs, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil || secs < 0 || secs > 10*365*24*3600 || secs != secs {
		return 0, false, errBadExpiresIn
	}
	return time.Duration(secs * float64(time.Second)), true, nil
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}
