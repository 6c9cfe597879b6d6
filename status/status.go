// Package status builds the operators' status page: one Snapshot of every
// route's certificates, token, token budget and request counts, the
// dependencies' health, the consents by state and the last reload. The
// composition root fills a Provider with read-only accessors of the running
// parts; the admin listener serves its Snapshot as HTML (/status) and JSON
// (/status.json). Request and token counts are read from the Prometheus
// registry that /metrics serves, so the two never disagree. Nothing on the
// page is secret: no token, key, password or secret reference.
package status

import (
	"context"
	"crypto/x509"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenproxy/tokenproxy/route"
)

// Snapshot is the status of one process at one time.
type Snapshot struct {
	GeneratedAt time.Time `json:"generated_at"`
	Version     string    `json:"version,omitempty"`
	// Ready is /readyz's answer; Readiness says why not ("ok", "draining",
	// "degraded": a dependency is down, see Dependencies).
	Ready     bool   `json:"ready"`
	Readiness string `json:"readiness"`
	// LastReload is the last configuration reload.
	LastReload Reload `json:"last_reload"`
	// Dependencies are Vault, Redis and the consent store, when configured.
	Dependencies []Dependency `json:"dependencies"`
	// Consents are the stored consents by route and state, from the last
	// census; nil without a consents: block.
	Consents *Consents `json:"consents,omitempty"`
	Routes   []Route   `json:"routes"`
}

// Reload is the outcome of the last configuration reload.
type Reload struct {
	// Never is true when no reload happened since start-up.
	Never bool       `json:"never"`
	At    *time.Time `json:"at,omitempty"`
	OK    bool       `json:"ok"`
	// Message says what the reload changed or why it was refused.
	Message string `json:"message,omitempty"`
}

// Dependency is the health of one dependency.
type Dependency struct {
	Name string `json:"name"`
	// Up is false while the dependency fails; what is loaded keeps serving.
	Up bool `json:"up"`
	// Since is when it entered its current state, when known.
	Since *time.Time `json:"since,omitempty"`
	// Error says why it is down; it never holds a secret.
	Error string `json:"error,omitempty"`
}

// Health is a dependency's state, as a Provider's Dependencies report it.
type Health struct {
	Up    bool
	Since time.Time
	Error string
}

// Consents is the last census of the consent store.
type Consents struct {
	// TakenAt is when the census ran (nil before the first).
	TakenAt *time.Time `json:"taken_at,omitempty"`
	// Error is the last census's error; the counts are the last good ones.
	Error  string          `json:"error,omitempty"`
	Routes []ConsentCounts `json:"routes"`
}

// ConsentCounts are one route's consents by state.
type ConsentCounts struct {
	Route      string `json:"route"`
	Active     int    `json:"active"`
	Refreshing int    `json:"refreshing"`
	Invalid    int    `json:"invalid"`
	// Expiring counts valid consents whose refresh token expires within
	// consents.expiring_within.
	Expiring int `json:"expiring"`
}

// Census is a census of the consent store as the composition root hands
// it over: counts by route and state name, and when it ran.
type Census struct {
	At       time.Time
	ByState  map[string]map[string]int
	Expiring map[string]int
	// Routes lists the authorization_code routes, so that a route without
	// a consent shows zeros.
	Routes []string
	Err    error
}

// Route is one route's status.
type Route struct {
	Name     string   `json:"name"`
	Hosts    []string `json:"hosts,omitempty"`
	Upstream string   `json:"upstream"`
	// Certificates are the client certificate and the signing key's certificate.
	Certificates []Certificate `json:"certificates"`
	// Token is nil on routes without a token.
	Token *Token `json:"token,omitempty"`
	// Budget is the token request budget of the route's authorization host.
	Budget   *Budget  `json:"budget,omitempty"`
	Requests Requests `json:"requests"`
}

