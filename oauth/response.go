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
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/tokenclient"
)

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
// tokenclient.ParseToken (expires_in a number or a numeric string), plus
// refresh_token, scope and refresh_expires_in (read by the same
// tokenclient.ParseExpiresIn). Errors never hold the body.
func ParseResponse(body []byte, now time.Time, defaultTTL time.Duration) (*Response, error) {
	if len(body) > tokenclient.MaxBody {
		return nil, errors.New("token response is larger than 1 MiB")
	}
	tok, err := tokenclient.ParseToken(body, now, defaultTTL)
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
	if d, _, err := tokenclient.ParseExpiresIn(raw); err != nil {
		return nil, errors.New("token response has a refresh_expires_in that is neither a number nor a numeric string")
	} else if d > 0 {
		r.RefreshExpiry = now.Add(d)
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
	b, _, err := postAnswer(ctx, hc, route, endpoint, rawURL, form, hdr, now)
	return b, err
}

// postAnswer is post that also returns the answer's header, whatever its
// status (nil when no answer came).
func postAnswer(ctx context.Context, hc *http.Client, route, endpoint, rawURL string, form url.Values, hdr http.Header, now time.Time) ([]byte, http.Header, error) {
	a, err := tokenclient.Do(ctx, hc, tokenclient.Request{Method: http.MethodPost, URL: rawURL, Header: hdr, Form: form})
	if err != nil {
		e := &endpointError{Route: route, Endpoint: endpoint, Err: err}
		var ce *tokenclient.Error
		if errors.As(err, &ce) {
			switch ce.Stage {
			case tokenclient.Build:
				e.Err = errors.New("building the request: bad URL")
			case tokenclient.Send:
				e.Err = ce.Err
			case tokenclient.Read:
				e.Status, e.Err = ce.Status, errors.New("reading the answer failed")
			}
		}
		return nil, nil, e
	}
	if a.Status/100 == 2 {
		if a.TooLarge {
			return nil, a.Header, &endpointError{Route: route, Endpoint: endpoint, Status: a.Status, Err: errors.New("the answer is larger than 1 MiB")}
		}
		return a.Body, a.Header, nil
	}
	e := &endpointError{Route: route, Endpoint: endpoint, Status: a.Status, RetryAfter: a.RetryAfter(now)}
	var oe oauthError
	if json.Unmarshal(a.Body, &oe) == nil && isToken(oe.Code) {
		e.Code = oe.Code
	}
	return nil, a.Header, e
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

// toFetchError turns a failed endpoint call into what the cache expects: a
// *tokencache.FetchError wrapping the endpointError, with the Retry-After
// of a 429 so the cache can back off.
func (e *endpointError) toFetchError() error {
	return &tokencache.FetchError{Status: e.Status, Reason: "route " + e.Route + ": " + e.Endpoint + " request failed",
		Err: e, RetryAfter: RetryAfterOf(e)}
}

// RetryAfterOf returns the Retry-After the token endpoint sent with a 429
// (0 when absent or not a 429) for an error returned by a source here.
func RetryAfterOf(err error) time.Duration {
	var e *endpointError
	if errors.As(err, &e) && e.Status == 429 {
		return e.RetryAfter
	}
	return 0
}
