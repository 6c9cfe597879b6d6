package oauth

import (
	"errors"
	"time"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// This file holds stand-ins for what the per-subject tokencache change
// provides; each item says how to switch over once it is in.

// ConsentRequiredError means subject has no usable consent: none was given,
// the bank rejected its refresh token (invalid_grant), or it was revoked.
// Cause says which, for the app's error message; it never holds a token.
//
// It is an identical copy of tokencache.ConsentRequiredError: after the
// merge, replace it by a type alias (type ConsentRequiredError =
// tokencache.ConsentRequiredError) so the proxy's errors.As matches.
type ConsentRequiredError struct {
	Subject string
	Cause   string
}

func (e *ConsentRequiredError) Error() string {
	return "subject " + e.Subject + " needs a new consent: " + e.Cause
}

// toFetchError turns a failed endpoint call into what the cache expects: a
// *tokencache.FetchError wrapping the endpointError. After the merge set
// FetchError.RetryAfter from RetryAfterOf (the field is added by the cache
// change); until then the cache reads it through errors.As on the wrapped
// error with RetryAfterOf.
func (e *endpointError) toFetchError() error {
	return &tokencache.FetchError{Status: e.Status, Reason: "route " + e.Route + ": " + e.Endpoint + " request failed", Err: e}
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
