package route

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/callercert"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Options are what building needs beyond the configuration.
type Options struct {
	// Log is the logger; nop when nil.
	Log *zap.Logger
	// Limiters pace token requests per authorization host; a fresh set when nil.
	Limiters *tokencache.Limiters
	// Store, when set (store.kind: redis), shares tokens and budgets between replicas.
	Store *Store
	// Vault resolves vault: secret references; nil when none is configured.
	Vault secret.VaultReader
	// VaultClient provides certificates and keys kept in Vault; nil when none is configured.
	VaultClient *vaultsrc.Client
	// TokenObserver receives token cache events (metrics); may be nil.
	TokenObserver tokencache.Observer
	// Consents is the process's consent store (OpenConsents); Build opens
	// one, closed when the route jobs' context ends, when it is nil.
	Consents *Consents
	// OAuthObserver counts refreshes and invalid grants (metrics); may be nil.
	OAuthObserver ConsentObserver
	// OnReload is called once per certificate reload event: a new version
	// stored, a bad version refused (once per version) or the source becoming
	// unreachable (metrics); may be nil.
	OnReload func(route, what, result string)
	// InterceptObserver receives interception events (metrics); may be nil.
	InterceptObserver intercept.Observer

	// RootCAs, set in code (the demo, tests), is trusted for upstreams of
	// routes without tls.ca_file, instead of the system roots.
	RootCAs *x509.CertPool
	// Certificates, set in code (the demo, tests), are the certificate
	// sources that in_code blocks name.
	Certificates map[string]certs.Source

	// callers are the gateway callers' credentials, built by Build.
	callers callerSet
	// certCallers map client certificates to callers, built by Build.
	certCallers *callercert.Mapper
}

func (o *Options) fill() {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Limiters == nil {
		o.Limiters = &tokencache.Limiters{}
	}
}

// Build builds every route of cfg, and the callers they authorise. It loads
// certificates and checks secrets, so any credential problem is returned
// here, each a *problem.FieldError naming the configuration field.
func Build(ctx context.Context, cfg *config.Config, o Options) ([]*Route, error) {
	o.fill()
	o, closeConsents, err := openConsentsFor(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	var errs []error
	callers, err := buildCallers(ctx, cfg.Callers, o.Vault)
	if err != nil {
		errs = append(errs, err)
	}
	o.callers = callers
	if o.certCallers, err = buildCertCallers(cfg.Callers); err != nil {
		errs = append(errs, err)
	}
	var routes []*Route
	for i, rc := range cfg.Routes {
		r, err := BuildRoute(ctx, i, rc, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		routes = append(routes, r)
	}
	if err := errors.Join(errs...); err != nil {
		closeConsents(nil)
		return nil, err
	}
	closeConsents(routes)
	return routes, nil
}

// BuildRoute turns the validated configuration of routes[i] into a Route: it
// loads and checks the client certificate, resolves the token credentials
// once (so a missing secret fails at start-up) and sets up the transport.
func BuildRoute(ctx context.Context, i int, rc config.Route, o Options) (*Route, error) {
	o.fill()
	p := fmt.Sprintf("routes[%d](%s)", i, rc.Name)
	up, err := url.Parse(rc.Upstream)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".upstream", Err: err}
	}
	r := &Route{Name: rc.Name, Hosts: rc.Hosts, Upstream: up, Listen: rc.Listen, MaxBody: rc.MaxBodyBytes,
		allow: newAllowPolicy(rc.Name, rc.Allow, o.callers, o.certCallers), Intercept: rc.Intercept}
	tlsConf, err := TLSConfig(p, rc.TLS, o)
	if err != nil {
		return nil, err
	}
	if r.ClientCert, err = loadClientCert(ctx, p+".client_certificate", r, rc.ClientCert, o); err != nil {
		return nil, err
	}
	if r.ClientCert != nil {
		tlsConf.GetClientCertificate = r.ClientCert.GetClientCertificate
	}
	r.Transport = newTransport(tlsConf, rc)
	r.setSubjects(rc)
	if r.ClientCert != nil {
		// Connections made with the old certificate are dropped once idle, so
		// the pool moves to the new one; requests in flight finish on theirs.
		r.ClientCert.Subscribe(func(*tls.Certificate) { r.Transport.CloseIdleConnections() })
	}
	if sg := rc.Signing; sg != nil {
		if err := buildSigner(ctx, p+".signing", r, sg, o); err != nil {
			return nil, err
		}
	}
	if t := rc.Token; t != nil {
		if r.Tokens, err = buildTokens(ctx, p+".token", rc.Name, t, r.Transport, o); err != nil {
			return nil, err
		}
		// An app's own Authorization never reaches a token route's upstream.
		r.owned = append(r.owned, "Authorization")
	}
	return r, nil
}

