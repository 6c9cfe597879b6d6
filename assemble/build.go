package assemble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/callercert"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Options are what building needs beyond the configuration. Building
// reads them and never changes them.
type Options struct {
	// Log is the logger; nop when nil.
	Log *zap.Logger
	// Limiters pace token requests per authorization host; a fresh set when nil.
	Limiters *tokencache.Limiters
	// Store, when set (store.kind: redis), shares tokens and budgets between replicas.
	Store *Store
	// Vault resolves vault: secret references and provides certificates and
	// keys kept in Vault; nil when none is configured.
	Vault *vaultsrc.Client
	// TokenObserver receives token cache events (metrics); may be nil.
	TokenObserver tokencache.Observer
	// Consents is the process's consent store (OpenConsents); routes with
	// token.type authorization_code need it.
	Consents *Consents
	// OAuthObserver counts refreshes and invalid grants (metrics); may be nil.
	OAuthObserver ConsentObserver
	// OnReload is called once per certificate reload event: a new version
	// stored, a bad version refused (once per version) or the source becoming
	// unreachable (metrics); may be nil.
	OnReload func(route, what, result string)
	// InterceptObserver receives interception events (metrics); may be nil.
	InterceptObserver intercept.Observer
	// AccessObserver counts the access budgets' decisions (metrics); may be nil.
	AccessObserver route.AccessObserver

	// RootCAs, set in code (the demo, tests), is trusted for upstreams of
	// routes without tls.ca_file, instead of the system roots.
	RootCAs *x509.CertPool
	// Certificates, set in code (the demo, tests), are the certificate
	// sources that in_code blocks name.
	Certificates map[string]certs.Source

	// addJob adds background work to the route being built.
	addJob func(func(context.Context))
}

func (o Options) filled() Options {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Limiters == nil {
		o.Limiters = &tokencache.Limiters{}
	}
	return o
}

// vault is the Vault client as a secret.VaultReader: nil, not a typed nil, without Vault.
func (o Options) vault() secret.VaultReader {
	if o.Vault == nil {
		return nil
	}
	return o.Vault
}

// builder is one Build's state: the options and the gateway callers
// resolved from the configuration.
type builder struct {
	Options
	callers     route.Callers
	certCallers *callercert.Mapper
}

// Build builds every route of cfg, and the callers they authorise. It loads
// certificates and checks secrets, so any credential problem is returned
// here, each a *problem.FieldError naming the configuration field.
func Build(ctx context.Context, cfg *config.Config, o Options) ([]*route.Route, error) {
	return build(ctx, cfg, o, nil)
}

