package vaultsrc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// AuthError reports a failed login. It names the method and role, never the
// token, secret ID or JWT. Unavailable tells whether Vault could not be
// reached (a retry may help) or refused the credentials (fix the config).
type AuthError struct {
	// Method describes the method and role, e.g. `approle auth at auth/approle (role "payments")`.
	Method string
	// Unavailable is true when Vault could not be reached or answered 5xx.
	Unavailable bool
	Err         error
}

func (e *AuthError) Error() string {
	if e.Unavailable {
		return fmt.Sprintf("vault login with %s: Vault unreachable: %v", e.Method, e.Err)
	}
	return fmt.Sprintf("vault login with %s failed: %v; check the credentials and the role's bindings", e.Method, e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// UnavailableError reports that Vault could not be reached or answered with a
// server error; the request was not attempted when RetryAt is set (the client
// is backing off after earlier failures). A retry later may help.
type UnavailableError struct {
	Op      string
	RetryAt time.Time
	Err     error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s: Vault unavailable; next attempt after %s", e.Op, e.RetryAt.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s: Vault unavailable: %v", e.Op, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// ResponseError is Vault's answer to a request it refused (4xx, or 5xx that is
// not an outage). Messages are Vault's own error strings; request bodies and
// tokens are never included.
type ResponseError struct {
	Op         string
	StatusCode int
	Messages   []string
}

func (e *ResponseError) Error() string {
	msg := strings.Join(e.Messages, "; ")
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("%s: Vault answered %d: %s", e.Op, e.StatusCode, msg)
}

// ErrNotFound matches (with errors.Is) a ResponseError with status 404.
var ErrNotFound = errors.New("not found in Vault")

// ErrPermissionDenied matches (with errors.Is) a ResponseError with status 403.
var ErrPermissionDenied = errors.New("permission denied by Vault")

// ErrVersionConflict matches (with errors.Is) Vault's refusal of a KV v2
// check-and-set write: the secret is no longer at the version the writer
// read. Vault says so only in its message (status 400), so this is the one
// place that reads it.
var ErrVersionConflict = errors.New("vault kv version changed (check-and-set refused)")

// Is lets errors.Is(err, ErrNotFound), errors.Is(err, ErrPermissionDenied)
// and errors.Is(err, ErrVersionConflict) work.
func (e *ResponseError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrPermissionDenied:
		return e.StatusCode == http.StatusForbidden
	case ErrVersionConflict:
		return e.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(e.Messages, " "), "check-and-set")
	}
	return false
}

// classify turns an error from the api package into ours: an
// *UnavailableError for transport failures and outage status codes, a
// *ResponseError for other refusals. The api's own message, which carries the
// full request URL, is not kept.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return &UnavailableError{Op: op, Err: &ResponseError{Op: op, StatusCode: re.StatusCode, Messages: re.Errors}}
		}
		return &ResponseError{Op: op, StatusCode: re.StatusCode, Messages: re.Errors}
	}
	return &UnavailableError{Op: op, Err: stripURL(err)}
}

// stripURL drops the "Get "http://...": " prefix of *url.Error messages while
// keeping the cause, so paths do not leak into messages meant for operators twice.
func stripURL(err error) error {
	type unwrapper interface{ Unwrap() error }
	for e := err; e != nil; {
		if s := e.Error(); !strings.Contains(s, "://") {
			return e
		}
		u, ok := e.(unwrapper)
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}

// isUnavailable reports whether err means Vault could not be reached.
func isUnavailable(err error) bool {
	var ue *UnavailableError
	return errors.As(err, &ue)
}
