package assemble

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// ConsentObserver counts refreshes, invalid grants and stored consents
// (Options.OAuthObserver; the metrics implement it).
type ConsentObserver = oauth.Observer

// Consents is the process's consent store and the authorization-code
// sources built over it, one per route. Open it once per process
// (OpenConsents) and pass it in Options.Consents to every Build.
type Consents struct {
	Store consentstore.Store
	cfg   config.Consents
	// Events are the consent events the sources append for
	// consents.webhooks; nil without webhooks.
	Events *oauth.Events
	hooks  []webhook.Hook

	mu      sync.Mutex
	sources []*oauth.AuthCode
}

// OpenConsents opens the consent store of cfg's consents: block; nil (and
// no error) when the configuration has none. A missing secret, a key of the
// wrong length or a key other than the store's is an error naming
// consents.store.bbolt.key(s) or consents.store.postgres.key(s) (never the key);
// Postgres's refusals name the field to fix (openPostgresConsents).
func OpenConsents(ctx context.Context, cfg *config.Config, o Options) (*Consents, error) {
	return openConsents(ctx, cfg, o, consentstore.OpenBolt)
}

// OpenConsentsForCheck is OpenConsents for `tokenproxy validate`: a bbolt
// store that a running tokenproxy holds is checked on a read-only copy
// (consentstore.OpenBoltForCheck) instead of waiting for its lock;
// Snapshot reports that case.
func OpenConsentsForCheck(ctx context.Context, cfg *config.Config, o Options) (*Consents, error) {
	return openConsents(ctx, cfg, o, consentstore.OpenBoltForCheck)
}

func openConsents(ctx context.Context, cfg *config.Config, o Options, openBolt func(path string, ring *consentstore.Keyring) (*consentstore.Bolt, error)) (*Consents, error) {
	cs := cfg.Consents
	if cs == nil {
		return nil, nil
	}
	c := &Consents{cfg: *cs}
	switch st := cs.Store; {
	case st.Bbolt != nil:
		const p = "consents.store.bbolt"
		ring, err := openKeyring(ctx, p, st.Bbolt.Key, st.Bbolt.Keys, o)
		if err != nil {
			return nil, err
		}
		b, err := openBolt(st.Bbolt.Path, ring)
		if kerr := keyError(p, st.Bbolt.Keys, err); kerr != nil {
			return nil, kerr
		}
		if err != nil {
			return nil, &problem.FieldError{Path: p + ".path", Err: err}
		}
		c.Store = b
	case st.Postgres != nil:
		pg, err := openPostgresConsents(ctx, st.Postgres, o)
		if err != nil {
			return nil, err
		}
		c.Store = pg
	case st.VaultKV != nil:
		if o.Vault == nil {
			return nil, &problem.FieldError{Path: "consents.store.vault_kv", Err: secret.ErrNoVault}
		}
		c.Store = consentstore.NewVault(o.Vault, st.VaultKV.Mount, st.VaultKV.Path)
	default:
		return nil, problem.Field("consents.store", "set exactly one of bbolt, vault_kv or postgres")
	}
	if err := c.openWebhooks(ctx, o); err != nil {
		_ = c.Store.Close()
		return nil, err
	}
	return c, nil
}

// Snapshot reports whether the store is a read-only copy of a bbolt file
// that a running tokenproxy holds (OpenConsentsForCheck); false for nil.
func (c *Consents) Snapshot() bool {
	if c == nil {
		return false
	}
	b, ok := c.Store.(*consentstore.Bolt)
	return ok && b.Snapshot()
}

// Close closes the store.
func (c *Consents) Close() error {
	if c == nil {
		return nil
	}
	return c.Store.Close()
}

// Sources returns the authorization-code sources built so far.
func (c *Consents) Sources() []*oauth.AuthCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*oauth.AuthCode(nil), c.sources...)
}

// APIConfig is the consent API's configuration for the built sources;
// the caller adds Authenticate and Log.
func (c *Consents) APIConfig() oauth.APIConfig {
	return oauth.APIConfig{Routes: c.Sources(), Store: c.Store, CallbackURL: c.cfg.CallbackURL, ReturnURLs: c.cfg.ReturnURLs, StateTTL: c.cfg.StateTTL}
}

