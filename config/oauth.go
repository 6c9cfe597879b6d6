package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// OAuth2 token flows (token.type), beside TokenBasicGet.
const (
	// TokenClientCredentials is the OAuth2 client_credentials grant: one token per route.
	TokenClientCredentials = "client_credentials"
	// TokenAuthorizationCode is the OAuth2 authorization_code + refresh_token
	// grant: one token per customer (subject), after the customer's consent.
	TokenAuthorizationCode = "authorization_code"
)

// Defaults of the OAuth2 blocks.
const (
	DefaultSubjectHeader   = "Tokenproxy-Subject"
	DefaultConsentListen   = "127.0.0.1:9091"
	DefaultStateTTL        = 10 * time.Minute
	DefaultExpiringWithin  = 7 * 24 * time.Hour
	DefaultCensusInterval  = time.Minute
	DefaultAuthMethodOAuth = "client_secret_basic"
)

// OAuthToken holds the token: fields of the OAuth2 flows (client_credentials
// and authorization_code). The token endpoint is token.url.
type OAuthToken struct {
	ClientID string `yaml:"client_id"`
	// AuthMethod is client_secret_basic (default), client_secret_post,
	// tls_client_auth or private_key_jwt.
	AuthMethod string `yaml:"auth_method"`
	// ClientSecret is the client secret of the client_secret_* methods.
	ClientSecret secret.Ref `yaml:"client_secret"`
	// PrivateKey signs the private_key_jwt client assertion.
	PrivateKey *PrivateKey `yaml:"private_key"`
	// KeyID is the assertion's kid header (private_key_jwt), if the bank wants one.
	KeyID  string   `yaml:"key_id"`
	Scopes []string `yaml:"scopes"`
	// AuthorizeURL is the bank's authorization endpoint (authorization_code).
	AuthorizeURL string `yaml:"authorize_url"`
	// RevocationURL, when set, is where a deleted consent's refresh token is revoked (RFC 7009).
	RevocationURL string `yaml:"revocation_url"`
	// PKCE adds an S256 code challenge to each consent (authorization_code).
	PKCE bool `yaml:"pkce"`
	// RefreshTTL is the refresh token's lifetime when the bank does not say it.
	RefreshTTL time.Duration `yaml:"refresh_ttl"`
	// KeepAlive refreshes a consent that went unused this long, for banks
	// that revoke idle refresh tokens (authorization_code; 0: never).
	KeepAlive time.Duration `yaml:"keep_alive"`
	// FAPI holds the FAPI 2.0 fields (docs/fapi.md).
	FAPI `yaml:",inline"`
	// DPoP binds the access tokens to a key (RFC 9449): every token and
	// resource request carries a proof signed by it.
	DPoP *DPoPConfig `yaml:"dpop"`
	// CertificateBound records each token with the client certificate it
	// was fetched with (RFC 8705) and fetches anew when the certificate
	// rotates.
	CertificateBound bool `yaml:"certificate_bound"`
}

// DPoPConfig is token.dpop: the key proofs are signed with.
type DPoPConfig struct {
	// PrivateKey is a PEM file or a Vault Transit key.
	PrivateKey *PrivateKey `yaml:"private_key"`
	// Algorithm is ES256 or PS256; by default ES256 for a P-256 key and
	// PS256 for an RSA key.
	Algorithm string `yaml:"algorithm"`
}

// PrivateKey is the key that signs private_key_jwt assertions: a PEM file
// (PKCS#8, EC or PKCS#1) or a Vault Transit key (never readable).
type PrivateKey struct {
	File         string           `yaml:"file"`
	VaultTransit *VaultTransitKey `yaml:"vault_transit"`
}

// Subjects configures how an app names the customer on an authorization_code route.
type Subjects struct {
	// Header carries the subject; it is removed before forwarding.
	Header string `yaml:"header"`
	// Required (default true): a request without the header is refused with
	// 400 subject_required. When false, such a request goes upstream without a token.
	Required *bool `yaml:"required"`
}

// IsRequired reports whether a request must name a subject.
func (s *Subjects) IsRequired() bool { return s == nil || s.Required == nil || *s.Required }

