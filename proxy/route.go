package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/signer"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Signer adds signing headers to an outgoing request whose body is body.
type Signer interface {
	Sign(req *http.Request, body []byte) error
}

// Route is one upstream API as the pipeline uses it.
type Route struct {
	Name     string
	Hosts    []string
	Upstream *url.URL
	// Listen is the route's own local address, if any.
	Listen string

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

	reloaders []*certs.Reloader
	// background runs alongside the server (e.g. Vault PKI renewal).
	background []func(context.Context)
	held       []HeldCertificate
	allow      *allowPolicy
	// owned are request headers tokenproxy sets on this route; the app's
	// values are dropped.
	owned []string
}

// HeldCertificate is a certificate a route serves from a holder, named by
// what it is for ("client", "signing").
type HeldCertificate struct {
	Kind   string
	Holder *certs.Holder
}

// Certificates returns the route's held certificates, for expiry metrics and warnings.
func (r *Route) Certificates() []HeldCertificate { return r.held }

// AddCertificate registers another held certificate (a signing certificate)
// and, if rl is not nil, its reloader.
func (r *Route) AddCertificate(kind string, h *certs.Holder, rl *certs.Reloader) {
	r.held = append(r.held, HeldCertificate{Kind: kind, Holder: h})
	if rl != nil {
		r.reloaders = append(r.reloaders, rl)
	}
}

// Reloaders returns the route's certificate reloaders, to be run.
func (r *Route) Reloaders() []*certs.Reloader { return r.reloaders }

// BuildOptions are what BuildRoute needs beyond the configuration.
type BuildOptions struct {
	Log      *zap.Logger
	Limiters *tokencache.Limiters
	// Vault resolves vault: secret references; nil when none is configured.
	Vault secret.VaultReader
	// VaultClient provides certificates and keys kept in Vault; nil when none is configured.
	VaultClient *vaultsrc.Client
	// TokenObserver receives token cache events (metrics); may be nil.
	TokenObserver tokencache.Observer
	// Callers are the gateway callers' credentials, built by New.
	callers callerSet
	// OnReload is called after each certificate reload attempt (metrics); may be nil.
	OnReload func(route, what string, ok bool)
}

// BuildError is a configuration or credential problem found while building
// a route. Path names the field, as config.FieldError does.
type BuildError struct {
	Path string
	Err  error
	Fix  string
}

func (e *BuildError) Error() string {
	s := e.Path + ": " + e.Err.Error()
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

func (e *BuildError) Unwrap() error { return e.Err }

// BuildRoute turns a validated route configuration into a Route: it loads
// and checks the client certificate, resolves the token credentials once
// (so a missing secret fails at start-up) and sets up the transport.
func BuildRoute(ctx context.Context, i int, rc config.Route, o BuildOptions) (*Route, error) {
	p := fmt.Sprintf("routes[%d](%s)", i, rc.Name)
	log := o.Log.With(zap.String("route", rc.Name))
	up, err := url.Parse(rc.Upstream)
	if err != nil {
		return nil, &BuildError{Path: p + ".upstream", Err: err}
	}
	r := &Route{Name: rc.Name, Hosts: rc.Hosts, Upstream: up, Listen: rc.Listen, MaxBody: rc.MaxBodyBytes,
		allow: newAllowPolicy(rc.Name, rc.Allow, o.callers)}

	roots := rc.TLS.RootCAs
	if roots == nil && rc.TLS.CAFile != "" {
		pemBytes, err := os.ReadFile(rc.TLS.CAFile)
		if err != nil {
			return nil, &BuildError{Path: p + ".tls.ca_file", Err: err, Fix: "check the path and that tokenproxy may read it"}
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, &BuildError{Path: p + ".tls.ca_file", Err: errors.New("no PEM certificate found in " + rc.TLS.CAFile), Fix: "give a PEM bundle of the CAs that issued the upstream's certificate"}
		}
	}

	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: rc.TLS.ServerName}
	if pki := rc.ClientCert.VaultPKI; pki != nil {
		holder, err := issuePKI(ctx, p+".client_certificate.vault_pki", r, pki, o)
		if err != nil {
			return nil, err
		}
		r.ClientCert = holder
		r.AddCertificate("client", holder, nil)
		tlsConf.GetClientCertificate = holder.GetClientCertificate
	} else if src, cp := certSource(rc.ClientCert, o); src != nil {
		holder := certs.NewHolder(nil)
		rl := &certs.Reloader{Name: "route " + rc.Name + " client certificate", Holder: holder, Source: src,
			Interval: pollInterval(src, rc.ClientCert), Log: log}
		if o.OnReload != nil {
			rl.OnResult = func(ok bool) { o.OnReload(rc.Name, "client_certificate", ok) }
		}
		if err := rl.Load(ctx); err != nil {
			return nil, certError(p+".client_certificate"+cp, err)
		}
		r.ClientCert = holder
		r.AddCertificate("client", holder, rl)
		tlsConf.GetClientCertificate = holder.GetClientCertificate
	}

	dialer := &net.Dialer{Timeout: rc.Timeouts.Dial, KeepAlive: 30 * time.Second}
	r.Transport = &http.Transport{
		Proxy:                 nil, // never the environment's proxy
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   rc.Timeouts.Dial,
		ResponseHeaderTimeout: rc.Timeouts.Upstream,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   rc.MaxConnections,
		MaxConnsPerHost:       rc.MaxConnections,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // pass bodies through untouched
	}
	if r.ClientCert != nil {
		// Connections made with the old certificate are dropped once idle, so
		// the pool moves to the new one; requests in flight finish on theirs.
		r.ClientCert.Subscribe(func(*tls.Certificate) { r.Transport.CloseIdleConnections() })
	}

	if sg := rc.Signing; sg != nil {
		if err := buildSigner(ctx, p+".signing", r, sg, o, log); err != nil {
			return nil, err
		}
	}

	if t := rc.Token; t != nil {
		cache, err := buildTokens(ctx, p+".token", rc.Name, t, r.Transport, o)
		if err != nil {
			return nil, err
		}
		r.Tokens = cache
	}
	return r, nil
}

