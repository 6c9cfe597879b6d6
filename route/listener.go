package route

import (
	"context"
	"crypto/tls"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/intercept"
)

// ProxyListener is what the forward-proxy listener needs beyond the routes: the
// interception CA that terminates CONNECT tunnels to intercepting routes,
// and the listener's own TLS (an HTTPS proxy). Both are optional.
type ProxyListener struct {
	// Interceptor issues the certificates apps see inside tunnels; nil
	// when no route has intercept: true.
	Interceptor *intercept.Interceptor
	// ListenerTLS is the proxy listener's server configuration; nil for
	// a plain-HTTP listener.
	ListenerTLS *tls.Config
	// ServerCert holds the listener's certificate (reloaded); nil without ListenerTLS.
	ServerCert *certs.Holder

	hosts    map[string]bool
	jobs     []func(context.Context)
	observer intercept.Observer
}

// NewProxyListener returns a proxy listener that intercepts no host yet and
// reports refusals to observer (nil for none).
func NewProxyListener(observer intercept.Observer) *ProxyListener {
	return &ProxyListener{hosts: map[string]bool{}, observer: observer}
}

// AddHost marks a normalised host (see intercept.NormalizeHost) as
// intercepted; it reports false when the host was already added.
func (g *ProxyListener) AddHost(host string) bool {
	if g.hosts[host] {
		return false
	}
	g.hosts[host] = true
	return true
}

// Hosts is the number of intercepted hosts.
func (g *ProxyListener) Hosts() int { return len(g.hosts) }

// AddJob adds background work (a CA's reload, a certificate's reloader).
func (g *ProxyListener) AddJob(job func(context.Context)) { g.jobs = append(g.jobs, job) }

// ReasonCallerRefused counts a CONNECT refused because its caller did not
// authenticate or may not use the route.
const ReasonCallerRefused intercept.Reason = "caller_refused"

// Refused counts a CONNECT the proxy refused before any certificate was
// involved (the caller's authorisation).
func (g *ProxyListener) Refused(host string, reason intercept.Reason) {
	if g != nil && g.observer != nil {
		g.observer.Refused(host, reason)
	}
}

// Intercepts reports whether host (normalised, without port) belongs to an
// intercepting route: the only hosts a leaf certificate is ever issued for.
func (g *ProxyListener) Intercepts(host string) bool { return g != nil && g.hosts[host] }

// Jobs returns the background work: the CA's reload or Vault polling and
// the listener certificate's reloader.
func (g *ProxyListener) Jobs() []func(context.Context) {
	if g == nil {
		return nil
	}
	return g.jobs
}
