// Package metrics exposes tokenproxy's Prometheus metrics. It implements the
// observer seams of the proxy pipeline and the token cache, and reads
// certificate expiry from the routes' holders at scrape time. No label or
// value ever carries a secret: labels are route names, status codes, error
// codes and fixed words.
package metrics

import (
	"crypto/tls"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors, registered in their own registry.
type Metrics struct {
	reg *prometheus.Registry

	requests     *prometheus.CounterVec
	broken       *prometheus.CounterVec
	upstream     *prometheus.HistogramVec
	fetches      *prometheus.CounterVec
	fetchSeconds *prometheus.HistogramVec
	hits         *prometheus.CounterVec
	limiterWaits *prometheus.CounterVec
	limiterSecs  *prometheus.CounterVec
	throttled    *prometheus.CounterVec
	reloads      *prometheus.CounterVec
	accessCount  *prometheus.CounterVec
	accessRefuse *prometheus.CounterVec
	config       *prometheus.CounterVec

	mu    sync.Mutex
	certs []certEntry
}

type certEntry struct {
	route, kind string
	load        func() *tls.Certificate
}

// New returns metrics in a fresh registry, with Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_requests_total",
		Help: "Requests answered, by route, HTTP status and tokenproxy error code (\"\" when the answer is the upstream's).",
	}, []string{"route", "status", "error"})
	m.broken = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_upstream_answers_broken_total",
		Help: "Upstream answers relayed broken, by route and error: upstream_body_broken (the body ended early; the app's connection was aborted), upstream_ambiguous_framing (Content-Length and Transfer-Encoding both set; the connection was closed after it).",
	}, []string{"route", "error"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokenproxy_upstream_duration_seconds",
		Help:    "Time from sending a request upstream to its response headers.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	m.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_token_fetches_total",
		Help: "Token fetches by result: ok, throttled, rejected, timeout, error.",
	}, []string{"route", "result"})
	m.fetchSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokenproxy_token_fetch_duration_seconds",
		Help:    "Duration of token fetches, limiter wait included.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	m.hits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_token_cache_hits_total",
		Help: "Requests served with the cached token.",
	}, []string{"route"})
	m.limiterWaits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_token_limiter_waits_total",
		Help: "Token fetches that waited for the per-host token budget or a back-off.",
	}, []string{"route"})
	m.limiterSecs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_token_limiter_wait_seconds_total",
		Help: "Total time token fetches waited for the budget or a back-off.",
	}, []string{"route"})
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_token_endpoint_429_total",
		Help: "429 Too Many Requests answers seen from token endpoints.",
	}, []string{"route"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_credential_reloads_total",
		Help: "Credential reload attempts that found new material, by result (success, failure).",
	}, []string{"route", "credential", "result"})
	m.accessCount = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_access_counted_total",
		Help: "Unattended calls counted against their consent's daily budget (frequency_per_day) and sent, by route.",
	}, []string{"route"})
	m.accessRefuse = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_access_refused_total",
		Help: "Unattended calls refused by the daily budget, by route and reason: exceeded (429 access_frequency_exceeded), unavailable (the count could not be taken; 503).",
	}, []string{"route", "reason"})
	m.config = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenproxy_config_reloads_total",
		Help: "Configuration reloads by result: success (the new configuration serves), failure (it did not decode, validate or build; nothing changed), refused (it changes a setting that needs a restart; nothing changed).",
	}, []string{"result"})
	for _, r := range []string{"success", "failure", "refused"} {
		m.config.WithLabelValues(r)
	}
	m.reg.MustRegister(m.requests, m.broken, m.upstream, m.fetches, m.fetchSeconds, m.hits, m.limiterWaits, m.limiterSecs,
		m.throttled, m.reloads, m.accessCount, m.accessRefuse, m.config, &expiryCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request implements proxy.Observer.
func (m *Metrics) Request(route string, status int, code string, upstream time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status), code).Inc()
	if upstream > 0 {
		m.upstream.WithLabelValues(route).Observe(upstream.Seconds())
	}
}

