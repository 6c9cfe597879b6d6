package certs

import "errors"

// Result is the outcome of a reload event, as a Reloader reports it to its
// Report callback. Its string is the value of the "result" label of
// credential_reloads_total.
type Result string

// The results of a reload event.
const (
	// Success: a new version was stored and serves from now on.
	Success Result = "success"
	// Refused: a new version was read but did not parse or validate (wrong
	// passcode, key mismatch, expired, not yet valid). The previous
	// certificate keeps serving. Reported once per refused version.
	Refused Result = "refused"
	// Unreachable: the source could not be read (a missing file, a Vault
	// outage). The previous certificate keeps serving. Reported once when
	// the source becomes unreadable, not once per poll.
	Unreachable Result = "unreachable"
)

// RefusedError marks material that a Source read and refused: it did not
// parse or does not fit together. A Source returns it together with the
// version it refused, so that the Reloader remembers that version and does
// not fetch it again. Any other error from Fetch means the source could not
// be read; it is retried at the next poll.
type RefusedError struct {
	Err error
}

// Refuse marks err (which must describe the refused material, never carry a
// secret) as a refusal; nil stays nil.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &RefusedError{Err: err}
}

func (e *RefusedError) Error() string { return e.Err.Error() }

func (e *RefusedError) Unwrap() error { return e.Err }

// IsRefused reports whether err marks refused material (see RefusedError).
func IsRefused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}
