package config

import (
	"slices"
	"strings"
	"testing"
)

const webhookBlock = `  webhooks:
    - url: https://app.example/hooks/consents
      secret: {env: TOKENPROXY_WEBHOOK_SECRET}
`

func TestWebhookDefaults(t *testing.T) {
	cfg, err := Parse([]byte(stetRoute + webhookBlock))
	if err != nil {
		t.Fatal(err)
	}
	cs := cfg.Consents
	if !slices.Equal(cs.Webhooks[0].Events, DefaultWebhookEvents) || slices.Contains(cs.Webhooks[0].Events, "consent.refreshed") {
		t.Fatalf("default events %v", cs.Webhooks[0].Events)
	}
	d := cs.WebhookDelivery
	if d.Timeout != DefaultWebhookTimeout || d.Lease != DefaultWebhookLease || d.MaxAge != DefaultWebhookMaxAge ||
		d.Retention != DefaultWebhookRetention || d.Batch != DefaultWebhookBatch || d.Backoff != DefaultWebhookBackoff {
		t.Fatalf("delivery defaults %+v", d)
	}
}

func TestWebhookErrors(t *testing.T) {
	rep := func(old, repl string) string { return stetRoute + strings.Replace(webhookBlock, old, repl, 1) }
	for _, tc := range []struct{ name, yaml, want string }{
		{"plain http", rep("https://app.example", "http://app.example"), `consents.webhooks[0].url: "http://app.example/hooks/consents" must be https://`},
		{"no url", rep("url: https://app.example/hooks/consents", "url: ''"), "consents.webhooks[0].url: missing"},
		{"no secret", rep("      secret: {env: TOKENPROXY_WEBHOOK_SECRET}\n", ""), "consents.webhooks[0].secret: missing"},
		{"unknown event", rep("      secret:", "      events: [consent.created]\n      secret:"), `consents.webhooks[0].events[0]: "consent.created" is not an event`},
		{"vault_kv", "vault: {address: https://vault.example:8200, auth: {method: token, token: {file: /t}}}\n" +
			strings.Replace(stetRoute, "bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}", "vault_kv: {path: tokenproxy/consents}", 1) + webhookBlock, "consents.webhooks: the vault_kv consent store keeps no event outbox"},
		{"short retention", stetRoute + webhookBlock + "  webhook_delivery: {retention: 240h}\n", "consents.webhook_delivery.retention: 240h0m0s must exceed twice consents.expiring_within"},
		{"lease under timeout", stetRoute + webhookBlock + "  webhook_delivery: {timeout: 30s, lease: 10s}\n", "consents.webhook_delivery.lease: 10s must exceed timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"http://127.0.0.1:8080/hooks", "http://localhost/hooks", "http://[::1]:9000/h"} {
		if _, err := Parse([]byte(rep("https://app.example/hooks/consents", ok))); err != nil {
			t.Fatalf("%s: %v", ok, err)
		}
	}
}
