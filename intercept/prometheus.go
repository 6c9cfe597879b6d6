package intercept

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PrometheusObserver counts interception events as Prometheus metrics.
// Hosts appear as a label only on events for intercepted hosts (bounded by
// the routes); refusals are labelled by reason alone, since a refused host
// can be anything an app asks for.
type PrometheusObserver struct {
	intercepted *prometheus.CounterVec
	refused     *prometheus.CounterVec
	issued      *prometheus.CounterVec
	issueTime   prometheus.Histogram
	hits        *prometheus.CounterVec
}

// NewPrometheusObserver registers the interception metrics with reg.
func NewPrometheusObserver(reg prometheus.Registerer) *PrometheusObserver {
	o := &PrometheusObserver{
		intercepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_interceptions_total",
			Help: "TLS handshakes of apps terminated by tokenproxy, by host.",
		}, []string{"host"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_interception_refusals_total",
			Help: "CONNECT tunnels, handshakes and tunnelled requests refused, by reason.",
		}, []string{"reason"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_interception_certificates_issued_total",
			Help: "Host certificates signed by the interception CA, by host.",
		}, []string{"host"}),
		issueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokenproxy_interception_certificate_issue_seconds",
			Help:    "Time to make a key and have the interception CA sign a host certificate.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_interception_certificate_cache_hits_total",
			Help: "Handshakes served a cached host certificate, by host.",
		}, []string{"host"}),
	}
	reg.MustRegister(o.intercepted, o.refused, o.issued, o.issueTime, o.hits)
	return o
}

// Intercepted implements Observer.
func (o *PrometheusObserver) Intercepted(host string) { o.intercepted.WithLabelValues(host).Inc() }

// Refused implements Observer.
func (o *PrometheusObserver) Refused(_ string, r Reason) { o.refused.WithLabelValues(string(r)).Inc() }

// LeafIssued implements Observer.
func (o *PrometheusObserver) LeafIssued(host string, d time.Duration) {
	o.issued.WithLabelValues(host).Inc()
	o.issueTime.Observe(d.Seconds())
}

// CacheHit implements Observer.
func (o *PrometheusObserver) CacheHit(host string) { o.hits.WithLabelValues(host).Inc() }
