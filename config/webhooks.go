package config

import (
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Webhook is one of consents.webhooks: where consent events are POSTed,
// the secret that signs them, and the events wanted.
type Webhook struct {
	// URL is https://, or http:// to a loopback address.
	URL string `yaml:"url"`
	// Secret is the HMAC-SHA256 key of the Tokenproxy-Signature header.
	Secret secret.Ref `yaml:"secret"`
	// Events are the event types sent (default DefaultWebhookEvents).
	Events []string `yaml:"events"`
}

// WebhookDelivery is consents.webhook_delivery: how events are delivered.
type WebhookDelivery struct {
	// Timeout bounds one POST (connection to answer).
	Timeout time.Duration `yaml:"timeout"`
	// PollInterval is how often an idle replica looks for due events.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Lease is how long a replica keeps the events it claimed before
	// another may take them (a replica that died mid-delivery).
	Lease time.Duration `yaml:"lease"`
	// Batch is how many events one claim takes.
	Batch int `yaml:"batch"`
	// Backoff and MaxBackoff shape the retries: doubled per failure from
	// Backoff, capped at MaxBackoff, jittered.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// MaxAge: an event still undelivered this long after it happened is
	// given up (counted).
	MaxAge time.Duration `yaml:"max_age"`
	// Retention is how long delivered events are kept, so that an event
	// produced again (the expiry census on every replica) is sent once.
	Retention time.Duration `yaml:"retention"`
}

var webhookEvents = []string{"consent.active", "consent.refreshed", "consent.expiring", "consent.invalid", "consent.deleted"}

// webhooks checks consents.webhooks and consents.webhook_delivery.
func (v *validator) webhooks(cs *Consents) {
	if len(cs.Webhooks) == 0 {
		return
	}
	if cs.Store.VaultKV != nil {
		v.add("consents.webhooks", "the vault_kv consent store keeps no event outbox (Vault KV has no transaction across a consent and its event, and no claim a replica can lease): keep consents in bbolt or postgres to send webhooks, or remove consents.webhooks")
	}
	seen := map[string]int{}
	for i, w := range cs.Webhooks {
		p := fmt.Sprintf("consents.webhooks[%d]", i)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			v.add(p+".url", "missing; give the app's https:// endpoint for consent events")
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			v.add(p+".url", "%q must be an absolute https:// URL", w.URL)
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			v.add(p+".url", "%q must be https:// (plain http only to a loopback address such as http://127.0.0.1:8080/hooks: the event and its signature would cross the network in clear)", w.URL)
		case u.User != nil:
			v.add(p+".url", "holds user information; the signature authenticates tokenproxy, remove the user:password@ part")
		}
		if j, dup := seen[w.URL]; dup && w.URL != "" {
			v.add(p+".url", "%q is also consents.webhooks[%d]; list each endpoint once with all its events", w.URL, j)
		}
		seen[w.URL] = i
		if err := w.Secret.Validate(p + ".secret"); err != nil {
			v.errs = append(v.errs, err)
		}
		if w.Events != nil && len(w.Events) == 0 {
			v.add(p+".events", "empty; list the events wanted, or remove events: for all but consent.refreshed")
		}
		for j, e := range w.Events {
			if !slices.Contains(webhookEvents, e) {
				v.add(fmt.Sprintf("%s.events[%d]", p, j), "%q is not an event; use one of %v", e, webhookEvents)
			}
		}
	}
	d := cs.WebhookDelivery
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"timeout", d.Timeout}, {"poll_interval", d.PollInterval}, {"lease", d.Lease}, {"backoff", d.Backoff},
		{"max_backoff", d.MaxBackoff}, {"max_age", d.MaxAge}, {"retention", d.Retention}} {
		if f.v < 0 {
			v.add("consents.webhook_delivery."+f.name, "must not be negative (0 takes the default)")
		}
	}
	if d.Batch < 0 || d.Batch > 1000 {
		v.add("consents.webhook_delivery.batch", "%d must be between 1 and 1000 (0 takes the default)", d.Batch)
	}
	if d.MaxBackoff > 0 && d.Backoff > d.MaxBackoff {
		v.add("consents.webhook_delivery.max_backoff", "%s is below backoff (%s); raise it", d.MaxBackoff, d.Backoff)
	}
	if d.Lease > 0 && d.Lease <= d.Timeout {
		v.add("consents.webhook_delivery.lease", "%s must exceed timeout (%s), or another replica takes events still being delivered", d.Lease, d.Timeout)
	}
	if d.Retention > 0 && d.Retention <= 2*cs.ExpiringWithin {
		v.add("consents.webhook_delivery.retention", "%s must exceed twice consents.expiring_within (%s): delivered expiry events are kept that long so that the census, run every %s on every replica, sends each once", d.Retention, 2*cs.ExpiringWithin, cs.CensusInterval)
	}
	if d.MaxAge > 0 && d.Retention > 0 && d.MaxAge >= d.Retention {
		v.add("consents.webhook_delivery.max_age", "%s must be below retention (%s)", d.MaxAge, d.Retention)
	}
}

// webhooksUseVault reports whether a webhook's secret is in Vault.
func (cs *Consents) webhooksUseVault() bool {
	for _, w := range cs.Webhooks {
		if w.Secret.Vault != nil {
			return true
		}
	}
	return false
}
