// Package oauth holds tokenproxy's OAuth2 token sources: client credentials
// (client_secret_basic, client_secret_post, tls_client_auth, private_key_jwt)
// and per-subject authorization code + refresh token, whose consents live in
// a consentstore.Store, plus the consent API apps use to start and manage
// consents. Every source matches tokencache.Source: Fetch(ctx, subject) and
// Host(). Nothing here logs or returns a token, a refresh token, a code or a
// client secret.
package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// maxResponse bounds how much of a token endpoint's answer is read.
const maxResponse = 1 << 20

// Response is a token endpoint's successful answer.
type Response struct {
	Token        *tokencache.Token
	RefreshToken secret.Value // zero when the answer carried none
	Scopes       []string     // nil when the answer named none
	// RefreshExpiry is from refresh_expires_in (or refresh_token_expires_in)
	// when the bank sent it; zero otherwise.
	RefreshExpiry time.Time
}

type extraFields struct {
	RefreshToken     string          `json:"refresh_token"`
	Scope            string          `json:"scope"`
	RefreshExpiresIn json.RawMessage `json:"refresh_expires_in"`
	RefreshTokenExp  json.RawMessage `json:"refresh_token_expires_in"`
}

// ParseResponse decodes a token endpoint's JSON answer: the access token by
// tokencache.ParseResponse (expires_in a number or a numeric string), plus
// refresh_token, scope and refresh_expires_in. Errors never hold the body.
func ParseResponse(body []byte, now time.Time, defaultTTL time.Duration) (*Response, error) {
	if len(body) > maxResponse {
		return nil, errors.New("token response is larger than 1 MiB")
	}
	tok, err := tokencache.ParseResponse(body, now, defaultTTL)
	if err != nil {
		return nil, err
	}
	var x extraFields
	if err := json.Unmarshal(body, &x); err != nil {
		return nil, errors.New("token response is not a JSON object")
	}
	r := &Response{Token: tok, RefreshToken: secret.New(x.RefreshToken)}
	if s := strings.Fields(x.Scope); len(s) > 0 {
		r.Scopes = s
	}
	raw := x.RefreshExpiresIn
	if len(raw) == 0 {
		raw = x.RefreshTokenExp
	}
	if len(raw) > 0 && string(raw) != "null" {
		// Reuse the access-token parser's rules for a number-or-string duration.
		t, err := tokencache.ParseResponse([]byte(`{"access_token":"x","expires_in":`+string(raw)+`}`), now, 0)
		if err != nil {
			return nil, errors.New("token response has a refresh_expires_in that is neither a number nor a numeric string")
		}
		if t.Expiry.After(now) {
			r.RefreshExpiry = t.Expiry
		}
	}
	return r, nil
}

// oauthError is an RFC 6749 §5.2 error answer. Only the code is kept: the
// description may echo what was sent.
type oauthError struct {
	Code string `json:"error"`
}

// endpointError is a failed call to a token, revocation or authorization
// endpoint. Status is the HTTP status (0 when no answer came); Code the OAuth
// error code when the answer had one. It never holds the body.
type endpointError struct {
	Route, Endpoint string
	Status          int
	Code            string
	RetryAfter      time.Duration
	Err             error
}

func (e *endpointError) Error() string {
	msg := fmt.Sprintf("route %s: the %s endpoint", e.Route, e.Endpoint)
	switch {
	case e.Status == 0:
		msg += " could not be reached"
	case e.Code != "":
		msg += fmt.Sprintf(" answered HTTP %d %s", e.Status, e.Code)
	default:
		msg += fmt.Sprintf(" answered HTTP %d", e.Status)
	}
	if hint := hintFor(e.Code, e.Status); hint != "" {
		msg += " (" + hint + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *endpointError) Unwrap() error { return e.Err }

func hintFor(code string, status int) string {
	switch {
	case code == "invalid_client" || status == http.StatusUnauthorized:
		return "the client authentication was refused: check client_id, the client secret or key, and the client certificate"
	case code == "invalid_grant":
		return "the grant (code or refresh token) is expired, revoked or already used"
	case code == "invalid_scope":
		return "a requested scope is not allowed for this client"
	case status == http.StatusForbidden:
		return "the endpoint refused this client; is the egress IP allowed?"
	}
	return ""
}

// post sends form to endpoint with the route's client (mTLS) and returns the
// body of a 2xx answer, or an *endpointError.
func post(ctx context.Context, hc *http.Client, route, endpoint, rawURL string, form url.Values, hdr http.Header, now time.Time) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &endpointError{Route: route, Endpoint: endpoint, Err: errors.New("building the request: bad URL")}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &endpointError{Route: route, Endpoint: endpoint, Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, &endpointError{Route: route, Endpoint: endpoint, Status: resp.StatusCode, Err: errors.New("reading the answer failed")}
	}
	if resp.StatusCode/100 == 2 {
		if len(body) > maxResponse {
			return nil, &endpointError{Route: route, Endpoint: endpoint, Status: resp.StatusCode, Err: errors.New("the answer is larger than 1 MiB")}
		}
		return body, nil
	}
	e := &endpointError{Route: route, Endpoint: endpoint, Status: resp.StatusCode}
	var oe oauthError
	if json.Unmarshal(body, &oe) == nil && isToken(oe.Code) {
		e.Code = oe.Code
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		if d, ok := tokencache.ParseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			e.RetryAfter = d
		}
	}
	return nil, e
}

// isToken accepts an OAuth error code (RFC 6749: %x20-21 / %x23-5B / %x5D-7E)
// of sane length, so a hostile answer cannot put arbitrary text in our errors.
func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// scrubURLError keeps a transport error's cause but drops the URL.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