// certSource returns the client certificate's source and the config path
// suffix naming it, or nil when the route presents no certificate.
func certSource(cc config.ClientCertificate, o BuildOptions) (certs.Source, string) {
	switch {
	case cc.Source != nil:
		return cc.Source, ""
	case cc.VaultKV != nil:
		if o.VaultClient == nil {
			return &failingSource{err: secret.ErrNoVault}, ".vault_kv"
		}
		return o.VaultClient.KVCertSource(*cc.VaultKV), ".vault_kv"
	case cc.VaultTransit != nil:
		if o.VaultClient == nil {
			return &failingSource{err: secret.ErrNoVault}, ".vault_transit"
		}
		return o.VaultClient.TransitCertSource(*cc.VaultTransit), ".vault_transit"
	case cc.PKCS12 != nil:
		pass, err := cc.PKCS12.Passcode.Open(o.Vault)
		if err != nil {
			return &failingSource{err: err}, ".pkcs12.passcode"
		}
		return &certs.FileSource{PKCS12File: cc.PKCS12.File, Passcode: pass}, ".pkcs12"
	case cc.PEM != nil:
		return &certs.FileSource{CertFile: cc.PEM.CertFile, KeyFile: cc.PEM.KeyFile}, ".pem"
	}
	return nil, ""
}

type failingSource struct{ err error }

func (f *failingSource) Fetch(context.Context, string) (*tls.Certificate, string, error) {
	return nil, "", f.err
}
func (f *failingSource) String() string { return "unavailable" }

// certError names the field and the fix for each way loading can fail.
func certError(path string, err error) error {
	var exp *certs.ExpiredError
	var nyv *certs.NotYetValidError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &BuildError{Path: path, Err: err, Fix: "the file does not exist; check the path"}
	case errors.Is(err, fs.ErrPermission):
		return &BuildError{Path: path, Err: err, Fix: "tokenproxy may not read the file; check its owner and mode"}
	case errors.Is(err, certs.ErrWrongPasscode):
		return &BuildError{Path: path + ".passcode", Err: certs.ErrWrongPasscode, Fix: "set the passcode the provider gave with the .pfx file"}
	case errors.Is(err, certs.ErrKeyMismatch):
		return &BuildError{Path: path, Err: certs.ErrKeyMismatch, Fix: "pair the certificate with the private key it was issued for"}
	case errors.As(err, &exp):
		return &BuildError{Path: path, Err: exp}
	case errors.As(err, &nyv):
		return &BuildError{Path: path, Err: nyv}
	case errors.Is(err, secret.ErrNoVault):
		return &BuildError{Path: path, Err: err}
	default:
		return &BuildError{Path: path, Err: err, Fix: "check that the file is a PKCS#12 (.pfx/.p12) or PEM certificate with its key"}
	}
}