// Census runs until ctx ends, handing report a census of the store every
// consents.census_interval (and once at once); errors go to report too.
func (c *Consents) Census(ctx context.Context, report func(*oauth.Census, error)) {
	take := func() {
		cs, err := oauth.TakeCensus(ctx, c.Store, time.Now(), c.cfg.ExpiringWithin)
		if ctx.Err() == nil {
			report(cs, err)
		}
	}
	take()
	t := time.NewTicker(c.cfg.CensusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			take()
		}
	}
}

// setSubjects gives an authorization_code route with a subjects: block
// its subject policy: keys are oauth.SubjectKey of the caller and a valid
// subject (consentstore.ValidateKey), so callers never share a customer.
func setSubjects(r *route.Route, rc config.Route) {
	if rc.Subjects == nil || rc.Token == nil || rc.Token.Type != config.TokenAuthorizationCode {
		return
	}
	name := rc.Name
	r.SetSubjects(route.Subjects{Header: rc.Subjects.Header, Required: rc.Subjects.IsRequired(),
		Key: func(caller, subject string) (string, error) {
			if err := consentstore.ValidateKey(consentstore.Key{Route: name, Owner: caller, Subject: subject}); err != nil {
				return "", err
			}
			return oauth.SubjectKey(caller, subject), nil
		}})
}

// tokenKind is the kind of token t yields.
func tokenKind(t *config.Token) route.TokenKind {
	switch t.Type {
	case config.TokenClientCredentials:
		return route.TokenClientCredentials
	case config.TokenAuthorizationCode:
		return route.TokenPerCustomer
	}
	return route.TokenBasicGet
}

// ConsentConfirmEvery is how long a customer's cached token is served on
// the strength of the last read of its consent: a request after that reads
// the consent store again (at most one read per customer per interval per
// process), so that a consent deleted or made invalid through another
// replica stops being served within it, with or without a shared store.
const ConsentConfirmEvery = time.Second

// isOAuth reports whether t is one of the OAuth2 flows.
func isOAuth(t *config.Token) bool {
	return t.Type == config.TokenClientCredentials || t.Type == config.TokenAuthorizationCode
}

