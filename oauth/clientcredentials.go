package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Endpoint is a route's token endpoint and how to reach it.
type Endpoint struct {
	// Route names the route in every error.
	Route string
	// TokenURL is the token endpoint; when empty, Discovery's.
	TokenURL string
	// Discovery, when set, is the authorization server's metadata: it gives
	// the endpoints the configuration leaves out (explicit URLs win).
	Discovery *discovery.Source
	// MTLS picks the metadata's mtls_endpoint_aliases (RFC 8705 §5): the
	// client presents its certificate to authenticate or bind tokens.
	MTLS bool
	// Client sends requests; it carries the route's client certificate
	// (mTLS) and trust roots.
	Client *http.Client
	// Auth is the client authentication.
	Auth ClientAuth
	// DefaultTTL applies when an answer has no expires_in (default 5 min).
	DefaultTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// DPoP, when set, binds the tokens to its key (RFC 9449): each token
	// request carries a proof, and only a token_type DPoP answer is taken.
	DPoP *dpop.Client
	// CertBinding, when set, binds the tokens to the client certificate
	// (RFC 8705): it returns the current certificate's binding,
	// "x5t#S256:<thumbprint>".
	CertBinding func() string
}

func (e *Endpoint) validate() error {
	if e.Route == "" {
		return errors.New("oauth: the route name is required")
	}
	u, err := url.Parse(e.tokenURL())
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		if e.TokenURL == "" && e.Discovery != nil {
			return errors.New("route " + e.Route + ": the authorization server's metadata has no token_endpoint; give token.url")
		}
		return errors.New("route " + e.Route + ": token_url must be an absolute http(s) URL")
	}
	if e.Client == nil {
		return errors.New("route " + e.Route + ": no HTTP client")
	}
	if err := e.Auth.Validate(); err != nil {
		return errors.New("route " + e.Route + ": " + err.Error())
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.DefaultTTL <= 0 {
		e.DefaultTTL = 5 * time.Minute
	}
	return nil
}

func (e *Endpoint) host() string {
	u, _ := url.Parse(e.tokenURL())
	return u.Host
}

// endpoint is explicit when the configuration gives it, else the named
// endpoint of the current metadata ("" without either).
func (e *Endpoint) endpoint(name, explicit string) string {
	if explicit != "" || e.Discovery == nil {
		return explicit
	}
	return e.Discovery.Current().Endpoint(name, e.MTLS)
}

func (e *Endpoint) tokenURL() string { return e.endpoint(discovery.Token, e.TokenURL) }

// token posts one grant to the token endpoint with the client
// authentication (and a DPoP proof on a DPoP route, sent once more with the
// nonce the endpoint asks for) and parses the answer.
func (e *Endpoint) token(ctx context.Context, form url.Values) (*Response, error) {
	var certBinding string
	if e.CertBinding != nil {
		certBinding = e.CertBinding() // the certificate this request presents
	}
	tokenURL := e.tokenURL()
	var demanded string // the nonce a use_dpop_nonce answer asked for
	for attempt := 0; ; attempt++ {
		now := e.Now()
		hdr := http.Header{}
		if err := e.Auth.apply(ctx, tokenURL, form, hdr, now); err != nil {
			return nil, &endpointError{Route: e.Route, Endpoint: "token", Err: err}
		}
		nonce, err := e.proveTokenRequest(tokenURL, demanded, hdr)
		if err != nil {
			return nil, err
		}
		body, answer, err := postAnswer(ctx, e.Client, e.Route, "token", tokenURL, form, hdr, now)
		var retry bool
		if demanded, retry = e.retryWithNonce(tokenURL, attempt, nonce, answer, err); retry {
			continue
		}
		if err != nil {
			return nil, err
		}
		r, err := ParseResponse(body, now, e.DefaultTTL)
		if err == nil {
			err = e.bind(r.Token, certBinding)
		}
		if err != nil {
			return nil, &endpointError{Route: e.Route, Endpoint: "token", Status: http.StatusOK, Err: err}
		}
		return r, nil
	}
}

// ClientCredentials is the client_credentials grant (RFC 6749 §4.4): one
// route-wide token, so Fetch ignores subject.
type ClientCredentials struct {
	ep     Endpoint
	scopes string
	params url.Values
}

// NewClientCredentials returns the source. scopes may be empty; extra form
// parameters (e.g. audience, resource) may be nil.
func NewClientCredentials(ep Endpoint, scopes []string, extra url.Values) (*ClientCredentials, error) {
	if err := ep.validate(); err != nil {
		return nil, err
	}
	return &ClientCredentials{ep: ep, scopes: strings.Join(scopes, " "), params: extra}, nil
}

// Host implements tokencache.Source.
func (c *ClientCredentials) Host() string { return c.ep.host() }

// Fetch implements tokencache.Source. The answer's refresh token, if any, is
// dropped: client credentials need none.
func (c *ClientCredentials) Fetch(ctx context.Context, _ string) (*tokencache.Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if c.scopes != "" {
		form.Set("scope", c.scopes)
	}
	for k, v := range c.params {
		form[k] = v
	}
	r, err := c.ep.token(ctx, form)
	if err != nil {
		var ee *endpointError
		if errors.As(err, &ee) {
			return nil, ee.toFetchError()
		}
		return nil, err
	}
	return r.Token, nil
}