// TLSConfig is the TLS configuration towards a route's upstream, without the
// client certificate: TLS 1.2 or later, the CAs of tls.ca_file (or of
// Options.RootCAs, or the system's), tls.server_name. p is the route's path
// in the configuration, for errors.
func TLSConfig(p string, tc config.TLS, o Options) (*tls.Config, error) {
	roots := o.RootCAs
	if tc.CAFile != "" {
		pemBytes, err := os.ReadFile(tc.CAFile)
		if err != nil {
			return nil, &problem.FieldError{Path: p + ".tls.ca_file", Err: err, Fix: "check the path and that tokenproxy may read it"}
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, &problem.FieldError{Path: p + ".tls.ca_file", Err: errors.New("no PEM certificate found in " + tc.CAFile), Fix: "give a PEM bundle of the CAs that issued the upstream's certificate"}
		}
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: tc.ServerName}, nil
}

// MaxResponseHeaderBytes bounds an upstream's response header block; a
// larger one fails the round trip (docs/limits.md).
const MaxResponseHeaderBytes = 64 << 10

func newTransport(tlsConf *tls.Config, rc config.Route) *http.Transport {
	dialer := &net.Dialer{Timeout: rc.Timeouts.Dial, KeepAlive: 30 * time.Second}
	handshakeTimeout := rc.Timeouts.Dial
	return &http.Transport{
		Proxy: nil, // never the environment's proxy
		// Both dials wrap the connection in upstreamConn, which reads the
		// decrypted response header blocks: TLS is made here, not by the
		// transport, for that. HTTP/2 stays off, as with any custom dial.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(c), nil
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conf := tlsConf
			if conf.ServerName == "" {
				conf = tlsConf.Clone()
				conf.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(c, conf)
			hctx, cancel := ctx, context.CancelFunc(func() {})
			if handshakeTimeout > 0 {
				hctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
			}
			err = tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
			}
			return newUpstreamConn(tc), nil
		},
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    rc.Timeouts.Dial,
		ResponseHeaderTimeout:  rc.Timeouts.Upstream,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    rc.MaxConnections,
		MaxConnsPerHost:        rc.MaxConnections,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true, // pass bodies through untouched
	}
}

// loadClientCert loads the route's client certificate and registers its
// reloader or renewal; nil when the route presents none.
func loadClientCert(ctx context.Context, p string, r *Route, cc config.ClientCertificate, o Options) (*certs.Holder, error) {
	if pki := cc.VaultPKI; pki != nil {
		holder, err := issuePKI(ctx, p+".vault_pki", r, pki, o)
		if err != nil {
			return nil, err
		}
		r.addCertificate("client", holder, nil)
		return holder, nil
	}
	src, cp := CertSource(cc, o)
	if src == nil {
		return nil, nil
	}
	holder := certs.NewHolder(nil)
	rl := &certs.Reloader{Name: "route " + r.Name + " client certificate", Holder: holder, Source: src,
		Interval: pollInterval(src, cc), Log: o.Log.With(zap.String("route", r.Name))}
	if o.OnReload != nil {
		rl.Report = func(res certs.Result) { o.OnReload(r.Name, "client_certificate", string(res)) }
	}
	if err := rl.Load(ctx); err != nil {
		return nil, CertError(p+cp, cc.Kind(), err)
	}
	r.addCertificate("client", holder, rl)
	return holder, nil
}

// issuePKI issues the route's first client certificate from Vault PKI (a
// failure is fatal at start-up) and schedules its renewals.
func issuePKI(ctx context.Context, p string, r *Route, cfg *config.VaultPKI, o Options) (*certs.Holder, error) {
	if o.VaultClient == nil {
		return nil, &problem.FieldError{Path: p, Err: secret.ErrNoVault}
	}
	holder := certs.NewHolder(nil)
	iss := o.VaultClient.PKIIssuer(pkiConfig(*cfg), holder)
	if _, err := iss.Issue(ctx); err != nil {
		return nil, &problem.FieldError{Path: p, Err: err, Fix: "check the PKI mount, the role and that the Vault policy allows pki/issue/<role>"}
	}
	r.jobs = append(r.jobs, iss.Run)
	return holder, nil
}
