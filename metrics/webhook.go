package metrics

import (
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// Webhooks holds the consent-event metrics: events appended to the
// outbox (it implements oauth.EventObserver), deliveries by webhook and
// result, and the outbox's backlog (it implements webhook.Observer).
type Webhooks struct {
	appended   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	backlog    prometheus.Gauge
	oldest     prometheus.Gauge
}

// Webhooks registers the consent-event metrics in m's registry and
// returns them. Call it once.
func (m *Metrics) Webhooks() *Webhooks {
	w := &Webhooks{}
	w.appended = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_consent_events_total",
		Help: "Consent events appended to the outbox for the webhooks, by type.",
	}, []string{"type"})
	w.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_webhook_deliveries_total",
		Help: "Consent event deliveries by webhook (URL without query) and result: delivered (2xx), failed (retried), gave_up (older than max_age).",
	}, []string{"webhook", "result"})
	w.backlog = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tokenproxy_webhook_backlog",
		Help: "Consent events in the outbox not yet delivered to every webhook that wants them.",
	})
	w.oldest = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tokenproxy_webhook_oldest_undelivered_seconds",
		Help: "Age of the oldest undelivered consent event (0 when none).",
	})
	m.reg.MustRegister(w.appended, w.deliveries, w.backlog, w.oldest)
	return w
}

// EventsAppended implements oauth.EventObserver.
func (w *Webhooks) EventsAppended(typ consentstore.EventType, n int) {
	w.appended.WithLabelValues(string(typ)).Add(float64(n))
}

// Delivery implements webhook.Observer.
func (w *Webhooks) Delivery(u, result string) {
	if p, err := url.Parse(u); err == nil {
		p.RawQuery, p.User, p.Fragment = "", nil, ""
		u = p.String()
	}
	w.deliveries.WithLabelValues(u, result).Inc()
}

// Backlog implements webhook.Observer.
func (w *Webhooks) Backlog(n int, age time.Duration) {
	w.backlog.Set(float64(n))
	w.oldest.Set(age.Seconds())
}
