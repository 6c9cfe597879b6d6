package oauth

import (
	"errors"
	"time"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// ConsentRequiredError means subject has no usable consent: none was given,
// the bank rejected its refresh token (invalid_grant), or it was revoked.
// Cause says which, for the app's error message; it never holds a token. It
// is the cache's type, so the proxy's errors.As matches it.
type ConsentRequiredError = tokencache.ConsentRequiredError

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
