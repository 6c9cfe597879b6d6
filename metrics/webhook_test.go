package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/webhook"
)

func TestWebhookMetrics(t *testing.T) {
	m := New()
	w := m.Webhooks()
	var _ oauth.EventObserver = w
	var _ webhook.Observer = w
	w.EventsAppended(consentstore.EventActive, 2)
	w.Delivery("https://app.example/hooks?k=v", webhook.ResultFailed)
	w.Delivery("https://app.example/hooks?k=v", webhook.ResultDelivered)
	w.Backlog(3, 90*time.Second)
	want := `
# HELP tokenproxy_consent_events_total Consent events appended to the outbox for the webhooks, by type.
# TYPE tokenproxy_consent_events_total counter
tokenproxy_consent_events_total{type="consent.active"} 2
# HELP tokenproxy_webhook_backlog Consent events in the outbox not yet delivered to every webhook that wants them.
# TYPE tokenproxy_webhook_backlog gauge
tokenproxy_webhook_backlog 3
# HELP tokenproxy_webhook_deliveries_total Consent event deliveries by webhook (URL without query) and result: delivered (2xx), failed (retried), gave_up (older than max_age).
# TYPE tokenproxy_webhook_deliveries_total counter
tokenproxy_webhook_deliveries_total{result="delivered",webhook="https://app.example/hooks"} 1
tokenproxy_webhook_deliveries_total{result="failed",webhook="https://app.example/hooks"} 1
# HELP tokenproxy_webhook_oldest_undelivered_seconds Age of the oldest undelivered consent event (0 when none).
# TYPE tokenproxy_webhook_oldest_undelivered_seconds gauge
tokenproxy_webhook_oldest_undelivered_seconds 90
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "tokenproxy_consent_events_total",
		"tokenproxy_webhook_deliveries_total", "tokenproxy_webhook_backlog", "tokenproxy_webhook_oldest_undelivered_seconds"); err != nil {
		t.Fatal(err)
	}
}