// UpstreamAnswerBroken implements proxy.BrokenAnswerObserver.
func (m *Metrics) UpstreamAnswerBroken(route, code string) {
	m.broken.WithLabelValues(route, code).Inc()
}

// AccessCounted counts an unattended call counted against its consent's budget.
func (m *Metrics) AccessCounted(route string) { m.accessCount.WithLabelValues(route).Inc() }

// AccessRefused counts an unattended call refused by the budget (reason
// exceeded or unavailable).
func (m *Metrics) AccessRefused(route, reason string) {
	m.accessRefuse.WithLabelValues(route, reason).Inc()
}

// TokenHit implements tokencache.Observer.
func (m *Metrics) TokenHit(route string) { m.hits.WithLabelValues(route).Inc() }

// TokenFetch implements tokencache.Observer.
func (m *Metrics) TokenFetch(route, result string, d time.Duration) {
	m.fetches.WithLabelValues(route, result).Inc()
	m.fetchSeconds.WithLabelValues(route).Observe(d.Seconds())
}

// LimiterWait implements tokencache.Observer.
func (m *Metrics) LimiterWait(route string, d time.Duration) {
	m.limiterWaits.WithLabelValues(route).Inc()
	m.limiterSecs.WithLabelValues(route).Add(d.Seconds())
}

// TokenThrottled implements tokencache.Observer.
func (m *Metrics) TokenThrottled(route string) { m.throttled.WithLabelValues(route).Inc() }

// Reload records a credential reload event (assemble.Options.OnReload):
// result is "success", "refused" (a bad version, counted once) or
// "unreachable" (the source could not be read, counted once per outage).
func (m *Metrics) Reload(route, credential, result string) {
	m.reloads.WithLabelValues(route, credential, result).Inc()
}

// ConfigReload counts a configuration reload: result is "success",
// "failure" or "refused".
func (m *Metrics) ConfigReload(result string) { m.config.WithLabelValues(result).Inc() }

// WatchCertificate exports the seconds until the certificate that load
// returns expires, as tokenproxy_certificate_expiry_seconds{route,certificate}.
// A second call for the same route and kind (a route rebuilt by a reload)
// replaces the first.
func (m *Metrics) WatchCertificate(route, kind string, load func() *tls.Certificate) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, e := range m.certs {
		if e.route == route && e.kind == kind {
			m.certs[i].load = load
			return
		}
	}
	m.certs = append(m.certs, certEntry{route: route, kind: kind, load: load})
}

// ForgetCertificates stops exporting the certificates of route (a route a
// reload removed).
func (m *Metrics) ForgetCertificates(route string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.certs = slices.DeleteFunc(m.certs, func(e certEntry) bool { return e.route == route })
}

// WatchDependency exports tokenproxy_dependency_up{dependency=name}: 1 while
// up() reports true (e.g. Vault reachable and logged in), else 0.
func (m *Metrics) WatchDependency(name string, up func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tokenproxy_dependency_up",
		Help:        "1 while a dependency (vault) is reachable and healthy; material already loaded keeps serving while it is 0.",
		ConstLabels: prometheus.Labels{"dependency": name},
	}, func() float64 {
		if up() {
			return 1
		}
		return 0
	}))
}

var expiryDesc = prometheus.NewDesc("tokenproxy_certificate_expiry_seconds",
	"Seconds until the certificate currently served expires (negative once expired).",
	[]string{"route", "certificate"}, nil)

type expiryCollector struct{ m *Metrics }

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	entries := append([]certEntry(nil), c.m.certs...)
	c.m.mu.Unlock()
	now := time.Now()
	for _, e := range entries {
		cert := e.load()
		if cert == nil || cert.Leaf == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, cert.Leaf.NotAfter.Sub(now).Seconds(), e.route, e.kind)
	}
}
