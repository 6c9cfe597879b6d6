package tokencache

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// maxTokenResponse bounds how much of a token endpoint's answer is read.
const maxTokenResponse = 1 << 20

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

// Host implements Source.
func (b *BasicGet) Host() string {
	if b.host == "" {
		if u, err := url.Parse(b.URL); err == nil {
			b.host = u.Host
		}
	}
	return b.host
}

// Fetch implements Source.
// The flow has no subject: every subject gets the route's token.
func (b *BasicGet) Fetch(ctx context.Context, _ string) (*Token, error) {
	user, err := b.Username.Get(ctx)
	if err != nil {
		return nil, &FetchError{Reason: "reading the username (" + b.Username.String() + ")", Err: err}
	}
	pass, err := b.Password.Get(ctx)
	if err != nil {
		return nil, &FetchError{Reason: "reading the password (" + b.Password.String() + ")", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL, nil)
	if err != nil {
		return nil, &FetchError{Reason: "building the request", Err: err}
	}
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user.Reveal()+":"+pass.Reveal())))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := b.Client.Do(req)
	if err != nil {
		return nil, &FetchError{Reason: "sending the request to " + b.Host(), Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return nil, &FetchError{Status: resp.StatusCode, Reason: "reading the response", Err: err}
	}
	now := time.Now()
	excerpt := ""
	if resp.StatusCode != http.StatusOK {
		excerpt = string(body[:min(len(body), 300)])
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		d, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), now)
		return nil, &FetchError{Status: resp.StatusCode, RetryAfter: d, Reason: "the token endpoint answered 429 Too Many Requests", Excerpt: excerpt}
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, &FetchError{Status: resp.StatusCode, Reason: "the token endpoint rejected the username or password", Excerpt: excerpt}
	case resp.StatusCode == http.StatusForbidden:
		return nil, &FetchError{Status: resp.StatusCode, Reason: "the token endpoint refused this client (is the egress IP whitelisted?)", Excerpt: excerpt}
	case resp.StatusCode != http.StatusOK:
		return nil, &FetchError{Status: resp.StatusCode, Reason: "the token endpoint answered " + http.StatusText(resp.StatusCode), Excerpt: excerpt}
	}
	tok, err := ParseResponse(body, now, b.DefaultTTL)
	if err != nil {
		return nil, &FetchError{Status: resp.StatusCode, Reason: "reading the token response", Err: err}
	}
	return tok, nil
}

// scrubURLError keeps the cause of a transport error but drops the URL,
// which could carry query parameters.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