// Consents is the top-level consents: block: the consent API's listener,
// the callback the bank redirects to, and the durable consent store.
type Consents struct {
	// Listen is the consent API's address (loopback by default).
	Listen string `yaml:"listen"`
	// CallbackURL is the consent API's /v1/callback as the customer's
	// browser reaches it: the redirect_uri registered at the bank.
	CallbackURL string `yaml:"callback_url"`
	// ReturnURLs are where the callback may send the browser afterwards.
	ReturnURLs []string `yaml:"return_urls"`
	// StateTTL bounds how long a started consent waits for the customer.
	StateTTL time.Duration `yaml:"state_ttl"`
	// ExpiringWithin is the window of the expiring-consents gauge.
	ExpiringWithin time.Duration `yaml:"expiring_within"`
	// CensusInterval is how often the consent gauges are recomputed.
	CensusInterval time.Duration `yaml:"census_interval"`
	Store          ConsentStore  `yaml:"store"`
	// Webhooks receive consent events (docs/webhooks.md).
	Webhooks []Webhook `yaml:"webhooks"`
	// WebhookDelivery tunes their delivery.
	WebhookDelivery WebhookDelivery `yaml:"webhook_delivery"`
}

// ConsentStore says where consents are kept: exactly one of its blocks.
type ConsentStore struct {
	Bbolt    *BoltStore     `yaml:"bbolt"`
	VaultKV  *VaultKVStore  `yaml:"vault_kv"`
	Postgres *PostgresStore `yaml:"postgres"`
}

// Defaults of consents.store.postgres.
const (
	DefaultPostgresPort     = 5432
	DefaultPostgresMaxConns = 10
	DefaultPostgresTLSMode  = "verify-full"
)

// PostgresStore keeps consents in a PostgreSQL database, every value
// encrypted under Key as bbolt's are. Give either DSN or Host (with Port,
// Database, User); the password is always a secret reference, never part
// of the DSN.
type PostgresStore struct {
	// DSN is a libpq connection string or postgres:// URL, sslmode included.
	DSN      string     `yaml:"dsn"`
	Host     string     `yaml:"host"`
	Port     int        `yaml:"port"`
	Database string     `yaml:"database"`
	User     string     `yaml:"user"`
	Password secret.Ref `yaml:"password"`
	// TLS is the connection's TLS (with host:); mode defaults to verify-full.
	TLS *PostgresTLS `yaml:"tls"`
	// Key is 32 bytes (64 hex digits or base64) that seal every value.
	Key secret.Ref `yaml:"key"`
	// Keys replaces Key to rotate keys (see StoreKey).
	Keys []StoreKey `yaml:"keys"`
	// MaxConnections bounds the connection pool of each replica.
	MaxConnections int `yaml:"max_connections"`
	// MigrateOnStart applies the embedded schema migrations at start-up;
	// otherwise run `tokenproxy store migrate`.
	MigrateOnStart bool `yaml:"migrate_on_start"`
}

// PostgresTLS is how the Postgres connection is encrypted and verified.
type PostgresTLS struct {
	// Mode is disable, require, verify-ca or verify-full (libpq's sslmode).
	Mode string `yaml:"mode"`
	// CAFile is a PEM bundle trusted for the server; system roots when empty.
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name verified in the server's certificate.
	ServerName string `yaml:"server_name"`
}

// TLSMode is the TLS mode in effect: tls.mode, or verify-full.
func (p *PostgresStore) TLSMode() string {
	if p.TLS == nil || p.TLS.Mode == "" {
		return DefaultPostgresTLSMode
	}
	return p.TLS.Mode
}

// BoltStore is the embedded store: one file, every value encrypted under Key
// (32 bytes, as 64 hex digits or base64), or under the first of Keys.
type BoltStore struct {
	Path string     `yaml:"path"`
	Key  secret.Ref `yaml:"key"`
	// Keys replaces Key to rotate keys (see StoreKey).
	Keys []StoreKey `yaml:"keys"`
}

// MinKeepAlive is the shortest token.keep_alive: a keep-alive pass runs
// every quarter of it (at least each minute).
const MinKeepAlive = 10 * time.Minute

// StoreKey is one key of a sealed store (a consent store's keys, the
// shared token store's encryption_keys). The first listed seals every value
// written; any listed key opens the values sealed under its id. To rotate a
// consent store's key, list the new key (first once every replica has it),
// run `tokenproxy store rekey`, then remove the old one.
type StoreKey struct {
	// ID names the key in every value it seals: 1 to 32 letters, digits
	// and . _ -. A key given as key: alone has the id "default".
	ID string `yaml:"id"`
	// Key is 32 bytes, as 64 hex digits or base64.
	Key secret.Ref `yaml:"key"`
}

