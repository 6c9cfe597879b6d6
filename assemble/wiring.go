package assemble

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/signer"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/tokenclient"
)

// buildTokens resolves the token credentials once and returns the route's
// token cache over its source, paced by the authorization host's limiter.
func buildTokens(ctx context.Context, p, route string, t *config.Token, tr *http.Transport, bind *binding, o Options) (*tokencache.Cache, error) {
	if isOAuth(t) {
		return buildOAuthTokens(ctx, p, route, t, tr, bind, o)
	}
	user, err := t.Username.Open(o.vault())
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".username", Err: err}
	}
	pass, err := t.Password.Open(o.vault())
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".password", Err: err}
	}
	for _, s := range []struct {
		path string
		src  secret.Source
	}{{p + ".username", user}, {p + ".password", pass}} {
		if _, err := s.src.Get(ctx); err != nil {
			return nil, &problem.FieldError{Path: s.path, Err: err, Fix: "make the secret available (" + s.src.String() + ")"}
		}
	}
	u, _ := url.Parse(t.URL)
	lim := o.pacer(u.Host, t.RateLimit, t.FetchTimeout)
	src := &tokenclient.BasicGet{
		URL: t.URL, Username: user, Password: pass, DefaultTTL: t.DefaultTTL,
		Client: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cache, err := tokencache.New(src, lim, tokencache.Options{
		Route: route, Skew: t.Skew, MaxWait: t.MaxWait, FetchTimeout: t.FetchTimeout,
		Log: o.Log, Observer: o.TokenObserver, Store: o.tokenStore(route, t),
	})
	if err != nil {
		return nil, &problem.FieldError{Path: p, Err: err}
	}
	return cache, nil
}

// buildSigner loads the signing key (apart from the TLS client certificate),
// validates the signing options against it and installs the signer and the
// headers it owns.
func buildSigner(ctx context.Context, p string, r *route.Route, sg *config.Signing, o Options) error {
	if sg.Key.VaultPKI != nil {
		return &problem.FieldError{Path: p + ".key.vault_pki", Err: errors.New("a signing key cannot come from Vault PKI"), Fix: "use vault_transit (the key never leaves Vault) or vault_kv"}
	}
	src, cp := CertSource(sg.Key, o)
	holder := certs.NewHolder(nil)
	opts := signerOptions(sg.SigningOptions)
	validate := func(c *tls.Certificate) error { return opts.Validate(c, time.Now()) }
	rl := &certs.Reloader{Name: "route " + r.Name + " signing key", Holder: holder, Source: src,
		Interval: pollInterval(src, sg.Key), Log: o.Log.With(zap.String("route", r.Name)), Validate: validate}
	if o.OnReload != nil {
		rl.Report = func(res certs.Result) { o.OnReload(r.Name, "signing_key", string(res)) }
	}
	if err := rl.Load(ctx); err != nil {
		var ve *signer.ValidationError
		if errors.As(err, &ve) {
			return &problem.FieldError{Path: p + "." + ve.Field, Err: errors.New(ve.Msg)}
		}
		return CertError(p+".key"+cp, sg.Key.Kind(), err)
	}
	sgn, err := signer.New(opts, holder)
	if err != nil {
		return &problem.FieldError{Path: p, Err: err}
	}
	owned, err := opts.OwnedHeaders()
	if err != nil {
		return &problem.FieldError{Path: p, Err: err}
	}
	r.Signer = sgn
	r.AddCertificate("signing", holder, rl.Run)
	r.Own(owned...)
	return nil
}
