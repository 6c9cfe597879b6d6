// Package route turns the configuration into built routes: for each upstream
// API it loads the CA pool and builds the TLS configuration and transport,
// picks and loads the certificate source, wires the token cache and its
// source, the signer and caller authorisation, and collects the background
// jobs (certificate reloads, Vault PKI renewal). The proxy serves the Routes
// built here, and `tokenproxy check` probes through them, so a diagnosis and
// a real request prepare and send requests the same way.
package route

import (
	"context"
	"net/http"
	"net/url"

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
	// Signer is nil on routes that are not signed.
	Signer Signer

	MaxBody int64

	held []HeldCertificate
	// jobs run alongside the server: certificate reloaders, Vault PKI renewal.
	jobs  []func(context.Context)
	allow *allowPolicy
	// owned are request headers tokenproxy sets on this route; the app's
	// values are dropped.
	owned []string
	// subjects reads the customer an app names (authorization_code routes).
	subjects *subjectPolicy
}

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

// addCertificate registers a held certificate and, if rl is not nil, its reloader.
func (r *Route) addCertificate(kind string, h *certs.Holder, rl *certs.Reloader) {
	r.held = append(r.held, HeldCertificate{Kind: kind, Holder: h})
	if rl != nil {
		r.jobs = append(r.jobs, rl.Run)
	}
}
