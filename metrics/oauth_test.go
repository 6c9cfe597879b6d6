package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

func TestOAuthMetrics(t *testing.T) {
	m := New()
	o := m.OAuth()
	var _ oauth.Observer = o
	o.Refreshed("bpce")
	o.Refreshed("bpce")
	o.InvalidGrant("bpce")
	o.ConsentStored("bpce")
	o.Census([]string{"bpce", "idle"}, &oauth.Census{
		ByState:      map[string]map[consentstore.State]int{"bpce": {consentstore.Active: 3, consentstore.Invalid: 1}},
		ExpiringSoon: map[string]int{"bpce": 2},
	}, nil)
	o.Census(nil, nil, errors.New("store unreadable")) // keeps the gauges
	want := `
# HELP tokenproxy_consent_refreshes_total Customer access tokens renewed with a refresh token (answer stored).
# TYPE tokenproxy_consent_refreshes_total counter
tokenproxy_consent_refreshes_total{route="bpce"} 2
# HELP tokenproxy_consent_invalid_grants_total Refresh tokens the bank rejected (invalid_grant): the customer must consent again.
# TYPE tokenproxy_consent_invalid_grants_total counter
tokenproxy_consent_invalid_grants_total{route="bpce"} 1
# HELP tokenproxy_consents Stored consents by route and state (active, refreshing, invalid), from the last census.
# TYPE tokenproxy_consents gauge
tokenproxy_consents{route="bpce",state="active"} 3
tokenproxy_consents{route="bpce",state="invalid"} 1
tokenproxy_consents{route="bpce",state="refreshing"} 0
tokenproxy_consents{route="idle",state="active"} 0
tokenproxy_consents{route="idle",state="invalid"} 0
tokenproxy_consents{route="idle",state="refreshing"} 0
# HELP tokenproxy_consents_expiring Valid consents whose refresh token expires within consents.expiring_within, from the last census.
# TYPE tokenproxy_consents_expiring gauge
tokenproxy_consents_expiring{route="bpce"} 2
tokenproxy_consents_expiring{route="idle"} 0
# HELP tokenproxy_consent_census_errors_total Consent store censuses that failed (the gauges keep their last values).
# TYPE tokenproxy_consent_census_errors_total counter
tokenproxy_consent_census_errors_total 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "tokenproxy_consent_refreshes_total",
		"tokenproxy_consent_invalid_grants_total", "tokenproxy_consents", "tokenproxy_consents_expiring", "tokenproxy_consent_census_errors_total"); err != nil {
		t.Fatal(err)
	}
}