// build is Build taking from reuse (when not nil) the routes it returns
// instead of building them: a reload keeps the routes that did not change.
func build(ctx context.Context, cfg *config.Config, o Options, reuse func(config.Route) *route.Route) ([]*route.Route, error) {
	b := &builder{Options: o.filled()}
	var errs []error
	callers, err := buildCallers(ctx, cfg.Callers, b.vault())
	if err != nil {
		errs = append(errs, err)
	}
	b.callers = callers
	if b.certCallers, err = buildCertCallers(cfg.Callers); err != nil {
		errs = append(errs, err)
	}
	var routes []*route.Route
	for i, rc := range cfg.Routes {
		if reuse != nil {
			if r := reuse(rc); r != nil {
				routes = append(routes, r)
				continue
			}
		}
		r, err := b.route(ctx, i, rc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		routes = append(routes, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return routes, nil
}

// BuildRoute turns the validated configuration of routes[i] into a Route
// that authorises no gateway caller by password or certificate (Build
// resolves those for every route): `tokenproxy check` builds one route at a
// time with it.
func BuildRoute(ctx context.Context, i int, rc config.Route, o Options) (*route.Route, error) {
	return (&builder{Options: o.filled(), callers: route.Callers{}}).route(ctx, i, rc)
}

// route turns the validated configuration of routes[i] into a Route: it
// loads and checks the client certificate, resolves the token credentials
// once (so a missing secret fails at start-up) and sets up the transport.
func (b *builder) route(ctx context.Context, i int, rc config.Route) (*route.Route, error) {
	o := b.Options
	p := fmt.Sprintf("routes[%d](%s)", i, rc.Name)
	up, err := url.Parse(rc.Upstream)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".upstream", Err: err}
	}
	r := &route.Route{Name: rc.Name, Hosts: rc.Hosts, Upstream: up, Listen: rc.Listen, MaxBody: rc.MaxBodyBytes, Intercept: rc.Intercept,
		TracePropagation: rc.TracePropagation}
	if !rc.TracePropagation {
		r.Own("Traceparent", "Tracestate")
	}
	if a := rc.Allow; a != nil {
		r.SetAllow(route.NewAllowPolicy(rc.Name, allowPrefixes(a.CIDRs), a.Callers, b.callers, b.certCallers))
	}
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
	r.Transport = newTransport(tlsConf, rc, certGeneration(r.ClientCert, rc.Token))
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
		o.addJob = r.AddJob // the metadata's refresh (token.discovery)
		bind, err := buildBinding(ctx, p+".token", r, t, o)
		if err != nil {
			return nil, err
		}
		if r.Tokens, err = buildTokens(ctx, p+".token", rc.Name, t, r.Transport, bind, o); err != nil {
			return nil, err
		}
		bind.attach(r, r.Tokens)
		r.TokenKind = tokenKind(t)
		// An app's own Authorization never reaches a token route's upstream.
		r.Own("Authorization")
		setSubjects(r, rc)
	}
	if f := rc.FrequencyPerDay; f != nil {
		if err := setFrequency(p+".frequency_per_day", r, f, o); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// allowPrefixes parses allow.cidrs (validated by config): prefixes, and
// single addresses as one-address prefixes.
func allowPrefixes(cidrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		if pf, err := netip.ParsePrefix(c); err == nil {
			out = append(out, pf.Masked())
		} else if ad, err := netip.ParseAddr(c); err == nil {
			out = append(out, netip.PrefixFrom(ad.Unmap(), ad.Unmap().BitLen()))
		}
	}
	return out
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

func newTransport(tlsConf *tls.Config, rc config.Route, gen func() uint64) *http.Transport {
	return route.NewTransport(tlsConf, route.TransportLimits{Dial: rc.Timeouts.Dial, Upstream: rc.Timeouts.Upstream, MaxConnections: rc.MaxConnections,
		CertGeneration: gen})
}

// loadClientCert loads the route's client certificate and registers its
// reloader or renewal; nil when the route presents none.
func loadClientCert(ctx context.Context, p string, r *route.Route, cc config.ClientCertificate, o Options) (*certs.Holder, error) {
	if pki := cc.VaultPKI; pki != nil {
		holder, err := issuePKI(ctx, p+".vault_pki", r, pki, o)
		if err != nil {
			return nil, err
		}
		r.AddCertificate("client", holder, nil)
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
	r.AddCertificate("client", holder, rl.Run)
	return holder, nil
}

// issuePKI issues the route's first client certificate from Vault PKI (a
// failure is fatal at start-up) and schedules its renewals.
func issuePKI(ctx context.Context, p string, r *route.Route, cfg *config.VaultPKI, o Options) (*certs.Holder, error) {
	if o.Vault == nil {
		return nil, &problem.FieldError{Path: p, Err: secret.ErrNoVault}
	}
	holder := certs.NewHolder(nil)
	iss := o.Vault.PKIIssuer(pkiConfig(*cfg), holder)
	if _, err := iss.Issue(ctx); err != nil {
		return nil, &problem.FieldError{Path: p, Err: err, Fix: "check the PKI mount, the role and that the Vault policy allows pki/issue/<role>"}
	}
	r.AddJob(iss.Run)
	return holder, nil
}
