package tokencache

import (
	"fmt"
	"strconv"
	"time"
)

// ThrottledError means no token can be had now without exceeding the
// provider's budget or during a back-off after a 429; the app should retry
// after RetryAfter.
type ThrottledError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("no token available: %s; retry after %s", e.Reason, e.RetryAfter.Round(time.Second))
}

// FetchError is a failed token request. Status is the HTTP status of the
// token endpoint's answer, or 0 when no answer came. It never holds the
// response body, which may echo what was sent.
type FetchError struct {
	Status int
	Reason string
	Err    error
	// RetryAfter is the provider's Retry-After on a 429, or 0 when it sent
	// none. The cache alone decides the back-off from it.
	RetryAfter time.Duration
	// Excerpt is the start of a non-2xx answer's body, for operator
	// diagnostics (`tokenproxy check`) only: it is never logged by the cache
	// nor sent to an app, since an endpoint might echo what it received.
	Excerpt string
}

func (e *FetchError) Error() string {
	msg := "token request failed: " + e.Reason
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *FetchError) Unwrap() error { return e.Err }

// CredentialsRejected reports whether the endpoint refused the credentials,
// which no retry will fix.
func (e *FetchError) CredentialsRejected() bool { return e.Status == 401 }

// Forbidden reports whether the endpoint refused the caller outright (often
// an IP allowlist).
func (e *FetchError) Forbidden() bool { return e.Status == 403 }

// Throttled reports whether the endpoint answered 429 Too Many Requests.
func (e *FetchError) Throttled() bool { return e.Status == 429 }

// ConsentRequiredError means subject has no usable consent: none was given,
// the bank rejected its refresh token (invalid_grant), or it was revoked. The
// customer must authorise (again) before a token can be had. Per-subject
// sources (oauth.AuthCode) return it; the cache logs it at Info and counts it
// as consent_required; the proxy answers 401 consent_required. It is a fetch
// outcome, so it lives beside FetchError and the request path recognises it
// without knowing which source produced it. Cause says which of the three,
// for the app's error message, and never holds a secret.
type ConsentRequiredError struct {
	Subject string
	Cause   string
}

func (e *ConsentRequiredError) Error() string {
	msg := "no usable consent for subject " + strconv.Quote(e.Subject)
	if e.Cause != "" {
		msg += ": " + e.Cause
	}
	return msg
}
