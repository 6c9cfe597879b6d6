// Package route is the runtime model of one upstream API: who may use it
// (Authorize), which token a request needs (TokenKey), and the request sent
// upstream (Prepare: headers, token, signature). It knows kinds of token,
// not how they are obtained, and nothing of the configuration: package
// assemble builds Routes from the configuration, the proxy serves them and
// `tokenproxy check` probes through them, so a diagnosis and a real request
// prepare and send requests the same way.
package route

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Signer adds signing headers to an outgoing request whose body is body.
type Signer interface {
	Sign(req *http.Request, body []byte) error
}

// Route is one upstream API, built and ready to serve.
type Route struct {
	Name     string
	Hosts    []string
	Upstream *url.URL
	// Listen is the route's own local address, if any.
	Listen string
	// Intercept is set when CONNECT tunnels to the route's hosts are terminated and served.
	Intercept bool

	// Transport carries requests and token fetches to the upstream with the
	// route's client certificate.
	Transport *http.Transport
	// ClientCert holds the current client certificate; nil when the route presents none.
	ClientCert *certs.Holder
	// Tokens is nil on routes without a token.
	Tokens *tokencache.Cache
	// TokenKind says where the route's token comes from; TokenNone without one.
	TokenKind TokenKind
	// Signer is nil on routes that are not signed.
	Signer Signer
	// DPoP, when set, sends the route's DPoP-bound tokens with a fresh
	// proof per request (RFC 9449); nil on other routes.
	DPoP DPoPClient

	MaxBody int64
	// TracePropagation sends the request's trace context upstream
	// (traceparent, tracestate); without it the route owns those headers
	// and drops the app's.
	TracePropagation bool

	held []HeldCertificate
	// jobs run alongside the server: certificate reloaders, Vault PKI renewal.
	jobs  []func(context.Context)
	allow *AllowPolicy
	// owned are request headers tokenproxy sets on this route; the app's
	// values are dropped.
	owned []string
	// subjects reads the customer an app names (authorization_code routes).
	subjects *Subjects
	// frequency is the access budget per consent and bank day; nil without.
	frequency *Frequency
	// inflight counts the requests being served on the route (Begin), so
	// that a route a reload replaced is retired only once they are done.
	inflight atomic.Int64
}

// Begin marks a request as served on the route until the returned func is
// called; InFlight counts those not ended yet.
func (r *Route) Begin() (end func()) {
	r.inflight.Add(1)
	return func() { r.inflight.Add(-1) }
}

// InFlight is the number of requests begun on the route and not ended.
func (r *Route) InFlight() int64 { return r.inflight.Load() }

// HeldCertificate is a certificate a route serves from a holder, named by
// what it is for ("client", "signing").
type HeldCertificate struct {
	Kind   string
	Holder *certs.Holder
}

// Certificates returns the route's held certificates, for expiry metrics and warnings.
func (r *Route) Certificates() []HeldCertificate { return r.held }

// Jobs returns what must run in the background while the route serves
// (certificate reloaders, Vault PKI renewal); each returns when ctx ends.
func (r *Route) Jobs() []func(context.Context) { return r.jobs }

// Ready reports whether the route holds what it needs to serve: its client
// certificate when it presents one.
func (r *Route) Ready() bool { return r.ClientCert == nil || r.ClientCert.Load() != nil }

// AddCertificate registers a held certificate and, if job is not nil, the
// job that keeps it current (a reloader, a renewal).
func (r *Route) AddCertificate(kind string, h *certs.Holder, job func(context.Context)) {
	r.held = append(r.held, HeldCertificate{Kind: kind, Holder: h})
	if job != nil {
		r.jobs = append(r.jobs, job)
	}
}

// AddJob adds background work that runs while the route serves.
func (r *Route) AddJob(job func(context.Context)) { r.jobs = append(r.jobs, job) }

// Own marks request headers as set by tokenproxy on this route: an app's
// values never reach the upstream.
func (r *Route) Own(headers ...string) { r.owned = append(r.owned, headers...) }

// SetAllow installs who may use the route; nil lets every app through.
func (r *Route) SetAllow(p *AllowPolicy) { r.allow = p }

// TokenKind is where a route's token comes from.
type TokenKind int

const (
	// TokenNone is a route that attaches no token.
	TokenNone TokenKind = iota
	// TokenBasicGet is one token for the route from Banking Circle's GET flow.
	TokenBasicGet
	// TokenClientCredentials is one token for the route from an OAuth2 client credentials grant.
	TokenClientCredentials
	// TokenPerCustomer is a token per customer (subject) from the consent the
	// customer gave (OAuth2 authorization code and refresh).
	TokenPerCustomer
)

// OAuth reports whether the token comes from an OAuth2 grant.
func (k TokenKind) OAuth() bool { return k == TokenClientCredentials || k == TokenPerCustomer }
