package config

import (
	"testing"
	"time"
)

// Every default is filled here, Vault blocks included, so the builders
// receive complete values.
func TestApplyDefaultsFillsVaultBlocks(t *testing.T) {
	cfg, err := Decode([]byte(`
vault:
  address: https://vault:8200
  auth: {method: kubernetes, kubernetes: {role: tokenproxy}}
routes:
  - name: bank
    hosts: [bank.example]
    upstream: https://bank.example
    client_certificate: {vault_kv: {path: tp/client}}
    signing:
      profile: berlin-group
      key: {vault_transit: {key: {key: qseal}, certificate: {path: tp/qseal, field: certificate}}}
    token: {type: basic-get, url: https://bank.example/token, username: {env: U}, password: {env: P}}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	r := cfg.Routes[0]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"vault.timeout", cfg.Vault.Timeout, DefaultVaultTimeout},
		{"vault.auth.kubernetes.mount", cfg.Vault.Auth.Kubernetes.Mount, DefaultKubernetesMount},
		{"vault.auth.kubernetes.jwt_file", cfg.Vault.Auth.Kubernetes.JWTFile, DefaultKubernetesJWTFile},
		{"vault_kv.mount", r.ClientCert.VaultKV.Mount, DefaultKVMount},
		{"vault_kv.poll_interval", r.ClientCert.VaultKV.PollInterval, DefaultVaultPollInterval},
		{"vault_transit.key.mount", r.Signing.Key.VaultTransit.Key.Mount, DefaultTransitMount},
		{"vault_transit.certificate.mount", r.Signing.Key.VaultTransit.Certificate.Mount, DefaultKVMount},
		{"token.rate_limit.requests_per_minute", r.Token.RateLimit.RequestsPerMinute, DefaultRequestsPerMinute},
		{"token.rate_limit.burst", r.Token.RateLimit.Burst, DefaultBurst},
		{"token.skew", r.Token.Skew, time.Duration(DefaultSkew)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultBurstCoversOneConsent: the default token budget lets one
// consent's requests to the authorization host through back to back (PAR,
// the code exchange, its DPoP nonce retry); an explicit burst, and the
// per-minute budget, still win.
func TestDefaultBurstCoversOneConsent(t *testing.T) {
	for _, tc := range []struct {
		name string
		tok  Token
		want int
	}{
		{"client credentials", Token{Type: TokenClientCredentials}, DefaultBurst},
		{"authorization code", Token{Type: TokenAuthorizationCode}, DefaultBurst},
		{"PAR", Token{Type: TokenAuthorizationCode, OAuthToken: OAuthToken{FAPI: FAPI{PAR: true}}}, 2},
		{"fapi2 with DPoP", Token{Type: TokenAuthorizationCode, OAuthToken: OAuthToken{FAPI: FAPI{Profile: ProfileFAPI2}, DPoP: &DPoPConfig{}}}, 3},
		{"DPoP without PAR", Token{Type: TokenAuthorizationCode, OAuthToken: OAuthToken{DPoP: &DPoPConfig{}}}, 2},
		{"explicit burst", Token{Type: TokenAuthorizationCode, OAuthToken: OAuthToken{FAPI: FAPI{Profile: ProfileFAPI2}, DPoP: &DPoPConfig{}}, RateLimit: RateLimit{Burst: 1}}, 1},
		{"small budget", Token{Type: TokenAuthorizationCode, OAuthToken: OAuthToken{FAPI: FAPI{Profile: ProfileFAPI2}, DPoP: &DPoPConfig{}}, RateLimit: RateLimit{RequestsPerMinute: 2}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok
			c := &Config{Routes: []Route{{Name: "r", Token: &tok}}}
			c.ApplyDefaults()
			if got := c.Routes[0].Token.RateLimit.Burst; got != tc.want {
				t.Errorf("burst %d, want %d", got, tc.want)
			}
		})
	}
}
