package oauth

import (
	"context"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// Observer counts refresh outcomes; the metrics wiring implements it with
// counters labelled by route. Methods must be cheap and safe for concurrent use.
type Observer interface {
	// Refreshed: the bank answered a refresh and the answer was stored.
	Refreshed(route string)
	// InvalidGrant: the bank rejected a refresh token; the consent is now invalid.
	InvalidGrant(route string)
	// ConsentStored: a code exchange stored a new consent.
	ConsentStored(route string)
}

// Census is a snapshot of the store for gauges: consents by route and
// state, and how many active ones have a refresh token expiring soon.
type Census struct {
	// ByState counts consents per route and state.
	ByState map[string]map[consentstore.State]int
	// ExpiringSoon counts, per route, active consents whose refresh token
	// expires within the window given to TakeCensus (ops alert on it).
	ExpiringSoon map[string]int
}

// TakeCensus counts every consent of every owner: one aggregate query on a
// store that counts (consentstore.Counter), otherwise a visit of every
// consent (call it periodically, e.g. each minute, not per request).
func TakeCensus(ctx context.Context, s consentstore.Store, now time.Time, within time.Duration) (*Census, error) {
	if ct, ok := s.(consentstore.Counter); ok {
		n, err := ct.Count(ctx, now.Add(within))
		if err != nil {
			return nil, err
		}
		return &Census{ByState: n.ByState, ExpiringSoon: n.Expiring}, nil
	}
	c := &Census{ByState: map[string]map[consentstore.State]int{}, ExpiringSoon: map[string]int{}}
	count := func(x *consentstore.Consent) error {
		m := c.ByState[x.Route]
		if m == nil {
			m = map[consentstore.State]int{}
			c.ByState[x.Route] = m
		}
		m[x.State]++
		if x.State != consentstore.Invalid && !x.RefreshExpiry.IsZero() && x.RefreshExpiry.Sub(now) <= within {
			c.ExpiringSoon[x.Route]++
		}
		return nil
	}
	if err := consentstore.Visit(ctx, s, consentstore.Filter{AnyOwner: true}, count); err != nil {
		return nil, err
	}
	return c, nil
}