// DefaultStoreKeyID is the id of a store key given as key: alone.
const DefaultStoreKeyID = "default"

// StoreKeys is a store's keys: keys, or key alone under DefaultStoreKeyID.
func StoreKeys(key secret.Ref, keys []StoreKey) []StoreKey {
	if len(keys) > 0 {
		return keys
	}
	return []StoreKey{{ID: DefaultStoreKeyID, Key: key}}
}

// storeKeysUseVault reports whether a store's keys refer to Vault.
func storeKeysUseVault(key secret.Ref, keys []StoreKey) bool {
	for _, k := range StoreKeys(key, keys) {
		if k.Key.Vault != nil {
			return true
		}
	}
	return false
}

// VaultKVStore keeps consents in Vault KV v2 under Path.
type VaultKVStore struct {
	Mount string `yaml:"mount"`
	Path  string `yaml:"path"`
}

// usesConsents reports whether any route needs the consent store.
func (c *Config) usesConsents() bool {
	for _, r := range c.Routes {
		if r.Token != nil && r.Token.Type == TokenAuthorizationCode {
			return true
		}
	}
	return false
}

// applyOAuthDefaults fills the OAuth2 defaults.
func (c *Config) applyOAuthDefaults() {
	for i := range c.Routes {
		r := &c.Routes[i]
		t := r.Token
		if t == nil || (t.Type != TokenClientCredentials && t.Type != TokenAuthorizationCode) {
			continue
		}
		if t.AuthMethod == "" {
			t.AuthMethod = DefaultAuthMethodOAuth
		}
		if t.PrivateKey != nil && t.PrivateKey.VaultTransit != nil && t.PrivateKey.VaultTransit.Mount == "" {
			t.PrivateKey.VaultTransit.Mount = DefaultTransitMount
		}
		t.applyFAPIDefaults()
		if d := t.DPoP; d != nil && d.PrivateKey != nil && d.PrivateKey.VaultTransit != nil && d.PrivateKey.VaultTransit.Mount == "" {
			d.PrivateKey.VaultTransit.Mount = DefaultTransitMount
		}
		if t.Type == TokenAuthorizationCode {
			if r.Subjects == nil {
				r.Subjects = &Subjects{}
			}
			if r.Subjects.Header == "" {
				r.Subjects.Header = DefaultSubjectHeader
			}
		}
	}
	if cs := c.Consents; cs != nil {
		if cs.Listen == "" {
			cs.Listen = DefaultConsentListen
		}
		if cs.StateTTL == 0 {
			cs.StateTTL = DefaultStateTTL
		}
		if cs.ExpiringWithin == 0 {
			cs.ExpiringWithin = DefaultExpiringWithin
		}
		if cs.CensusInterval == 0 {
			cs.CensusInterval = DefaultCensusInterval
		}
		if len(cs.Webhooks) > 0 {
			cs.applyWebhookDefaults()
		}
		if kv := cs.Store.VaultKV; kv != nil && kv.Mount == "" {
			kv.Mount = DefaultKVMount
		}
		if pg := cs.Store.Postgres; pg != nil {
			if pg.DSN == "" && pg.Port == 0 {
				pg.Port = DefaultPostgresPort
			}
			if pg.MaxConnections == 0 {
				pg.MaxConnections = DefaultPostgresMaxConns
			}
		}
	}
}

// oauthUsesVault reports whether the OAuth2 blocks refer to Vault.
func (c *Config) oauthUsesVault() bool {
	if cs := c.Consents; cs != nil && (cs.Store.VaultKV != nil || (cs.Store.Bbolt != nil && storeKeysUseVault(cs.Store.Bbolt.Key, cs.Store.Bbolt.Keys))) {
		return true
	}
	if cs := c.Consents; cs != nil && cs.webhooksUseVault() {
		return true
	}
	if cs := c.Consents; cs != nil && cs.Store.Postgres != nil && (storeKeysUseVault(cs.Store.Postgres.Key, cs.Store.Postgres.Keys) || cs.Store.Postgres.Password.Vault != nil) {
		return true
	}
	for _, r := range c.Routes {
		if t := r.Token; t != nil && (t.ClientSecret.Vault != nil || (t.PrivateKey != nil && t.PrivateKey.VaultTransit != nil)) {
			return true
		}
		if t := r.Token; t != nil && t.DPoP != nil && t.DPoP.PrivateKey != nil && t.DPoP.PrivateKey.VaultTransit != nil {
			return true
		}
	}
	return false
}

