// Package config defines tokenproxy's configuration file: its schema,
// defaults, per-API presets, strict decoding and validation. Every error
// names the field path and how to fix it.
package config

import (
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Defaults.
const (
	DefaultProxyAddr     = "127.0.0.1:8080"
	DefaultAdminAddr     = "127.0.0.1:9090"
	DefaultMaxBodyBytes  = 10 << 20
	DefaultMaxConns      = 256
	DefaultShutdownGrace = 20 * time.Second
	DefaultExpiryWarning = 30 * 24 * time.Hour
	DefaultReload        = 30 * time.Second
	DefaultSkew          = 30 * time.Second
	DefaultMaxWait       = 10 * time.Second
	DefaultFetchTimeout  = 30 * time.Second
	DefaultTokenTTL      = 5 * time.Minute
	DefaultUpstream      = 30 * time.Second
	DefaultDial          = 10 * time.Second
)

// Config is the whole configuration file.
type Config struct {
	Listen Listen `yaml:"listen"`
	// ShutdownGrace is how long SIGTERM waits for in-flight requests.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// CertificateExpiryWarning logs a warning for any certificate that
	// expires within this window (checked at start-up and hourly).
	CertificateExpiryWarning time.Duration `yaml:"certificate_expiry_warning"`
	Log                      Log           `yaml:"log"`
	// Callers are the identities apps present in Proxy-Authorization (Basic)
	// when a gateway shares tokenproxy between apps; routes name them in allow.callers.
	Callers []Caller `yaml:"callers"`
	// Consents is the consent API and store of authorization_code routes.
	Consents *Consents `yaml:"consents"`
	// Vault, when set, is the Vault server secrets, certificates and signing
	// keys can come from.
	Vault  *Vault  `yaml:"vault"`
	Routes []Route `yaml:"routes"`
	// Interception is the CA for CONNECT tunnels to intercepting routes (see intercept.go).
	Interception *Interception `yaml:"interception"`
	// Store shares tokens and the token budget between replicas (see store.go).
	Store Store `yaml:"store"`
	// Admin and Reload: reloading the configuration without a restart (see reload.go).
	Admin  Admin  `yaml:"admin"`
	Reload Reload `yaml:"reload"`
}

// Caller is one app allowed to use a shared gateway, by name and password.
type Caller struct {
	Name     string     `yaml:"name"`
	Password secret.Ref `yaml:"password"`
	// Certificate identifies the caller by client certificate on a TLS proxy listener.
	Certificate *CallerCertificate `yaml:"certificate"`
}

// Allow restricts who may use a route: the source address must be in one of
// CIDRs (when given) and the caller must authenticate as one of Callers
// (when given). Required on every route when the proxy listens beyond loopback.
type Allow struct {
	CIDRs   []string `yaml:"cidrs"`
	Callers []string `yaml:"callers"`
}

// Listen holds the listener addresses.
type Listen struct {
	// Proxy is the forward-proxy address apps name in HTTP_PROXY; "off" disables it.
	Proxy string `yaml:"proxy"`
	// Admin serves /healthz, /readyz and /metrics; "off" disables it.
	Admin string `yaml:"admin"`
	// AllowNonLoopback must be true to listen beyond loopback (gateway mode).
	AllowNonLoopback bool `yaml:"allow_non_loopback"`
	// ProxyTLS makes the proxy listener an HTTPS proxy (see intercept.go).
	ProxyTLS *ProxyTLS `yaml:"proxy_tls"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// Route is one upstream API.
type Route struct {
	Name string `yaml:"name"`
	// Preset fills in the URLs of a known API (see Presets).
	Preset string `yaml:"preset"`
	// Hosts are the host names apps call; requests for them use this route.
	Hosts []string `yaml:"hosts"`
	// Upstream is the API's base URL; always https.
	Upstream string `yaml:"upstream"`
	// Listen, if set, is a local address bound to this route alone.
	Listen string `yaml:"listen"`
	// MaxBodyBytes limits request bodies (413 past it).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// TracePropagation sends the request's W3C trace context (traceparent,
	// tracestate) upstream; off by default, the app's are then dropped.
	TracePropagation bool `yaml:"trace_propagation"`
	// MaxConnections caps concurrent connections to the upstream host;
	// requests beyond it wait for a free connection.
	MaxConnections int               `yaml:"max_connections"`
	TLS            TLS               `yaml:"tls"`
	ClientCert     ClientCertificate `yaml:"client_certificate"`
	Token          *Token            `yaml:"token"`
	Timeouts       Timeouts          `yaml:"timeouts"`
	// Allow restricts which callers may use the route (gateway mode).
	Allow *Allow `yaml:"allow"`
	// Subjects: how the app names the customer (authorization_code routes).
	Subjects *Subjects `yaml:"subjects"`
	// Signing, when set, signs every request on the route.
	Signing *Signing `yaml:"signing"`
	// Check configures the probe request of `tokenproxy check`.
	Check Check `yaml:"check"`
	// Intercept terminates CONNECT tunnels to the route's hosts (see intercept.go).
	Intercept bool `yaml:"intercept"`
	// FrequencyPerDay, when set, caps a consent's unattended calls per bank
	// day (a Berlin Group consent's frequencyPerDay; see frequency.go).
	FrequencyPerDay *FrequencyPerDay `yaml:"frequency_per_day"`
}

// Signing is a route's request-signing block: the signer's options (profile,
// algorithm, key_id, ...) and where the signing key and certificate (the
// QSealC, apart from the TLS client certificate) come from.
type Signing struct {
	SigningOptions `yaml:",inline"`
	// Key is the signing key and its certificate, loaded and rotated like a
	// client certificate.
	Key ClientCertificate `yaml:"key"`
}

// Check is the probe request `tokenproxy check` sends through the route.
type Check struct {
	// Path is requested with GET (with the token attached); presets give one.
	Path string `yaml:"path"`
}

// TLS configures how the upstream's certificate is verified.
type TLS struct {
	// CAFile is a PEM bundle of CAs trusted for the upstream; system roots when empty.
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name verified in the upstream's certificate.
	ServerName string `yaml:"server_name"`
}

// ClientCertificate is the certificate presented to the upstream (mTLS).
type ClientCertificate struct {
	PKCS12 *PKCS12 `yaml:"pkcs12"`
	PEM    *PEM    `yaml:"pem"`
	// VaultKV is a PFX (base64) and passcode, or a PEM certificate and key, in Vault KV v2.
	VaultKV *VaultKV `yaml:"vault_kv"`
	// VaultPKI issues a short-lived certificate from Vault's PKI engine and renews it.
	VaultPKI *VaultPKI `yaml:"vault_pki"`
	// VaultTransit keeps the private key in Vault Transit (never readable); the
	// certificate comes from KV or from Transit.
	VaultTransit *VaultTransit `yaml:"vault_transit"`
	// ReloadInterval is how often the files are checked for a rotation.
	ReloadInterval time.Duration `yaml:"reload_interval"`

	// InCode, set in code (the demo, tests) and never in a file, names a
	// certificate source the route builder is given.
	InCode string `yaml:"-"`
}

// Kinds of certificate block, as Kind names them (each is also the block's key).
const (
	CertInCode       = "in_code"
	CertPKCS12       = "pkcs12"
	CertPEM          = "pem"
	CertVaultKV      = "vault_kv"
	CertVaultPKI     = "vault_pki"
	CertVaultTransit = "vault_transit"
)

// Kind says where the certificate comes from: one of the Cert* constants,
// "" when the block is empty, or "several" when more than one is set.
func (cc ClientCertificate) Kind() string {
	kind := ""
	for _, k := range []struct {
		name string
		set  bool
	}{{CertInCode, cc.InCode != ""}, {CertPKCS12, cc.PKCS12 != nil}, {CertPEM, cc.PEM != nil},
		{CertVaultKV, cc.VaultKV != nil}, {CertVaultPKI, cc.VaultPKI != nil}, {CertVaultTransit, cc.VaultTransit != nil}} {
		switch {
		case !k.set:
		case kind == "":
			kind = k.name
		default:
			return "several"
		}
	}
	return kind
}

// PKCS12 is a .pfx/.p12 file and its passcode.
type PKCS12 struct {
	File     string     `yaml:"file"`
	Passcode secret.Ref `yaml:"passcode"`
}

// PEM is a certificate (with chain) and its private key.
type PEM struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Token configures how the route's bearer token is obtained.
type Token struct {
	// Type is the token flow: basic-get (Banking Circle), client_credentials
	// or authorization_code.
	Type string `yaml:"type"`
	// URL is the authorization (token) endpoint.
	URL      string     `yaml:"url"`
	Username secret.Ref `yaml:"username"`
	Password secret.Ref `yaml:"password"`
	// Skew is how long before expiry a token stops being reused.
	Skew time.Duration `yaml:"skew"`
	// MaxWait is how long a request may wait for a token before a 503.
	MaxWait time.Duration `yaml:"max_wait"`
	// FetchTimeout bounds one token request.
	FetchTimeout time.Duration `yaml:"fetch_timeout"`
	// DefaultTTL applies when the endpoint's answer has no expires_in.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	RateLimit  RateLimit     `yaml:"rate_limit"`
	// OAuthToken holds the client_credentials and authorization_code fields.
	OAuthToken `yaml:",inline"`
}

// RateLimit is the token-request budget for the route's authorization host,
// shared by every route that uses the same host.
type RateLimit struct {
	RequestsPerMinute int `yaml:"requests_per_minute"`
	Burst             int `yaml:"burst"`
	// Margin lengthens the provider's minute for each request (connection
	// set-up, clock granularity); see tokencache/window.go.
	Margin time.Duration `yaml:"margin"`
}

// Timeouts bound the upstream exchange.
type Timeouts struct {
	// Upstream bounds the wait for the upstream's response headers (504 past it).
	Upstream time.Duration `yaml:"upstream"`
	// Dial bounds the TCP connect and the TLS handshake (502 past it).
	Dial time.Duration `yaml:"dial"`
}
