// Package tokenclient talks to token endpoints: it sends one request over a
// route's *http.Client (its client certificate and trust roots), reads a
// bounded answer, and parses the token response (RFC 6749 §5.1, with
// expires_in a number or a numeric string). Banking Circle's GET flow
// (BasicGet) lives here; the OAuth2 grants in package oauth use Do and
// ParseToken. Errors never hold a URL, a credential or a response body.
package tokenclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// MaxBody bounds how much of a token endpoint's answer is read (1 MiB).
const MaxBody = 1 << 20

// Request is one call to a token endpoint.
type Request struct {
	// Method is http.MethodGet or http.MethodPost.
	Method string
	URL    string
	// Header is sent as given; Do then sets Accept: application/json and,
	// for a POST, the form's Content-Type.
	Header http.Header
	// Form is a POST's body, sent application/x-www-form-urlencoded.
	Form url.Values
}

// Answer is a token endpoint's answer, whatever its status.
type Answer struct {
	Status int
	Header http.Header
	// Body is the start of the body, at most MaxBody bytes.
	Body []byte
	// TooLarge is true when the body was longer than MaxBody and was cut.
	TooLarge bool
}

// RetryAfter returns the wait a 429 answer asked for in its Retry-After
// header, relative to now: 0 when the header is absent or unreadable, or
// the status is not 429.
func (a *Answer) RetryAfter(now time.Time) time.Duration {
	if a.Status != http.StatusTooManyRequests {
		return 0
	}
	d, _ := ParseRetryAfter(a.Header.Get("Retry-After"), now)
	return d
}

// Stage says how far a failed call got.
type Stage uint8

// Stages of a call.
const (
	Build Stage = iota + 1 // the request could not be built (a bad URL)
	Send                   // no answer came (connection, TLS, timeout)
	Read                   // the answer's body broke off
)

// Error is a call that produced no answer to judge. Status is the answer's
// status when one came (Stage Read). Err never holds the request URL.
type Error struct {
	Stage  Stage
	Status int
	Err    error
}

func (e *Error) Error() string {
	switch e.Stage {
	case Build:
		return "building the token request: " + e.Err.Error()
	case Read:
		return fmt.Sprintf("reading the token endpoint's answer (HTTP %d): %v", e.Status, e.Err)
	}
	return "sending the token request: " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Do sends r with hc and reads at most MaxBody bytes of the answer. Any
// status is an Answer; an *Error means no answer could be read. Under a
// recording span it opens a "token request" client span with the grant,
// the host and the status: no header, form value or body.
func Do(ctx context.Context, hc *http.Client, r Request) (a *Answer, err error) {
	ctx, sp := startSpan(ctx, r)
	defer func() { endSpan(sp, a, err) }()
	var body io.Reader
	if r.Method == http.MethodPost {
		body = strings.NewReader(r.Form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return nil, &Error{Stage: Build, Err: err}
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	if r.Method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &Error{Stage: Send, Err: scrubURLError(err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return nil, &Error{Stage: Read, Status: resp.StatusCode, Err: err}
	}
	a = &Answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if len(b) > MaxBody {
		a.Body, a.TooLarge = b[:MaxBody], true
	}
	return a, nil
}

// scrubURLError keeps a transport error's cause but drops the URL, which
// could carry query parameters.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// startSpan opens the call's span when ctx holds a recording one. The grant
// is the form's grant_type, or basic_get for Banking Circle's GET.
func startSpan(ctx context.Context, r Request) (context.Context, trace.Span) {
	if tracing.Recording(ctx) == nil {
		return tracing.Start(ctx, tracing.SpanTokenRequest, trace.SpanKindClient)
	}
	grant := r.Form.Get("grant_type")
	if grant == "" && r.Method == http.MethodGet {
		grant = "basic_get"
	}
	host := ""
	if u, err := url.Parse(r.URL); err == nil {
		host = u.Hostname()
	}
	return tracing.Start(ctx, tracing.SpanTokenRequest, trace.SpanKindClient,
		tracing.KeyMethod.String(r.Method), tracing.KeyServerAddress.String(host), tracing.KeyGrant.String(grant))
}

func endSpan(sp trace.Span, a *Answer, err error) {
	var ce *Error
	switch {
	case errors.As(err, &ce):
		tracing.Fail(sp, [...]string{Build: "build", Send: "send", Read: "read"}[ce.Stage])
	case a != nil:
		tracing.Status(sp, a.Status, true)
	}
	sp.End()
}
