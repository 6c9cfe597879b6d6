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
