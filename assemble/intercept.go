package assemble

import (
	"context"
	"crypto/x509"
	"fmt"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/callercert"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
)

// BuildProxyListener builds the interception CA (when a route intercepts) and the
// proxy listener's TLS (when listen.proxy_tls is set). Errors are
// *problem.FieldErrors naming the field.
func BuildProxyListener(ctx context.Context, cfg *config.Config, o Options) (*route.ProxyListener, error) {
	o = o.filled()
	g := route.NewProxyListener(o.InterceptObserver)
	var hosts []string
	for _, r := range cfg.Routes {
		if !r.Intercept {
			continue
		}
		for _, h := range r.Hosts {
			if n, err := intercept.NormalizeHost(h); err == nil && g.AddHost(n) {
				hosts = append(hosts, n)
			}
		}
	}
	if ic := cfg.Interception; ic != nil && len(hosts) > 0 {
		deps := intercept.Deps{Hosts: hosts, Log: o.Log.Named("intercept"), Observer: o.InterceptObserver}
		if o.Vault != nil {
			deps.Vault = o.Vault.Logical()
		}
		in, err := intercept.Build(ctx, interceptConfig(*ic), deps)
		if err != nil {
			return nil, &problem.FieldError{Path: "interception.ca", Err: err}
		}
		g.Interceptor = in
		g.AddJob(in.Run)
	}
	if pt := cfg.Listen.ProxyTLS; pt != nil {
		if err := listenerTLS(ctx, g, pt, o); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func listenerTLS(ctx context.Context, g *route.ProxyListener, pt *config.ProxyTLS, o Options) error {
	holder := certs.NewHolder(nil)
	rl := &certs.Reloader{Name: "proxy listener certificate", Holder: holder,
		Source:   &certs.FileSource{CertFile: pt.CertFile, KeyFile: pt.KeyFile},
		Interval: pt.ReloadInterval, Log: o.Log.Named("proxy_tls")}
	if o.OnReload != nil {
		rl.Report = func(res certs.Result) { o.OnReload("", "proxy_tls", string(res)) }
	}
	if err := rl.Load(ctx); err != nil {
		return &problem.FieldError{Path: "listen.proxy_tls", Err: err, Fix: "give a PEM certificate and key the listener can serve"}
	}
	var clientCAs *x509.CertPool
	if pt.ClientCAFile != "" {
		var err error
		if clientCAs, err = callercert.LoadCertPool(pt.ClientCAFile); err != nil {
			return &problem.FieldError{Path: "listen.proxy_tls.client_ca_file", Err: err, Fix: "give a PEM bundle of the CAs that issue callers' certificates"}
		}
	}
	g.ServerCert = holder
	g.ListenerTLS = callercert.ServerConfig(holder, clientCAs)
	g.AddJob(rl.Run)
	return nil
}

// interceptConfig is the interception block as package intercept takes it.
func interceptConfig(ic config.Interception) intercept.Config {
	out := intercept.Config{LeafTTL: ic.LeafTTL, CacheSize: ic.CacheSize, IssueRate: ic.IssueRate,
		IssueBurst: ic.IssueBurst, PollInterval: ic.PollInterval}
	if f := ic.CA.Files; f != nil {
		out.CA.Files = &intercept.FileConfig{CertFile: f.CertFile, KeyFile: f.KeyFile, Interval: f.ReloadInterval}
	}
	if v := ic.CA.VaultPKI; v != nil {
		out.CA.VaultPKI = &intercept.VaultPKIConfig{Mount: v.Mount, Role: v.Role}
	}
	if g := ic.CA.Generate; g != nil {
		out.CA.Generate = &intercept.GenerateConfig{WriteCertTo: g.WriteCertTo}
	}
	return out
}

// buildCertCallers maps client certificates to the callers that have a
// certificate block; nil when none has.
func buildCertCallers(cs []config.Caller) (*callercert.Mapper, error) {
	var list []callercert.Caller
	for _, c := range cs {
		if c.Certificate != nil {
			list = append(list, callercert.Caller{Name: c.Name,
				Certificate: callercert.Match{Subject: c.Certificate.Subject, SPIFFEID: c.Certificate.SPIFFEID}})
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	m, err := callercert.NewMapper(list)
	if err != nil {
		return nil, fmt.Errorf("callers: %w", err)
	}
	return m, nil
}

// LogProxyListener logs what the proxy listener adds, once at start-up.
func LogProxyListener(log *zap.Logger, g *route.ProxyListener) {
	if g == nil {
		return
	}
	if g.Interceptor != nil {
		log.Info("intercepting CONNECT tunnels", zap.Int("hosts", g.Hosts()), zap.Stringer("ca", g.Interceptor.CA))
	}
	if g.ListenerTLS != nil {
		log.Info("the proxy listener serves TLS", zap.Bool("client_certificates", g.ListenerTLS.ClientCAs != nil))
	}
}
