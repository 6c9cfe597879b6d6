package oauth

import (
	"context"
	"errors"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// MaxIdlePerPass bounds how many idle consents one Idle call returns, so a
// keep-alive pass holds a bounded list; the next pass takes the rest.
const MaxIdlePerPass = 10_000

// errEnough stops a scan once MaxIdlePerPass consents are found.
var errEnough = errors.New("enough idle consents for one pass")

// KeepAlive is how long a consent may go unused before it is refreshed to
// keep it alive (0: never).
func (a *AuthCode) KeepAlive() time.Duration { return a.cfg.KeepAlive }

// Idle lists the route's consents that went unused for the keep-alive
// period (AuthCodeConfig.KeepAlive; none when it is 0):
// active, neither created nor refreshed within keepAlive, and holding no
// access token that is still valid (so no cache anywhere holds a token
// that refreshing would make the bank revoke). Some banks revoke a refresh
// token that is not used for a while; refreshing these keeps them alive.
//
// The list is a snapshot: each one is refreshed through the route's token
// cache (paced by the token budget), and Fetch refreshes a consent once
// across every process sharing the store, since a consent another process
// refreshed meanwhile holds a fresh token that is used instead.
func (a *AuthCode) Idle(ctx context.Context) ([]consentstore.Key, error) {
	keepAlive := a.cfg.KeepAlive
	if keepAlive <= 0 {
		return nil, nil
	}
	now := a.cfg.Endpoint.Now()
	var out []consentstore.Key
	err := consentstore.Visit(ctx, a.cfg.Store, consentstore.Filter{Route: a.Route(), AnyOwner: true}, func(c *consentstore.Consent) error {
		if IsIdle(c, keepAlive, now) {
			out = append(out, c.Key())
			if len(out) >= MaxIdlePerPass {
				return errEnough
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	return out, nil
}

// IsIdle reports whether c went unused for keepAlive at now (see Idle).
func IsIdle(c *consentstore.Consent, keepAlive time.Duration, now time.Time) bool {
	if c.State != consentstore.Active {
		return false
	}
	last := c.Created
	if c.Refreshed.After(last) {
		last = c.Refreshed
	}
	return now.Sub(last) >= keepAlive && !c.AccessExpiry.After(now)
}
