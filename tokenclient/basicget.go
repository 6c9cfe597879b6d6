package tokenclient

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// BasicGet is the Banking Circle token flow: GET the authorization URL with
// Authorization: Basic base64(username:password), over the route's mTLS
// client, answered by {"access_token", "expires_in", "token_type"}.
type BasicGet struct {
	URL      string
	Username secret.Source
	Password secret.Source
	// Client sends the request; it carries the route's client certificate.
	Client *http.Client
	// DefaultTTL applies when the answer has no expires_in.
	DefaultTTL time.Duration

	host string
}

var _ tokencache.Source = (*BasicGet)(nil)

// Host implements tokencache.Source.
func (b *BasicGet) Host() string {
	if b.host == "" {
		if u, err := url.Parse(b.URL); err == nil {
			b.host = u.Host
		}
	}
	return b.host
}

// Fetch implements tokencache.Source.
// The flow has no subject: every subject gets the route's token.
func (b *BasicGet) Fetch(ctx context.Context, _ string) (*tokencache.Token, error) {
	user, err := b.Username.Get(ctx)
	if err != nil {
		return nil, &tokencache.FetchError{Reason: "reading the username (" + b.Username.String() + ")", Err: err}
	}
	pass, err := b.Password.Get(ctx)
	if err != nil {
		return nil, &tokencache.FetchError{Reason: "reading the password (" + b.Password.String() + ")", Err: err}
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user.Reveal()+":"+pass.Reveal())))
	hdr.Set("Content-Type", "application/json")
	resp, err := Do(ctx, b.Client, Request{Method: http.MethodGet, URL: b.URL, Header: hdr})
	if err != nil {
		return nil, b.callFailed(err)
	}
	now := time.Now()
	excerpt := ""
	if resp.Status != http.StatusOK {
		excerpt = string(resp.Body[:min(len(resp.Body), 300)])
	}
	switch {
	case resp.Status == http.StatusTooManyRequests:
		return nil, &tokencache.FetchError{Status: resp.Status, RetryAfter: resp.RetryAfter(now), Reason: "the token endpoint answered 429 Too Many Requests", Excerpt: excerpt}
	case resp.Status == http.StatusUnauthorized:
		return nil, &tokencache.FetchError{Status: resp.Status, Reason: "the token endpoint rejected the username or password", Excerpt: excerpt}
	case resp.Status == http.StatusForbidden:
		return nil, &tokencache.FetchError{Status: resp.Status, Reason: "the token endpoint refused this client (is the egress IP whitelisted?)", Excerpt: excerpt}
	case resp.Status != http.StatusOK:
		return nil, &tokencache.FetchError{Status: resp.Status, Reason: "the token endpoint answered " + http.StatusText(resp.Status), Excerpt: excerpt}
	}
	tok, err := ParseToken(resp.Body, now, b.DefaultTTL)
	if err != nil {
		return nil, &tokencache.FetchError{Status: resp.Status, Reason: "reading the token response", Err: err}
	}
	return tok, nil
}

// callFailed names a call that got no answer in the cache's terms.
func (b *BasicGet) callFailed(err error) error {
	var ce *Error
	if !errors.As(err, &ce) {
		return &tokencache.FetchError{Reason: "sending the request to " + b.Host(), Err: err}
	}
	switch ce.Stage {
	case Build:
		return &tokencache.FetchError{Reason: "building the request", Err: ce.Err}
	case Read:
		return &tokencache.FetchError{Status: ce.Status, Reason: "reading the response", Err: ce.Err}
	}
	return &tokencache.FetchError{Reason: "sending the request to " + b.Host(), Err: ce.Err}
}