// buildOAuthTokens builds the route's OAuth2 source over its transport (the
// route's client certificate) and the token cache over it.
func buildOAuthTokens(ctx context.Context, p, route string, t *config.Token, tr *http.Transport, bind *binding, o Options) (*tokencache.Cache, error) {
	auth, err := clientAuth(ctx, p, t, o)
	if err != nil {
		return nil, err
	}
	reqKey, reqAlg, err := requestKey(ctx, p, t, auth, o)
	if err != nil {
		return nil, err
	}
	ep := oauth.Endpoint{Route: route, TokenURL: t.URL, Auth: auth, DefaultTTL: t.DefaultTTL, MTLS: usesMTLS(t),
		Client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if ep.Discovery, err = openDiscovery(ctx, p, route, t, ep.Client, auth, o); err != nil {
		return nil, err
	}
	u, _ := url.Parse(t.URL)
	if ep.Discovery != nil && t.URL == "" {
		u, _ = url.Parse(ep.Discovery.Current().Endpoint(discovery.Token, ep.MTLS))
	}
	// The host's budget, as every token route gets it: cluster-wide when a
	// shared store is configured.
	pacer := o.pacer(u.Host, t.RateLimit, t.FetchTimeout)
	bind.endpoint(&ep)
	if bind.dpopRoute() && t.Type == config.TokenClientCredentials {
		// A DPoP token request may be sent twice (once more with the nonce
		// the bank asks for): the bank counts both, so the budget is spent
		// per request sent, as on authorization_code routes.
		ep.Client.Transport = &pacedTransport{next: tr, pacer: pacer, maxWait: t.MaxWait}
		pacer = unpaced{pacer}
	}
	var src tokencache.Source
	if t.Type == config.TokenClientCredentials {
		if src, err = oauth.NewClientCredentials(ep, t.Scopes, nil); err != nil {
			return nil, &problem.FieldError{Path: p, Err: err}
		}
	} else {
		if o.Consents == nil {
			return nil, &problem.FieldError{Path: p, Err: errors.New("no consent store is open"), Fix: "add the consents: block"}
		}
		// Most fetches of a customer's token read the store and call no bank
		// (a stored token, no consent, an invalid one): the budget is spent
		// per request sent to the bank's endpoints instead of per fetch.
		ep.Client.Transport = &pacedTransport{next: tr, pacer: pacer, maxWait: t.MaxWait}
		pacer = unpaced{pacer}
		ps := pushed(t, reqKey, reqAlg)
		ps.DPoPJKT = bind.jkt()
		ac, err := oauth.NewAuthCode(oauth.AuthCodeConfig{Endpoint: ep, AuthorizeURL: t.AuthorizeURL, RevocationURL: t.RevocationURL,
			Scopes: t.Scopes, PKCE: t.PKCE, RefreshTTL: t.RefreshTTL, KeepAlive: t.KeepAlive, Store: o.Consents.Store, Observer: o.OAuthObserver,
			Events: o.Consents.Events, Pushed: ps})
		if err != nil {
			return nil, &problem.FieldError{Path: p, Err: err}
		}
		o.Consents.mu.Lock()
		o.Consents.sources = append(o.Consents.sources, ac)
		o.Consents.mu.Unlock()
		src = ac
	}
	confirm := time.Duration(0)
	if t.Type == config.TokenAuthorizationCode {
		// A consent deleted or made invalid through another replica stops
		// being served here within ConsentConfirmEvery.
		confirm = ConsentConfirmEvery
	}
	cache, err := tokencache.New(src, pacer, tokencache.Options{
		Route: route, Skew: t.Skew, MaxWait: t.MaxWait, FetchTimeout: t.FetchTimeout,
		Log: o.Log, Observer: o.TokenObserver, ConfirmEvery: confirm, Binding: bindingOf(ep),
		// With a shared store, one replica fetches a credential (a customer's
		// refresh included) while the others wait for its answer; the refresh
		// token itself stays in the consent store.
		Store: o.tokenStore(route, t),
	})
	if err != nil {
		return nil, &problem.FieldError{Path: p, Err: err}
	}
	return cache, nil
}

// bindingOf is what the cache's tokens must be bound to: nil for bearer
// tokens (the endpoint's Binding is then always "").
func bindingOf(ep oauth.Endpoint) func() string {
	if ep.DPoP == nil && ep.CertBinding == nil {
		return nil
	}
	return ep.Binding
}

// clientAuth resolves the client authentication: the secret is read once
// here (a missing one fails at start-up) and on every request afterwards.
func clientAuth(ctx context.Context, p string, t *config.Token, o Options) (oauth.ClientAuth, error) {
	a := oauth.ClientAuth{Method: oauth.AuthMethod(t.AuthMethod), ClientID: t.ClientID, KeyID: t.KeyID}
	switch a.Method {
	case oauth.ClientSecretBasic, oauth.ClientSecretPost:
		src, err := t.ClientSecret.Open(o.vault())
		if err != nil {
			return a, &problem.FieldError{Path: p + ".client_secret", Err: err}
		}
		if _, err := src.Get(ctx); err != nil {
			return a, &problem.FieldError{Path: p + ".client_secret", Err: err, Fix: "make the secret available (" + src.String() + ")"}
		}
		a.Secret = src
	case oauth.PrivateKeyJWT:
		k, err := signingKey(ctx, p+".private_key", t.PrivateKey, o)
		if err != nil {
			return a, err
		}
		a.Key = k
	}
	if err := fapiAuth(p, t, &a); err != nil {
		return a, err
	}
	if err := a.Validate(); err != nil {
		return a, &problem.FieldError{Path: p, Err: err}
	}
	return a, nil
}

// requestKey is the key and algorithm that sign request objects
// (token.request_object): the client assertion's key, or private_key
// loaded for this alone on a route authenticating otherwise.
func requestKey(ctx context.Context, p string, t *config.Token, auth oauth.ClientAuth, o Options) (crypto.Signer, string, error) {
	if !t.RequestObject {
		return nil, "", nil
	}
	if auth.Key != nil {
		return auth.Key, auth.Alg, nil
	}
	k, err := signingKey(ctx, p+".private_key", t.PrivateKey, o)
	if err != nil {
		return nil, "", err
	}
	alg, err := signingAlg(t, k)
	if err != nil {
		return nil, "", &problem.FieldError{Path: p + ".private_key", Err: err, Fix: "give an RSA key of at least 2048 bits (PS256) or an ECDSA P-256 key (ES256)"}
	}
	return k, alg, nil
}

// signingKey loads the private_key_jwt key: a PEM file or a Transit key.
func signingKey(ctx context.Context, p string, k *config.PrivateKey, o Options) (crypto.Signer, error) {
	if k == nil {
		return nil, problem.Field(p, "missing; private_key_jwt needs a signing key")
	}
	if vt := k.VaultTransit; vt != nil {
		if o.Vault == nil {
			return nil, &problem.FieldError{Path: p + ".vault_transit", Err: secret.ErrNoVault}
		}
		s, err := o.Vault.TransitSigner(ctx, vaultsrc.TransitKeyConfig{Mount: vt.Mount, Key: vt.Key})
		if err != nil {
			return nil, &problem.FieldError{Path: p + ".vault_transit", Err: err, Fix: "check the Transit key exists and the policy allows reading and signing with it"}
		}
		return s, nil
	}
	b, err := os.ReadFile(k.File)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".file", Err: err, Fix: "check the path and that tokenproxy may read it"}
	}
	s, err := parseSigner(b)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".file", Err: fmt.Errorf("%s: %w", k.File, err), Fix: "give a PEM private key (PKCS#8, EC or RSA)"}
	}
	return s, nil
}