// Certificate is one certificate a route serves.
type Certificate struct {
	// Kind is what it is for: client (mTLS) or signing.
	Kind string `json:"kind"`
	// Source is where it comes from: pem, pkcs12, vault_kv, vault_pki,
	// vault_transit, in_code.
	Source string `json:"source"`
	// Loaded is false while no certificate is held.
	Loaded   bool       `json:"loaded"`
	Subject  string     `json:"subject,omitempty"`
	Issuer   string     `json:"issuer,omitempty"`
	Serial   string     `json:"serial,omitempty"`
	NotAfter *time.Time `json:"not_after,omitempty"`
	// ExpiresInSeconds is tokenproxy_certificate_expiry_seconds: negative
	// once expired.
	ExpiresInSeconds float64 `json:"expires_in_seconds"`
	// StoredAt is when the certificate now served was stored: at start-up,
	// or by the last rotation; Rotations counts rotations since start-up.
	StoredAt  *time.Time `json:"stored_at,omitempty"`
	Rotations uint64     `json:"rotations"`
}

// Token is a route's token state.
type Token struct {
	// Kind is basic_get, client_credentials or per_customer.
	Kind string `json:"kind"`
	// Cached reports a route-wide token held and still sent.
	Cached bool `json:"cached"`
	// ExpiresAt is the route-wide token's expiry; ExpiresInSeconds its
	// time left (negative once expired).
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	ExpiresInSeconds float64    `json:"expires_in_seconds,omitempty"`
	// Customers counts customers' tokens held (per_customer routes).
	Customers int `json:"customers"`
	// LastFetch is when the last token request started; LastResult and
	// LastError its outcome (LastError never holds a secret).
	LastFetch  *time.Time `json:"last_fetch,omitempty"`
	LastResult string     `json:"last_result,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	// Hits and Fetches are tokenproxy_token_cache_hits_total and
	// tokenproxy_token_fetches_total by result.
	Hits    uint64            `json:"hits"`
	Fetches map[string]uint64 `json:"fetches"`
}

// Budget is an authorization host's token request budget as the provider
// counts it.
type Budget struct {
	AuthHost string `json:"auth_host"`
	// Used of Limit requests count in the provider's window now.
	Used  int `json:"used"`
	Limit int `json:"limit"`
	// WindowSeconds is how long a request counts after it completes (the
	// provider's window plus the margin).
	WindowSeconds float64 `json:"window_seconds"`
	// NextFree is the earliest time one more request may be sent; FreeNow
	// says it is now; Never says the budget allows none.
	NextFree *time.Time `json:"next_free,omitempty"`
	FreeNow  bool       `json:"free_now"`
	Never    bool       `json:"never,omitempty"`
	// BackoffUntil is the end of a back-off after a 429.
	BackoffUntil *time.Time `json:"backoff_until,omitempty"`
	// Shared is a budget every replica shares (Redis).
	Shared bool `json:"shared"`
	// Error says why the usage could not be read.
	Error string `json:"error,omitempty"`
}

// Requests are tokenproxy_requests_total for one route.
type Requests struct {
	Total uint64 `json:"total"`
	// Errors are answers tokenproxy made itself (its error label set);
	// ByError counts them by error code.
	Errors   uint64            `json:"errors"`
	ByStatus map[string]uint64 `json:"by_status"`
	ByError  map[string]uint64 `json:"by_error"`
}

// Provider collects Snapshots from read-only accessors of the running
// parts. Every field may be nil or empty.
type Provider struct {
	Routes []*route.Route
	// CertSource names the source of route's certificate of kind.
	CertSource func(route, kind string) string
	// Ready is the server's readiness (/readyz).
	Ready func() (bool, string)
	// Dependencies report the health of Vault, Redis and the consent store.
	Dependencies []NamedHealth
	// Census returns the last consent census; ok is false before the first.
	Census func() (c Census, ok bool)
	// Consents reports whether a consents: block is configured.
	Consents bool
	// Gatherer is the registry /metrics serves.
	Gatherer prometheus.Gatherer
	// LastReload reports the last configuration reload: when, whether it
	// was applied, and what it changed or why not; ok false when none.
	LastReload func() (at time.Time, applied bool, message string)
	Version    string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Timeout bounds reading a shared budget (1 s when 0).
	Timeout time.Duration
}

// NamedHealth is a dependency and its health check.
type NamedHealth struct {
	Name   string
	Health func() Health
}

// Collect reads the parts' state now.
func (p *Provider) Collect(ctx context.Context) *Snapshot {
	t := p.clock()
	s := &Snapshot{GeneratedAt: t.UTC(), Version: p.Version, Readiness: "unknown", Dependencies: []Dependency{}, Routes: []Route{}}
	if p.Ready != nil {
		s.Ready, s.Readiness = p.Ready()
		if strings.HasPrefix(s.Readiness, "degraded") {
			s.Readiness = "degraded" // the details are the dependencies'
		}
	}
	s.LastReload = Reload{Never: true, Message: "never"}
	if p.LastReload != nil {
		if at, ok, msg := p.LastReload(); !at.IsZero() {
			s.LastReload = Reload{At: ptr(at.UTC()), OK: ok, Message: msg}
		}
	}
	for _, d := range p.Dependencies {
		h := d.Health()
		dep := Dependency{Name: d.Name, Up: h.Up, Error: h.Error}
		if !h.Since.IsZero() {
			dep.Since = ptr(h.Since.UTC())
		}
		s.Dependencies = append(s.Dependencies, dep)
	}
	if p.Consents {
		s.Consents = p.consents()
	}
	m := p.counts()
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	for _, r := range p.Routes {
		s.Routes = append(s.Routes, p.route(ctx, r, t, m, timeout))
	}
	return s
}

func (p *Provider) clock() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Provider) consents() *Consents {
	out := &Consents{Routes: []ConsentCounts{}}
	if p.Census == nil {
		return out
	}
	c, ok := p.Census()
	if !ok {
		return out
	}
	if !c.At.IsZero() {
		out.TakenAt = ptr(c.At.UTC())
	}
	if c.Err != nil {
		out.Error = c.Err.Error()
	}
	names := slices.Clone(c.Routes)
	for r := range c.ByState {
		if !slices.Contains(names, r) {
			names = append(names, r)
		}
	}
	slices.Sort(names)
	for _, r := range names {
		st := c.ByState[r]
		out.Routes = append(out.Routes, ConsentCounts{Route: r, Active: st["active"], Refreshing: st["refreshing"],
			Invalid: st["invalid"], Expiring: c.Expiring[r]})
	}
	return out
}

func (p *Provider) route(ctx context.Context, r *route.Route, now time.Time, m counts, timeout time.Duration) Route {
	out := Route{Name: r.Name, Hosts: r.Hosts, Certificates: []Certificate{}, Requests: m.requests(r.Name)}
	if r.Upstream != nil {
		u := *r.Upstream
		u.User, u.RawQuery, u.Fragment = nil, "", ""
		out.Upstream = u.String()
	}
	for _, hc := range r.Certificates() {
		c := Certificate{Kind: hc.Kind}
		if p.CertSource != nil {
			c.Source = p.CertSource(r.Name, hc.Kind)
		}
		if cert := hc.Holder.Load(); cert != nil && cert.Leaf != nil {
			c.Loaded = true
			c.Subject, c.Issuer, c.Serial = dn(cert.Leaf.Subject.String()), dn(cert.Leaf.Issuer.String()), serial(cert.Leaf)
			c.NotAfter = ptr(cert.Leaf.NotAfter.UTC())
			c.ExpiresInSeconds = cert.Leaf.NotAfter.Sub(now).Seconds()
		}
		if at, n := hc.Holder.StoredAt(); n > 0 {
			c.StoredAt, c.Rotations = ptr(at.UTC()), n-1
		}
		out.Certificates = append(out.Certificates, c)
	}
	if r.Tokens == nil {
		return out
	}
	st := r.Tokens.State()
	tk := &Token{Kind: tokenKind(r.TokenKind), Cached: st.Cached, Customers: st.Subjects,
		LastResult: st.LastResult, LastError: st.LastError, Hits: m.hits[r.Name], Fetches: m.fetches[r.Name]}
	if tk.Fetches == nil {
		tk.Fetches = map[string]uint64{}
	}
	if !st.Expiry.IsZero() {
		tk.ExpiresAt = ptr(st.Expiry.UTC())
		tk.ExpiresInSeconds = st.Expiry.Sub(now).Seconds()
	}
	if !st.LastFetch.IsZero() {
		tk.LastFetch = ptr(st.LastFetch.UTC())
	}
	out.Token = tk
	bctx, cancel := context.WithTimeout(ctx, timeout)
	u, ok, err := r.Tokens.Budget(bctx)
	cancel()
	if ok {
		b := &Budget{AuthHost: r.Tokens.AuthHost(), Used: u.Used, Limit: u.Limit, WindowSeconds: u.Window.Seconds(), Shared: u.Shared}
		switch {
		case err != nil:
			b.Error = err.Error()
		case u.NextFree.IsZero():
			b.Never = true
		case !u.NextFree.After(p.clock()): // read after the usage
			b.FreeNow = true
		default:
			b.NextFree = ptr(u.NextFree.UTC())
		}
		if !u.BackoffUntil.IsZero() {
			b.BackoffUntil = ptr(u.BackoffUntil.UTC())
		}
		out.Budget = b
	}
	return out
}

func tokenKind(k route.TokenKind) string {
	switch k {
	case route.TokenBasicGet:
		return "basic_get"
	case route.TokenClientCredentials:
		return "client_credentials"
	case route.TokenPerCustomer:
		return "per_customer"
	}
	return "none"
}

// counts are the figures of the registry /metrics serves, by route.
type counts struct {
	byStatus map[string]map[string]uint64 // route → status → n
	byError  map[string]map[string]uint64 // route → error code → n
	total    map[string]uint64
	hits     map[string]uint64
	fetches  map[string]map[string]uint64 // route → result → n
}

func (c counts) requests(route string) Requests {
	r := Requests{Total: c.total[route], ByStatus: map[string]uint64{}, ByError: map[string]uint64{}}
	for k, v := range c.byStatus[route] {
		r.ByStatus[k] = v
	}
	for k, v := range c.byError[route] {
		r.ByError[k] = v
		r.Errors += v
	}
	return r
}

// Names of the metrics the page reads.
const (
	metricRequests = "tokenproxy_requests_total"
	metricHits     = "tokenproxy_token_cache_hits_total"
	metricFetches  = "tokenproxy_token_fetches_total"
)

// counts gathers the registry once; without one every count is 0.
func (p *Provider) counts() counts {
	c := counts{byStatus: map[string]map[string]uint64{}, byError: map[string]map[string]uint64{},
		total: map[string]uint64{}, hits: map[string]uint64{}, fetches: map[string]map[string]uint64{}}
	if p.Gatherer == nil {
		return c
	}
	mfs, _ := p.Gatherer.Gather() // a collector's error leaves the others' figures
	add := func(m map[string]map[string]uint64, a, b string, v uint64) {
		if m[a] == nil {
			m[a] = map[string]uint64{}
		}
		m[a][b] += v
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricRequests, metricHits, metricFetches:
		default:
			continue
		}
		for _, mt := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			v := uint64(mt.GetCounter().GetValue())
			rt := l["route"]
			switch mf.GetName() {
			case metricRequests:
				c.total[rt] += v
				add(c.byStatus, rt, l["status"], v)
				if code := l["error"]; code != "" {
					add(c.byError, rt, code, v)
				}
			case metricHits:
				c.hits[rt] += v
			case metricFetches:
				add(c.fetches, rt, l["result"], v)
			}
		}
	}
	return c
}

// dn shortens a distinguished name to at most 200 characters.
func dn(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func serial(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	s := c.SerialNumber.Text(16)
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// Duration writes d for people: "3d 4h", "5m 2s", "12s"; negative as "-…".
func Duration(d time.Duration) string {
	if d < 0 {
		return "-" + Duration(-d)
	}
	d = d.Round(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	sec := d / time.Second
	parts := []struct {
		n    time.Duration
		unit string
	}{{days, "d"}, {h, "h"}, {m, "m"}, {sec, "s"}}
	var out []string
	for i, pt := range parts {
		if pt.n == 0 && len(out) == 0 && i < len(parts)-1 {
			continue
		}
		out = append(out, strconv.FormatInt(int64(pt.n), 10)+pt.unit)
		if len(out) == 2 {
			break
		}
	}
	return strings.Join(out, " ")
}
