// Package tokencache fetches bearer tokens from a provider's authorization
// endpoint and reuses them until they expire. A token is refreshed ahead of
// its expiry while callers keep using it; concurrent callers share one
// in-flight fetch per subject; fetches to one authorization host are paced by
// a Pacer that keeps them within the provider's per-minute budget as the
// provider counts it (by arrival) and backs off after a 429. A Store shares
// tokens, the fetch and the budget between replicas.
package tokencache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Token is a bearer token and when it expires. Its value is never printed:
// String and Format redact it.
type Token struct {
	// Value is the access token.
	Value string
	// Type is the token type the provider named ("Bearer" when it named none).
	Type string
	// Expiry is when the provider says the token stops working.
	Expiry time.Time
	// Header is the ready-made Authorization header value, "Bearer <token>".
	Header string
	// Issued is when the token was obtained (the response's arrival); the
	// lifetime Expiry-Issued caps the cache's skew. Zero when unknown.
	Issued time.Time

	refreshAt   time.Time // from here a refresh runs ahead: Expiry less twice the cache's effective skew
	usableUntil time.Time // from here the token is no longer sent: Expiry less the effective skew
}

// String never returns the token.
func (t *Token) String() string { return "[token redacted]" }

// Format never prints the token.
func (t *Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[token redacted]")) }

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

// ParseResponse decodes a token endpoint's JSON body. expires_in may be a
// JSON number or a numeric string (Banking Circle sends "300"); when it is
// absent, defaultTTL applies.
func ParseResponse(body []byte, now time.Time, defaultTTL time.Duration) (*Token, error) {
	var r tokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, errBadJSON
	}
	if r.AccessToken == "" {
		return nil, errNoAccessToken
	}
	ttl := defaultTTL
	if raw := bytes.TrimSpace(r.ExpiresIn); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		if raw[0] == '"' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, errBadExpiresIn
			}
			raw = []byte(s)
		}
		secs, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
		if err != nil || secs < 0 || secs > 10*365*24*3600 || secs != secs {
			return nil, errBadExpiresIn
		}
		ttl = time.Duration(secs * float64(time.Second))
	}
	typ := r.TokenType
	if typ == "" || equalFold(typ, "bearer") {
		typ = "Bearer"
	}
	return &Token{Value: r.AccessToken, Type: typ, Expiry: now.Add(ttl), Issued: now, Header: typ + " " + r.AccessToken}, nil
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