// parseSigner parses a PEM private key.
func parseSigner(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, errors.New("the private key does not parse")
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("the private key cannot sign")
		}
		return s, nil
	}
}

// ProbeConsents is a consent store that holds nothing and refuses writes,
// for building authorization_code routes that only probe their token
// endpoint (`tokenproxy check`) without opening the real store, which a
// running tokenproxy holds locked.
func ProbeConsents() *Consents { return &Consents{Store: emptyStore{}} }

// emptyStore is the store of ProbeConsents.
type emptyStore struct{}

var errProbeOnly = errors.New("the consent store is not open (diagnostics)")

func (emptyStore) Get(context.Context, consentstore.Key) (*consentstore.Consent, error) {
	return nil, consentstore.ErrNotFound
}

func (emptyStore) Put(context.Context, *consentstore.Consent, uint64) (uint64, error) {
	return 0, errProbeOnly
}
func (emptyStore) Delete(context.Context, consentstore.Key) error { return errProbeOnly }
func (emptyStore) List(context.Context, consentstore.Filter) ([]*consentstore.Consent, error) {
	return nil, nil
}
func (emptyStore) PutPending(context.Context, *consentstore.Pending) error { return errProbeOnly }
func (emptyStore) TakePending(context.Context, string) (*consentstore.Pending, error) {
	return nil, consentstore.ErrNotFound
}
func (emptyStore) Close() error { return nil }
func (emptyStore) TakeAccess(context.Context, consentstore.Key, string, int, time.Time) (int, bool, error) {
	return 0, false, errProbeOnly
}

// pacedTransport spends the authorization host's budget on each request
// actually sent to the bank (refresh, code exchange, revocation).
type pacedTransport struct {
	next    http.RoundTripper
	pacer   tokencache.Pacer
	maxWait time.Duration
}

func (p *pacedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	permit, err := p.pacer.Acquire(req.Context(), p.maxWait)
	if err != nil {
		return nil, err // a *tokencache.ThrottledError, kept in the source's error chain
	}
	defer permit.Done()
	return p.next.RoundTrip(req)
}

// unpaced is the cache's pacer on an authorization_code route: it grants
// every fetch at once (pacedTransport paces the bank calls) and passes the
// 429 back-off on to the host's limiter.
type unpaced struct{ tokencache.Pacer }

func (unpaced) Acquire(context.Context, time.Duration) (tokencache.Permit, error) {
	return tokencache.NewPermit(0, func() {}), nil
}
