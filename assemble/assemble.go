// Package assemble is tokenproxy's composition root: it turns a validated
// configuration into the running parts and owns every resource they hold.
// An Assembly opens, in this order, the Vault client, the consent store,
// the shared token store, the routes and the proxy listener, wires metrics
// into each, and releases them with one Close in the reverse order. `run`,
// `validate`, `check` and the demo all open an Assembly, so the wiring
// exists once; the runtime types it builds (route.Route, proxy.Server)
// know nothing of the configuration.
package assemble

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/admin"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/redisstore"
	"github.com/tokenproxy/tokenproxy/reload"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/status"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// Setup says what an Assembly is for, beyond the configuration.
type Setup struct {
	// Log is the process's logger; nop when nil.
	Log *zap.Logger
	// Metrics, when set, receives every part's events and exports the
	// dependencies' state (run, the demo); nil for validate and check.
	Metrics *metrics.Metrics
	// RootCAs, set in code (the demo, tests), is trusted for upstreams of
	// routes without tls.ca_file, instead of the system roots.
	RootCAs *x509.CertPool
	// Certificates, set in code (the demo, tests), are the certificate
	// sources that in_code blocks name.
	Certificates map[string]certs.Source
	// TokenObserver, when set, receives the token caches' events instead
	// of Metrics (the demo counts them itself).
	TokenObserver tokencache.Observer
	// Probe opens the stores to check them (validate, check): a bbolt
	// consent store held by a running tokenproxy is checked on a
	// read-only copy, and the shared store must answer and open its key
	// check value within ProbeTimeout (10 s when 0); its own lines about
	// serving while Redis is away are left out, the command reports.
	Probe        bool
	ProbeTimeout time.Duration
	// SkipGeneratedCA leaves out an interception CA that would be
	// generated (validate: making one writes its certificate, and there is
	// nothing to load).
	SkipGeneratedCA bool
	// Load, when set, reads the configuration again for Reload (run: the
	// file it started from, decoded and validated as at start-up).
	Load func() (*config.Config, error)
	// TracerProvider, when set, traces each proxied request (run sets it
	// from the OTEL_* environment); nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Assembly is one process's parts, built from one configuration.
type Assembly struct {
	Config *config.Config
	Log    *zap.Logger
	// Metrics is Setup.Metrics (nil without).
	Metrics *metrics.Metrics
	// Vault is the Vault client; nil when the configuration has no vault: block.
	Vault *vaultsrc.Client
	// Consents is the consent store; nil without a consents: block.
	Consents *Consents
	// Store is the shared token store; nil for the memory store.
	Store *Store
	// Routes are the built routes.
	Routes []*route.Route
	// Listener is what the forward-proxy listener serves beyond the routes.
	Listener *route.ProxyListener
	setup    Setup
	oauthM   *metrics.OAuth
	hookM    *metrics.Webhooks
	interM   intercept.Observer // made once: it registers collectors
	closers  []func() error     // in opening order; Close runs them backwards
	census   atomic.Pointer[status.Census]

	// Reloading (reload.go).
	limiters *tokencache.Limiters // one per process: a reload keeps the budgets
	reloadMu sync.Mutex           // one reload at a time
	reloads  reload.Status
	current  atomic.Pointer[config.Config]
	srv      *proxy.Server
	prints   map[string]string // the served routes' routePrint
}

// New returns an Assembly of cfg that holds nothing yet. Open opens every
// part; the steps are there for `check`, which reports each on its own.
// Close releases whatever was opened.
func New(cfg *config.Config, s Setup) *Assembly {
	if s.Log == nil {
		s.Log = zap.NewNop()
	}
	a := &Assembly{Config: cfg, Log: s.Log, Metrics: s.Metrics, setup: s, limiters: &tokencache.Limiters{}}
	if s.Metrics != nil {
		a.interM = intercept.NewPrometheusObserver(s.Metrics.Registry())
	}
	return a
}

// Open builds every part of cfg: Vault, the consent store, the shared
// store, the routes and the proxy listener. On an error it has already
// released what it opened; each error names the configuration field.
func Open(ctx context.Context, cfg *config.Config, s Setup) (*Assembly, error) {
	a := New(cfg, s)
	for _, step := range []func(context.Context) error{a.OpenVault, a.OpenConsents, a.OpenStore, a.BuildRoutes, a.BuildListener} {
		if err := step(ctx); err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	return a, nil
}

// Steps of Open, named in a StepError.
const (
	StepVault    = "vault"
	StepConsents = "consents"
	StepStore    = "store"
	StepRoutes   = "routes"
	StepListener = "listener"
)

// StepError is a part Open could not open, naming the step.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Close releases everything the Assembly opened, in the reverse order:
// the shared store, the consent store, then the Vault client. The routes'
// and listener's background jobs end with the context Serve runs under.
func (a *Assembly) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// OpenVault logs in to Vault when the configuration has a vault: block.
func (a *Assembly) OpenVault(ctx context.Context) error {
	if a.Config.Vault == nil {
		return nil
	}
	vc, err := vaultsrc.New(ctx, VaultConfig(*a.Config.Vault), vaultsrc.WithLogger(a.Log))
	if err != nil {
		return &StepError{Step: StepVault, Err: fmt.Errorf("vault: %w", err)}
	}
	a.Vault = vc
	a.closers = append(a.closers, vc.Close)
	if m := a.Metrics; m != nil {
		m.WatchDependency("vault", func() bool { return vc.Health().OK })
	}
	return nil
}

// OpenConsents opens the consent store of the consents: block, if any.
func (a *Assembly) OpenConsents(ctx context.Context) error {
	open := OpenConsents
	if a.setup.Probe {
		open = OpenConsentsForCheck
	}
	c, err := open(ctx, a.Config, a.Options())
	if err != nil {
		return &StepError{Step: StepConsents, Err: fmt.Errorf("the consent store is not usable:\n%w", err)}
	}
	if c == nil {
		return nil
	}
	a.Consents = c
	a.closers = append(a.closers, c.Close)
	if a.Metrics != nil {
		a.oauthM = a.Metrics.OAuth()
		if c.Events != nil {
			a.hookM = a.Metrics.Webhooks()
			c.Events.Observer = a.hookM
		}
	}
	return nil
}

// UseProbeConsents gives authorization_code routes a consent store that
// holds nothing and refuses writes (ProbeConsents), for `check`: a running
// tokenproxy may hold the real one.
func (a *Assembly) UseProbeConsents() {
	if a.Config.Consents != nil {
		a.Consents = ProbeConsents()
	}
}

// OpenStore connects the shared token store (store.kind: redis). An
// unreachable Redis is not an error: the store starts degraded and
// reconnects; a wrong key or refused credentials are.
func (a *Assembly) OpenStore(ctx context.Context) error {
	if a.Config.Store.Kind != config.StoreRedis {
		return nil
	}
	redisstore.UseLogger(a.Log) // go-redis's own messages as JSON debug lines, not raw stderr
	so := StoreOptions{Log: a.Log, Vault: a.Vault}
	if a.setup.Probe {
		timeout := a.setup.ProbeTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		so.Log = a.Log.WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
	}
	if m := a.Metrics; m != nil {
		up := new(atomic.Bool)
		m.WatchDependency("redis", up.Load)
		so.OnDependency = up.Store
		so.Observer = metrics.NewStore(m)
	}
	st, err := OpenStore(ctx, a.Config.Store, so)
	if err == nil && a.setup.Probe {
		if err = st.Check(ctx); err != nil {
			_ = st.Close()
		}
	}
	if err != nil {
		return &StepError{Step: StepStore, Err: fmt.Errorf("the shared store is not usable:\n%w", err)}
	}
	a.Store = st
	a.closers = append(a.closers, func() error { return a.Store.Close() })
	if err := st.Healthy(); err != nil && !a.setup.Probe {
		a.Log.Warn("starting without the shared store; cached tokens and the local budget serve until Redis is back", zap.Error(err))
	}
	return nil
}

// BuildRoutes builds every route, loading its credentials.
func (a *Assembly) BuildRoutes(ctx context.Context) error {
	routes, err := Build(ctx, a.Config, a.Options())
	if err != nil {
		return &StepError{Step: StepRoutes, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
	}
	a.Routes, a.prints = routes, routePrints(a.Config)
	return nil
}

// BuildListener builds the interception CA and the proxy listener's TLS.
func (a *Assembly) BuildListener(ctx context.Context) error {
	cfg := a.Config
	if ic := cfg.Interception; a.setup.SkipGeneratedCA && ic != nil && ic.CA.Generate != nil {
		c := *cfg
		c.Interception = nil
		cfg = &c
	}
	l, err := BuildProxyListener(ctx, cfg, a.Options())
	if err != nil {
		return &StepError{Step: StepListener, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
	}
	a.Listener = l
	return nil
}

// Options are the building options of the parts opened so far, with the
// metrics wired in: what Build, BuildRoute and the diagnostics take.
func (a *Assembly) Options() Options {
	o := Options{Log: a.Log, Vault: a.Vault, Store: a.Store, Consents: a.Consents,
		RootCAs: a.setup.RootCAs, Certificates: a.setup.Certificates, Limiters: a.limiters}
	if m := a.Metrics; m != nil {
		o.TokenObserver, o.OnReload = m, m.Reload
		o.InterceptObserver = a.interM
		o.AccessObserver = m
		if a.oauthM != nil {
			o.OAuthObserver = a.oauthM
		}
	}
	if a.setup.TokenObserver != nil {
		o.TokenObserver = a.setup.TokenObserver
	}
	return o
}

// Server returns the proxy server of the built parts: the listeners of
// the configuration, the consent API and its census, the admin endpoint
// with readiness and metrics, and the certificates' expiry gauges. po
// may set Log and Observer; the rest comes from the configuration.
func (a *Assembly) Server() (*proxy.Server, error) {
	cfg := a.Config
	po := proxy.Options{Log: a.Log, ProxyAddr: cfg.Listen.Proxy, AdminAddr: cfg.Listen.Admin,
		ShutdownGrace: cfg.ShutdownGrace, ExpiryWarning: cfg.CertificateExpiryWarning,
		Gateway: cfg.Listen.AllowNonLoopback, ProxyListener: a.Listener, TracerProvider: a.setup.TracerProvider}
	LogProxyListener(a.Log, a.Listener)
	if err := a.consentAPI(&po); err != nil {
		return nil, err
	}
	po.Degraded = a.degraded
	m := a.Metrics
	if m != nil {
		po.Observer = m
		po.Admin = func(s *proxy.Server) http.Handler { return admin.Handler(s, m.Handler(), a.statusPages(s)...) }
	} else {
		po.Admin = func(s *proxy.Server) http.Handler {
			return admin.Handler(s, http.NotFoundHandler(), a.statusPages(s)...)
		}
	}
	if err := a.reloadEndpoint(&po); err != nil {
		return nil, err
	}
	srv := proxy.New(a.Routes, po)
	a.srv = srv
	if m != nil {
		for _, r := range a.Routes {
			for _, hc := range r.Certificates() {
				m.WatchCertificate(r.Name, hc.Kind, hc.Holder.Load)
			}
		}
		if a.Listener != nil && a.Listener.ServerCert != nil {
			m.WatchCertificate("", "proxy_tls", a.Listener.ServerCert.Load)
		}
	}
	return srv, nil
}

// degraded reports a dependency that is down while the server still serves
// on what it holds (Vault, Redis): /readyz says so.
func (a *Assembly) degraded() error {
	var errs []error
	if a.Vault != nil {
		errs = append(errs, a.Vault.Health().Err())
	}
	if a.Store != nil {
		errs = append(errs, a.Store.Healthy())
	}
	return errors.Join(errs...)
}

// consentAPI adds the consent API's listener and the census of the store
// (the consent gauges) to po.
func (a *Assembly) consentAPI(po *proxy.Options) error {
	c := a.Consents
	if c == nil || a.Config.Consents == nil {
		return nil
	}
	api := c.APIConfig()
	api.Log = a.Log.Named("consents")
	h, err := ConsentHandler(a.Routes, api)
	if err != nil {
		return fmt.Errorf("consents: %w", err)
	}
	po.ConsentAddr, po.Consents = a.Config.Consents.Listen, h
	var names []string
	for _, s := range c.Sources() {
		names = append(names, s.Route())
	}
	log, om := a.Log, a.oauthM
	if job := c.rekeyJob(log.Named("consents")); job != nil {
		po.Jobs = append(po.Jobs, job)
	}
	po.Jobs = append(po.Jobs, keepAliveJobs(a.Routes, c.Sources(), log.Named("consents"), om)...)
	var hobs webhook.Observer
	if a.hookM != nil {
		hobs = a.hookM
	}
	jobs, err := c.webhookJobs(log.Named("webhooks"), hobs)
	if err != nil {
		return err
	}
	po.Jobs = append(po.Jobs, jobs...)
	po.Jobs = append(po.Jobs, func(ctx context.Context) {
		c.Census(ctx, func(cs *oauth.Census, err error) {
			if err != nil {
				log.Warn("consent census failed", zap.Error(err))
			}
			if om != nil {
				om.Census(names, cs, err)
			}
			a.keepCensus(names, cs, err)
		})
	})
	return nil
}