// oauthToken checks the OAuth2 fields of a route's token: block (tp is its path).
func (v *validator) oauthToken(p, tp string, r *Route) {
	add, t := v.add, r.Token
	oauth := t.Type == TokenClientCredentials || t.Type == TokenAuthorizationCode
	if !oauth {
		if t.ClientID != "" || t.AuthorizeURL != "" || t.PrivateKey != nil || !t.ClientSecret.IsZero() || len(t.Scopes) > 0 {
			add(tp, "client_id, client_secret, private_key, scopes and authorize_url belong to type %s or %s; remove them or change type", TokenClientCredentials, TokenAuthorizationCode)
		}
		if r.Subjects != nil {
			add(p+".subjects", "subjects are named only on token.type %s routes; remove the block", TokenAuthorizationCode)
		}
		if t.DPoP != nil || t.CertificateBound {
			add(tp, "dpop and certificate_bound bind OAuth2 tokens: they belong to type %s or %s; remove them or change type", TokenClientCredentials, TokenAuthorizationCode)
		}
		return
	}
	v.senderConstraint(p, tp, r)
	checkURL := func(field, raw string, required bool) {
		if raw == "" {
			if required {
				add(tp+"."+field, "missing; give the bank's https:// endpoint")
			}
			return
		}
		if u, err := url.Parse(raw); err != nil || u.Scheme != "https" || u.Host == "" {
			add(tp+"."+field, "%q must be an https:// URL", raw)
		}
	}
	checkURL("url", t.URL, !t.Discovery)
	if t.ClientID == "" {
		add(tp+".client_id", "missing; give the client_id the bank registered")
	}
	switch t.AuthMethod {
	case "client_secret_basic", "client_secret_post":
		checkRef(&v.errs, tp+".client_secret", t.ClientSecret)
	case "tls_client_auth":
		if r.ClientCert.Kind() == "" {
			add(p+".client_certificate", "missing; auth_method tls_client_auth authenticates with the route's client certificate")
		}
	case "private_key_jwt":
		v.privateKey(tp+".private_key", t.PrivateKey)
	default:
		add(tp+".auth_method", "%q is not one of client_secret_basic, client_secret_post, tls_client_auth, private_key_jwt", t.AuthMethod)
	}
	if t.AuthMethod != "private_key_jwt" && t.PrivateKey != nil && !t.RequestObject {
		add(tp+".private_key", "only auth_method private_key_jwt and request_object use a private key; remove it")
	}
	v.fapi(tp, r)
	if !strings.HasPrefix(t.AuthMethod, "client_secret_") && !t.ClientSecret.IsZero() {
		add(tp+".client_secret", "only the client_secret_* auth methods use a secret; remove it")
	}
	if t.RefreshTTL < 0 {
		add(tp+".refresh_ttl", "must not be negative")
	}
	if t.KeepAlive != 0 && t.KeepAlive < MinKeepAlive {
		add(tp+".keep_alive", "%v is too short; give at least %v (e.g. 24h), or remove it", t.KeepAlive, MinKeepAlive)
	}
	if t.Type == TokenClientCredentials {
		if t.AuthorizeURL != "" || t.PKCE || t.RevocationURL != "" || r.Subjects != nil || t.KeepAlive != 0 {
			add(tp, "authorize_url, revocation_url, pkce, keep_alive and subjects belong to type %s; remove them", TokenAuthorizationCode)
		}
		return
	}
	checkURL("authorize_url", t.AuthorizeURL, !t.Discovery)
	checkURL("revocation_url", t.RevocationURL, false)
	if h := r.Subjects.Header; h != "" && (http.CanonicalHeaderKey(h) == "Authorization" || strings.ContainsAny(h, " :\t")) {
		add(p+".subjects.header", "%q is not usable; name a header of your own, e.g. Tokenproxy-Subject", h)
	}
	if v.c.Consents == nil {
		add("consents", "missing; route %s uses authorization_code, so give the consent store and callback: consents: {callback_url: https://..., store: {bbolt: {path: consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}}}", r.Name)
	}
}

