package oauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
)

// Pushed configures how an authorization request reaches the bank and how
// its response is checked: pushed (RFC 9126), as a signed request object
// (RFC 9101), and with the issuer identification of RFC 9207.
type Pushed struct {
	// PAR posts the request to the pushed authorization request endpoint,
	// with the client authentication of the token endpoint; the authorize
	// URL then carries only client_id and request_uri.
	PAR bool
	// PARURL is that endpoint; when empty, the metadata's.
	PARURL string
	// RequestObject sends the request's parameters as a signed JWT
	// (request=), typ oauth-authz-req+jwt, addressed to Issuer.
	RequestObject bool
	// RequestKey signs request objects with RequestAlg (ES256, PS256 or
	// RS256; the key's default when empty) under RequestKeyID when set.
	RequestKey   crypto.Signer
	RequestAlg   string
	RequestKeyID string
	// Issuer is the authorization server's issuer identifier: the iss an
	// authorization response must carry when it carries one.
	Issuer string
	// RequireIss refuses an authorization response without iss (FAPI 2.0;
	// also when the metadata says authorization_response_iss_parameter_supported).
	RequireIss bool
	// DPoPJKT, when set, is sent as dpop_jkt (RFC 9449 §10): the thumbprint
	// of the DPoP key the code will be bound to.
	DPoPJKT string
}

// requestObjectTTL is how long a request object is valid (FAPI 2.0 wants
// exp - nbf at most 60 minutes).
const requestObjectTTL = 5 * time.Minute

func (p *Pushed) validate(ep *Endpoint) error {
	if p.PAR {
		if u, err := url.Parse(ep.endpoint(discovery.PAR, p.PARURL)); err != nil || u.Host == "" {
			if p.PARURL == "" && ep.Discovery != nil {
				return fmt.Errorf("the bank's metadata at %s has no pushed_authorization_request_endpoint; token.par needs one", ep.Discovery.Current().URL)
			}
			return errors.New("par_url must be an absolute URL")
		}
	}
	if p.RequestObject {
		if p.RequestKey == nil {
			return errors.New("request_object needs a signing key")
		}
		if p.Issuer == "" {
			return errors.New("request_object needs the issuer identifier (its audience)")
		}
		if _, err := p.requestAlg(); err != nil {
			return err
		}
	}
	if p.RequireIss && p.Issuer == "" {
		return errors.New("the iss check needs the issuer identifier")
	}
	return nil
}

func (p *Pushed) requestAlg() (string, error) {
	alg, err := jws.Choose(p.RequestKey.Public(), p.RequestAlg, false)
	if err != nil {
		return "", fmt.Errorf("request_object: %w", err)
	}
	return alg, nil
}

// Authorize returns the URL to send the customer's browser to for one
// consent. With PAR it first pushes the request to the bank; an error then
// is the bank's refusal (an *AuthorizeError) or a failure to reach it, and
// the caller must store nothing.
func (a *AuthCode) Authorize(ctx context.Context, state, codeChallenge, redirectURI string) (string, error) {
	q := a.params(state, codeChallenge, redirectURI)
	now := a.cfg.Endpoint.Now()
	if a.cfg.RequestObject {
		jwt, err := a.requestObject(q, now)
		if err != nil {
			return "", &AuthorizeError{Route: a.Route(), Err: err}
		}
		q = url.Values{"client_id": {a.cfg.Endpoint.Auth.ClientID}, "request": {jwt}}
	}
	if !a.cfg.PAR {
		return a.authorizeURL(q), nil
	}
	uri, err := a.push(ctx, q, now)
	if err != nil {
		return "", err
	}
	return a.authorizeURL(url.Values{"client_id": {a.cfg.Endpoint.Auth.ClientID}, "request_uri": {uri}}), nil
}

// requestObject signs the request's parameters as a request object
// (RFC 9101 §4, FAPI 2.0 §5.3.2): iss = client_id, aud = issuer, and a
// short exp.
func (a *AuthCode) requestObject(q url.Values, now time.Time) (string, error) {
	alg, err := a.cfg.requestAlg()
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("request_object: %w", err)
	}
	claims := map[string]any{}
	for k := range q {
		claims[k] = q.Get(k)
	}
	claims["iss"] = a.cfg.Endpoint.Auth.ClientID
	claims["aud"] = a.cfg.Issuer
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["exp"] = now.Add(requestObjectTTL).Unix()
	claims["jti"] = hex.EncodeToString(jti[:])
	hdr := map[string]any{"typ": "oauth-authz-req+jwt"}
	if a.cfg.RequestKeyID != "" {
		hdr["kid"] = a.cfg.RequestKeyID
	}
	tok, err := jws.SignJSON(a.cfg.RequestKey, alg, hdr, claims)
	if err != nil {
		return "", fmt.Errorf("request_object: signing: %w", err)
	}
	return tok, nil
}

