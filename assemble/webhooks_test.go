package assemble

import (
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// The configuration's delivery defaults (config/defaults.go, what
// `validate` and the docs show) are the dispatcher's own defaults.
func TestWebhookDefaultsAgree(t *testing.T) {
	for _, tc := range []struct {
		name        string
		config, own time.Duration
	}{
		{"timeout", config.DefaultWebhookTimeout, webhook.DefaultTimeout},
		{"poll", config.DefaultWebhookPoll, webhook.DefaultPoll},
		{"lease", config.DefaultWebhookLease, webhook.DefaultLease},
		{"backoff", config.DefaultWebhookBackoff, webhook.DefaultBackoff},
		{"max backoff", config.DefaultWebhookMaxBackoff, webhook.DefaultMaxBackoff},
		{"max age", config.DefaultWebhookMaxAge, webhook.DefaultMaxAge},
		{"retention", config.DefaultWebhookRetention, webhook.DefaultRetention},
		{"batch", config.DefaultWebhookBatch, webhook.DefaultBatch},
	} {
		if tc.config != tc.own {
			t.Errorf("%s: config default %v, dispatcher default %v", tc.name, tc.config, tc.own)
		}
	}
}