// senderConstraint checks token.dpop and token.certificate_bound.
func (v *validator) senderConstraint(p, tp string, r *Route) {
	t := r.Token
	if t.DPoP != nil && t.CertificateBound {
		v.add(tp, "give dpop or certificate_bound, not both; a token is bound to one key or one certificate")
	}
	if t.CertificateBound && r.ClientCert.Kind() == "" {
		v.add(p+".client_certificate", "missing; certificate_bound tokens are bound to the route's client certificate")
	}
	d := t.DPoP
	if d == nil {
		return
	}
	switch k := d.PrivateKey; {
	case k == nil:
		v.add(tp+".dpop.private_key", "missing; give the key proofs are signed with: private_key: {file: dpop-key.pem} or {vault_transit: {key: NAME}}")
	case (k.File == "") == (k.VaultTransit == nil):
		v.add(tp+".dpop.private_key", "set exactly one of file or vault_transit")
	case k.VaultTransit != nil && k.VaultTransit.Key == "":
		v.add(tp+".dpop.private_key.vault_transit.key", "missing; name the Transit key")
	}
	switch d.Algorithm {
	case "", "ES256", "PS256":
	case "RS256":
		v.add(tp+".dpop.algorithm", "RS256 is not allowed for DPoP proofs (FAPI 2.0); use ES256 with a P-256 key or PS256 with an RSA key, or remove the field")
	default:
		v.add(tp+".dpop.algorithm", "%q is not one of ES256, PS256; or remove the field to take the key's (ES256 for P-256, PS256 for RSA)", d.Algorithm)
	}
}

// privateKey checks token.private_key.
func (v *validator) privateKey(p string, k *PrivateKey) {
	switch {
	case k == nil:
		v.add(p, "missing; auth_method private_key_jwt needs the signing key: private_key: {file: client-key.pem} or {vault_transit: {key: NAME}}")
	case (k.File == "") == (k.VaultTransit == nil):
		v.add(p, "set exactly one of file or vault_transit")
	case k.VaultTransit != nil && k.VaultTransit.Key == "":
		v.add(p+".vault_transit.key", "missing; name the Transit key")
	}
}

// consents checks the consents: block.
func (v *validator) consents() {
	cs := v.c.Consents
	if cs == nil {
		return
	}
	if !v.c.usesConsents() {
		v.add("consents", "no route uses token.type %s; remove the block or add such a route", TokenAuthorizationCode)
	}
	v.checkAddr("consents.listen", cs.Listen)
	if host, _, err := net.SplitHostPort(cs.Listen); err == nil && !isLoopback(host) {
		for i, r := range v.c.Routes {
			if r.Token != nil && r.Token.Type == TokenAuthorizationCode && r.Allow == nil {
				v.add(fmt.Sprintf("routes[%d](%s).allow", i, r.Name), "missing; the consent API listens beyond loopback, so say who may manage this route's consents: allow: {callers: [app]} and/or {cidrs: [...]}")
			}
		}
	}
	if u, err := url.Parse(cs.CallbackURL); cs.CallbackURL == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		v.add("consents.callback_url", "%q must be the absolute URL of the consent API's /v1/callback as the customer's browser reaches it (the redirect_uri registered at the bank)", cs.CallbackURL)
	}
	for i, ru := range cs.ReturnURLs {
		if u, err := url.Parse(ru); err != nil || u.Host == "" {
			v.add(fmt.Sprintf("consents.return_urls[%d]", i), "%q must be an absolute URL", ru)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"state_ttl", cs.StateTTL}, {"expiring_within", cs.ExpiringWithin}, {"census_interval", cs.CensusInterval}} {
		if d.v < 0 {
			v.add("consents."+d.name, "must not be negative")
		}
	}
	v.webhooks(cs)
	st := cs.Store
	n := 0
	for _, set := range []bool{st.Bbolt != nil, st.VaultKV != nil, st.Postgres != nil} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		v.add("consents.store", "set exactly one of bbolt: {path, key}, vault_kv: {mount, path} or postgres: {host, database, user, password, key}")
	case st.Postgres != nil:
		v.postgresStore("consents.store.postgres", st.Postgres)
	case st.Bbolt != nil:
		if st.Bbolt.Path == "" {
			v.add("consents.store.bbolt.path", "missing; give the store file's path, e.g. /var/lib/tokenproxy/consents.db")
		}
		v.storeKeys("consents.store.bbolt", st.Bbolt.Key, st.Bbolt.Keys)
	case st.VaultKV.Path == "":
		v.add("consents.store.vault_kv.path", "missing; give the KV v2 path consents are kept under, e.g. tokenproxy/consents")
	}
}