// parAnswer is the pushed authorization request endpoint's answer (RFC 9126 §2.2).
type parAnswer struct {
	RequestURI string          `json:"request_uri"`
	ExpiresIn  json.RawMessage `json:"expires_in"`
}

// push posts q to the pushed authorization request endpoint with the
// client authentication and returns its request_uri.
func (a *AuthCode) push(ctx context.Context, q url.Values, now time.Time) (string, error) {
	ep := a.cfg.Endpoint
	parURL := ep.endpoint(discovery.PAR, a.cfg.PARURL)
	if parURL == "" {
		return "", &AuthorizeError{Route: a.Route(), Err: errors.New("the bank's metadata no longer names a pushed_authorization_request_endpoint")}
	}
	hdr := http.Header{}
	if err := ep.Auth.apply(ctx, parURL, q, hdr, now); err != nil {
		return "", &AuthorizeError{Route: a.Route(), Err: &endpointError{Route: a.Route(), Endpoint: parEndpoint, Err: err}}
	}
	body, err := post(ctx, ep.Client, a.Route(), parEndpoint, parURL, q, hdr, now)
	if err != nil {
		return "", &AuthorizeError{Route: a.Route(), Err: err}
	}
	var ans parAnswer
	if err := json.Unmarshal(body, &ans); err != nil || ans.RequestURI == "" || len(ans.RequestURI) > 2048 {
		return "", &AuthorizeError{Route: a.Route(), Err: &endpointError{Route: a.Route(), Endpoint: parEndpoint, Status: http.StatusCreated,
			Err: errors.New("the answer has no request_uri")}}
	}
	return ans.RequestURI, nil
}

const parEndpoint = "pushed authorization request"

// AuthorizeError is a consent that could not be started: the bank refused
// the pushed authorization request, could not be reached, or the request
// could not be signed. It never holds the bank's body.
type AuthorizeError struct {
	Route string
	Err   error
}

func (e *AuthorizeError) Error() string {
	return "route " + e.Route + ": the authorization request could not be made: " + e.Err.Error()
}

func (e *AuthorizeError) Unwrap() error { return e.Err }

// Refused reports whether the bank answered with an error (HTTP status
// and, when it sent one, the OAuth error code), as opposed to not being
// reached.
func (e *AuthorizeError) Refused() (status int, code string, ok bool) {
	var ee *endpointError
	if errors.As(e.Err, &ee) && ee.Status != 0 {
		return ee.Status, ee.Code, true
	}
	return 0, "", false
}

// IssuerError is an authorization response whose iss is missing where it
// is required, or names another issuer (RFC 9207 §2.4): a mix-up attack or
// a misconfigured route. The response must not be used.
type IssuerError struct {
	Route, Want, Got string
}

func (e *IssuerError) Error() string {
	if e.Got == "" {
		return fmt.Sprintf("route %s: the authorization response has no iss; the bank %s must identify itself (RFC 9207)", e.Route, e.Want)
	}
	return fmt.Sprintf("route %s: the authorization response comes from issuer %q, not %s (RFC 9207); it is refused", e.Route, clipIss(e.Got), e.Want)
}

func clipIss(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// CheckIssuer checks an authorization response's iss (RFC 9207): when the
// route knows its issuer, a present iss must equal it exactly, and a
// missing one is refused when the route requires it (FAPI 2.0) or the
// bank's metadata says it sends one.
func (a *AuthCode) CheckIssuer(iss string) error {
	want := a.cfg.Issuer
	if want == "" {
		return nil
	}
	switch iss {
	case want:
		return nil
	case "":
		required := a.cfg.RequireIss
		if d := a.cfg.Endpoint.Discovery; d != nil && d.Current().IssParameterSupported {
			required = true
		}
		if !required {
			return nil
		}
	}
	return &IssuerError{Route: a.Route(), Want: want, Got: iss}
}
