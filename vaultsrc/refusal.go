package vaultsrc

import (
	"crypto/tls"
	"sync"

	"github.com/tokenproxy/tokenproxy/certs"
)

// refusal remembers the version a certificate source last refused. The
// Reloader does not fetch a refused version again, so the polls that find it
// still current answer "unchanged"; refusal keeps the source's health entry
// failing with the refusal until a good version is stored, instead of
// reporting OK for a version that was never used.
type refusal struct {
	mu      sync.Mutex
	version string
	err     error
}

// healthErr returns what to report to health for a Fetch that returned
// (c, v, err) and records refusals and recoveries.
func (r *refusal) healthErr(c *tls.Certificate, v string, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case certs.IsRefused(err):
		r.version, r.err = v, err
		return err
	case err != nil:
		return err // unreachable: reported as it is, the refusal stays remembered
	case c != nil:
		r.version, r.err = "", nil
		return nil
	case r.err != nil && v == r.version:
		return r.err // unchanged, and the current version is the refused one
	}
	return nil
}