// postgresStore checks consents.store.postgres (p is its path).
func (v *validator) postgresStore(p string, pg *PostgresStore) {
	switch {
	case pg.DSN != "" && (pg.Host != "" || pg.Database != "" || pg.User != ""):
		v.add(p, "give either dsn or host, database and user, not both")
	case pg.DSN != "":
		if strings.Contains(pg.DSN, "password=") || dsnURLHasPassword(pg.DSN) {
			v.add(p+".dsn", "holds a password; remove it from the dsn and give it as password: {env: ...} or {file: ...}")
		}
		if pg.TLS != nil && (pg.TLS.Mode != "" || pg.TLS.CAFile != "") {
			v.add(p+".tls", "with dsn, give sslmode and sslrootcert in the dsn; only tls.server_name applies")
		}
	default:
		if pg.Host == "" {
			v.add(p+".host", "missing; give the server's host name (or a unix socket directory), or a dsn")
		}
		if pg.Database == "" {
			v.add(p+".database", "missing; name the database, e.g. tokenproxy")
		}
		if pg.User == "" {
			v.add(p+".user", "missing; name the database user, e.g. tokenproxy")
		}
		if pg.Port < 1 || pg.Port > 65535 {
			v.add(p+".port", "%d is not a TCP port (1-65535)", pg.Port)
		}
		switch pg.TLSMode() {
		case "disable", "require", "verify-ca", "verify-full":
		default:
			v.add(p+".tls.mode", "%q is not one of disable, require, verify-ca, verify-full", pg.TLSMode())
		}
	}
	if !pg.Password.IsZero() {
		checkRef(&v.errs, p+".password", pg.Password)
	}
	v.storeKeys(p, pg.Key, pg.Keys)
	if pg.MaxConnections < 1 || pg.MaxConnections > 1000 {
		v.add(p+".max_connections", "%d must be between 1 and 1000 (0 takes the default, %d)", pg.MaxConnections, DefaultPostgresMaxConns)
	}
}

var keyIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// storeKeys checks a sealed store's key: or keys: (p is the store's path).
func (v *validator) storeKeys(p string, key secret.Ref, keys []StoreKey) {
	v.sealKeys(sealKeyFields{path: p, key: "key", keys: "keys", env: "TOKENPROXY_CONSENT_KEY"}, key, keys)
}

// sealKeyFields names a sealed store's key fields: its path, the field of
// one key, the field of the list, and the variable its examples read.
type sealKeyFields struct{ path, key, keys, env string }

// sealKeys checks a sealed store's one key or its list of keys.
func (v *validator) sealKeys(f sealKeyFields, key secret.Ref, keys []StoreKey) {
	p := f.path
	missing := fmt.Sprintf("missing; give 32 random bytes, base64 encoded (openssl rand -base64 32), e.g. key: {env: %s}", f.env)
	switch {
	case len(keys) > 0 && !key.IsZero():
		v.add(p, "give %s or %s, not both; to rotate, move %s into %s with id %q", f.key, f.keys, f.key, f.keys, DefaultStoreKeyID)
		return
	case len(keys) == 0 && key.IsZero():
		if f.key != "key" {
			missing = strings.Replace(missing, "key:", f.key+":", 1)
		}
		v.add(p+"."+f.key, "%s", missing)
		return
	case len(keys) == 0:
		checkRef(&v.errs, p+"."+f.key, key)
		return
	}
	seen := map[string]bool{}
	for i, k := range keys {
		kp := fmt.Sprintf("%s.%s[%d]", p, f.keys, i)
		switch {
		case !keyIDRE.MatchString(k.ID):
			v.add(kp+".id", "%q must be 1 to 32 letters, digits and . _ - (e.g. 2026-12)", k.ID)
		case seen[k.ID]:
			v.add(kp+".id", "%q is listed twice; each key has its own id", k.ID)
		}
		seen[k.ID] = true
		if k.Key.IsZero() {
			v.add(kp+".key", "%s", missing)
		} else {
			checkRef(&v.errs, kp+".key", k.Key)
		}
	}
}

// dsnURLHasPassword reports whether a postgres:// URL carries a password.
func dsnURLHasPassword(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return false
	}
	_, ok := u.User.Password()
	return ok
}

// tokenTypes lists the token.type values, for messages.
const tokenTypes = TokenBasicGet + ", " + TokenClientCredentials + ", " + TokenAuthorizationCode
