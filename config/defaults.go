package config

import (
	"net/http"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Defaults of the Vault blocks.
const (
	DefaultVaultTimeout      = 10 * time.Second
	DefaultVaultPollInterval = 30 * time.Second
	DefaultPKIRetryInterval  = 10 * time.Second
	DefaultKVMount           = "secret"
	DefaultPKIMount          = "pki"
	DefaultTransitMount      = "transit"
	DefaultAppRoleMount      = "approle"
	DefaultKubernetesMount   = "kubernetes"
	DefaultKubernetesJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultRequestsPerMinute = 6 // token requests per minute per authorization host
	DefaultBurst             = 2
)

// ApplyDefaults fills in presets and defaults.
func (c *Config) ApplyDefaults() {
	c.applyReloadDefaults()
	if c.Listen.Proxy == "" {
		c.Listen.Proxy = DefaultProxyAddr
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = DefaultAdminAddr
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.CertificateExpiryWarning == 0 {
		c.CertificateExpiryWarning = DefaultExpiryWarning
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Vault != nil {
		c.Vault.applyDefaults()
	}
	if c.Interception != nil {
		c.Interception.applyDefaults()
	}
	if c.Listen.ProxyTLS != nil {
		c.Listen.ProxyTLS.applyDefaults()
	}
	c.Store.applyDefaults()
	for i := range c.Routes {
		r := &c.Routes[i]
		r.applyPreset()
		for j, h := range r.Hosts {
			r.Hosts[j] = strings.ToLower(strings.TrimSuffix(h, "."))
		}
		if r.MaxBodyBytes == 0 {
			r.MaxBodyBytes = DefaultMaxBodyBytes
		}
		if r.MaxConnections == 0 {
			r.MaxConnections = DefaultMaxConns
		}
		if r.ClientCert.ReloadInterval == 0 {
			r.ClientCert.ReloadInterval = DefaultReload
		}
		if r.Signing != nil && r.Signing.Key.ReloadInterval == 0 {
			r.Signing.Key.ReloadInterval = DefaultReload
		}
		if r.Timeouts.Upstream == 0 {
			r.Timeouts.Upstream = DefaultUpstream
		}
		if r.Timeouts.Dial == 0 {
			r.Timeouts.Dial = DefaultDial
		}
		r.ClientCert.applyDefaults()
		if r.FrequencyPerDay != nil {
			r.FrequencyPerDay.applyDefaults()
		}
		if r.Signing != nil {
			r.Signing.Key.applyDefaults()
		}
		if t := r.Token; t != nil {
			if t.Skew == 0 {
				t.Skew = DefaultSkew
			}
			if t.MaxWait == 0 {
				t.MaxWait = DefaultMaxWait
			}
			if t.FetchTimeout == 0 {
				t.FetchTimeout = DefaultFetchTimeout
			}
			if t.DefaultTTL == 0 {
				t.DefaultTTL = DefaultTokenTTL
			}
			if t.RateLimit.RequestsPerMinute == 0 {
				t.RateLimit.RequestsPerMinute = DefaultRequestsPerMinute
			}
			if t.RateLimit.Burst == 0 {
				// A burst that lets one consent through: PAR, the code
				// exchange and its DPoP nonce retry come back to back.
				t.RateLimit.Burst = min(max(DefaultBurst, t.consentRequests()), t.RateLimit.RequestsPerMinute)
			}
			if t.RateLimit.Margin == 0 {
				t.RateLimit.Margin = DefaultRateMargin
			}
		}
	}
	c.applyOAuthDefaults()
}

func (v *Vault) applyDefaults() {
	if v.Timeout == 0 {
		v.Timeout = DefaultVaultTimeout
	}
	if a := v.Auth.AppRole; a != nil && a.Mount == "" {
		a.Mount = DefaultAppRoleMount
	}
	if k := v.Auth.Kubernetes; k != nil {
		if k.Mount == "" {
			k.Mount = DefaultKubernetesMount
		}
		if k.JWTFile == "" {
			k.JWTFile = DefaultKubernetesJWTFile
		}
	}
}

func (cc *ClientCertificate) applyDefaults() {
	if kv := cc.VaultKV; kv != nil {
		if kv.Mount == "" {
			kv.Mount = DefaultKVMount
		}
		if kv.PollInterval == 0 {
			kv.PollInterval = DefaultVaultPollInterval
		}
	}
	if p := cc.VaultPKI; p != nil {
		if p.Mount == "" {
			p.Mount = DefaultPKIMount
		}
		if p.RetryInterval == 0 {
			p.RetryInterval = DefaultPKIRetryInterval
		}
	}
	if t := cc.VaultTransit; t != nil {
		if t.Key.Mount == "" {
			t.Key.Mount = DefaultTransitMount
		}
		if t.Certificate != (secret.VaultRef{}) && t.Certificate.Mount == "" {
			t.Certificate.Mount = DefaultKVMount
		}
		if t.PollInterval == 0 {
			t.PollInterval = DefaultVaultPollInterval
		}
	}
}

// Defaults of a route's frequency_per_day: block.
const (
	// DefaultFrequencyLimit is the usual frequencyPerDay of a Berlin Group
	// consent: four accesses a day without the customer (PSD2 RTS art. 36(5)).
	DefaultFrequencyLimit = 4
	// DefaultFrequencyTimeZone is where the bank's day starts and ends.
	DefaultFrequencyTimeZone = "Europe/Berlin"
	// DefaultAttendedHeader marks a call the customer is present for.
	DefaultAttendedHeader = "PSU-IP-Address"
)

// DefaultFrequencyMethods are the methods that count: AIS reads.
var DefaultFrequencyMethods = []string{http.MethodGet}

// applyDefaults fills a frequency_per_day: block: four calls a day, the
// bank's day in Europe/Berlin, GET requests count, PSU-IP-Address marks
// an attended call.
func (f *FrequencyPerDay) applyDefaults() {
	if f.Limit == 0 {
		f.Limit = DefaultFrequencyLimit
	}
	if f.TimeZone == "" {
		f.TimeZone = DefaultFrequencyTimeZone
	}
	if len(f.Methods) == 0 {
		f.Methods = append([]string(nil), DefaultFrequencyMethods...)
	}
	for i, m := range f.Methods {
		f.Methods[i] = strings.ToUpper(m)
	}
	if f.AttendedHeader == "" {
		f.AttendedHeader = DefaultAttendedHeader
	}
}

// Defaults of consents.webhook_delivery.
const (
	DefaultWebhookTimeout    = 10 * time.Second
	DefaultWebhookPoll       = time.Second
	DefaultWebhookLease      = 30 * time.Second
	DefaultWebhookBatch      = 20
	DefaultWebhookBackoff    = time.Second
	DefaultWebhookMaxBackoff = 5 * time.Minute
	DefaultWebhookMaxAge     = 72 * time.Hour
	DefaultWebhookRetention  = 30 * 24 * time.Hour
)

// DefaultWebhookEvents are the events a webhook without events: gets:
// all but consent.refreshed (one per refresh, seldom wanted).
var DefaultWebhookEvents = []string{"consent.active", "consent.expiring", "consent.invalid", "consent.deleted"}

// applyWebhookDefaults fills consents.webhooks[].events and
// consents.webhook_delivery.
func (cs *Consents) applyWebhookDefaults() {
	for i := range cs.Webhooks {
		if cs.Webhooks[i].Events == nil {
			cs.Webhooks[i].Events = append([]string(nil), DefaultWebhookEvents...)
		}
	}
	d := &cs.WebhookDelivery
	for _, f := range []struct {
		p *time.Duration
		v time.Duration
	}{{&d.Timeout, DefaultWebhookTimeout}, {&d.PollInterval, DefaultWebhookPoll}, {&d.Lease, DefaultWebhookLease},
		{&d.Backoff, DefaultWebhookBackoff}, {&d.MaxBackoff, DefaultWebhookMaxBackoff}, {&d.MaxAge, DefaultWebhookMaxAge},
		{&d.Retention, DefaultWebhookRetention}} {
		if *f.p == 0 {
			*f.p = f.v
		}
	}
	if d.Batch == 0 {
		d.Batch = DefaultWebhookBatch
	}
}
