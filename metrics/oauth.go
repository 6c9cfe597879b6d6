package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// OAuth holds the per-customer consent metrics: counters fed by the
// refresh path (it implements oauth.Observer) and gauges set from a
// periodic census of the store (never per request).
type OAuth struct {
	refreshes     *prometheus.CounterVec
	invalidGrants *prometheus.CounterVec
	stored        *prometheus.CounterVec
	byState       *prometheus.GaugeVec
	expiring      *prometheus.GaugeVec
	censusErrors  prometheus.Counter
	keepAlive     *prometheus.CounterVec
}

// OAuth registers the consent metrics in m's registry and returns them.
// Call it once.
func (m *Metrics) OAuth() *OAuth {
	o := &OAuth{}
	o.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_consent_refreshes_total",
		Help: "Customer access tokens renewed with a refresh token (answer stored).",
	}, []string{"route"})
	o.invalidGrants = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_consent_invalid_grants_total",
		Help: "Refresh tokens the bank rejected (invalid_grant): the customer must consent again.",
	}, []string{"route"})
	o.stored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_consents_stored_total",
		Help: "Consents stored after a code exchange.",
	}, []string{"route"})
	o.byState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tokenproxy_consents",
		Help: "Stored consents by route and state (active, refreshing, invalid), from the last census.",
	}, []string{"route", "state"})
	o.expiring = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tokenproxy_consents_expiring",
		Help: "Valid consents whose refresh token expires within consents.expiring_within, from the last census.",
	}, []string{"route"})
	o.censusErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tokenproxy_consent_census_errors_total",
		Help: "Consent store censuses that failed (the gauges keep their last values).",
	})
	o.keepAlive = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_consent_keepalive_total",
		Help: "Keep-alive refreshes of consents that went unused for token.keep_alive, by result (ok, consent_required, error, throttled: a pass stopped for the token budget).",
	}, []string{"route", "result"})
	m.reg.MustRegister(o.refreshes, o.invalidGrants, o.stored, o.byState, o.expiring, o.censusErrors, o.keepAlive)
	return o
}

// Refreshed implements oauth.Observer.
func (o *OAuth) Refreshed(route string) { o.refreshes.WithLabelValues(route).Inc() }

// InvalidGrant implements oauth.Observer.
func (o *OAuth) InvalidGrant(route string) { o.invalidGrants.WithLabelValues(route).Inc() }

// KeepAlive counts a keep-alive refresh of route by result.
func (o *OAuth) KeepAlive(route, result string) { o.keepAlive.WithLabelValues(route, result).Inc() }

// ConsentStored implements oauth.Observer.
func (o *OAuth) ConsentStored(route string) { o.stored.WithLabelValues(route).Inc() }

// Census sets the gauges from a census of the store (routes lists every
// authorization_code route, so a route with no consent shows 0); a failed
// census leaves them and is counted.
func (o *OAuth) Census(routes []string, c *oauth.Census, err error) {
	if err != nil || c == nil {
		o.censusErrors.Inc()
		return
	}
	for _, r := range routes {
		o.expiring.WithLabelValues(r).Set(float64(c.ExpiringSoon[r]))
		for _, st := range []consentstore.State{consentstore.Active, consentstore.Refreshing, consentstore.Invalid} {
			o.byState.WithLabelValues(r, string(st)).Set(float64(c.ByState[r][st]))
		}
	}
	for r, states := range c.ByState {
		for st, n := range states {
			o.byState.WithLabelValues(r, string(st)).Set(float64(n))
		}
	}
}