func buildTokens(ctx context.Context, p, route string, t *config.Token, tr *http.Transport, o BuildOptions) (*tokencache.Cache, error) {
	user, err := t.Username.Open(o.Vault)
	if err != nil {
		return nil, &BuildError{Path: p + ".username", Err: err}
	}
	pass, err := t.Password.Open(o.Vault)
	if err != nil {
		return nil, &BuildError{Path: p + ".password", Err: err}
	}
	for _, s := range []struct {
		path string
		src  secret.Source
	}{{p + ".username", user}, {p + ".password", pass}} {
		if _, err := s.src.Get(ctx); err != nil {
			return nil, &BuildError{Path: s.path, Err: err, Fix: "make the secret available (" + s.src.String() + ")"}
		}
	}
	u, _ := url.Parse(t.URL)
	lim := o.Limiters.For(u.Host, tokencache.Budget{PerMinute: t.RateLimit.RequestsPerMinute, Burst: t.RateLimit.Burst})
	src := &tokencache.BasicGet{
		URL: t.URL, Username: user, Password: pass, DefaultTTL: t.DefaultTTL,
		Client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	return tokencache.New(src, lim, tokencache.Options{
		Route: route, Skew: t.Skew, MaxWait: t.MaxWait, FetchTimeout: t.FetchTimeout,
		Log: o.Log, Observer: o.TokenObserver,
	})
}

// buildSigner loads the signing key (apart from the TLS client certificate),
// validates the signing options against it and installs the signer.
func buildSigner(ctx context.Context, p string, r *Route, sg *config.Signing, o BuildOptions, log *zap.Logger) error {
	if sg.Key.VaultPKI != nil {
		return &BuildError{Path: p + ".key.vault_pki", Err: errors.New("a signing key cannot come from Vault PKI"), Fix: "use vault_transit (the key never leaves Vault) or vault_kv"}
	}
	src, cp := certSource(sg.Key, o)
	holder := certs.NewHolder(nil)
	opts := sg.Options
	validate := func(c *tls.Certificate) error { return opts.Validate(c, time.Now()) }
	rl := &certs.Reloader{Name: "route " + r.Name + " signing key", Holder: holder, Source: src,
		Interval: pollInterval(src, sg.Key), Log: log, Validate: validate}
	if o.OnReload != nil {
		rl.OnResult = func(ok bool) { o.OnReload(r.Name, "signing_key", ok) }
	}
	if err := rl.Load(ctx); err != nil {
		var ve *signer.ValidationError
		if errors.As(err, &ve) {
			return &BuildError{Path: p + "." + ve.Field, Err: errors.New(ve.Msg)}
		}
		return certError(p+".key"+cp, err)
	}
	sgn, err := signer.New(opts, holder)
	if err != nil {
		return &BuildError{Path: p, Err: err}
	}
	r.Signer = sgn
	r.AddCertificate("signing", holder, rl)
	r.owned = append(r.owned, "Digest", "Content-Digest", "Signature", "Signature-Input")
	if h := opts.CertificateHeader; h != "" && h != "none" {
		r.owned = append(r.owned, h)
	} else if h == "" && opts.Profile == "berlin-group" {
		r.owned = append(r.owned, "TPP-Signature-Certificate")
	}
	return nil
}

// Background returns the route's background jobs (Vault PKI renewal), to be run.
func (r *Route) Background() []func(context.Context) { return r.background }

// pollInterval is how often a certificate source is checked: the source's
// own interval when it has one (the Vault sources apply their poll_interval
// and its default), else the block's reload_interval.
func pollInterval(src certs.Source, cc config.ClientCertificate) time.Duration {
	if p, ok := src.(interface{ PollInterval() time.Duration }); ok {
		return p.PollInterval()
	}
	return cc.ReloadInterval
}

// issuePKI issues the route's first client certificate from Vault PKI (a
// failure is fatal at start-up) and schedules its renewals.
func issuePKI(ctx context.Context, p string, r *Route, cfg *vaultsrc.PKIConfig, o BuildOptions) (*certs.Holder, error) {
	if o.VaultClient == nil {
		return nil, &BuildError{Path: p, Err: secret.ErrNoVault}
	}
	holder := certs.NewHolder(nil)
	iss := o.VaultClient.PKIIssuer(*cfg, holder)
	if _, err := iss.Issue(ctx); err != nil {
		return nil, &BuildError{Path: p, Err: err, Fix: "check the PKI mount, the role and that the Vault policy allows pki/issue/<role>"}
	}
	r.background = append(r.background, iss.Run)
	return holder, nil
}
