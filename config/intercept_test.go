package config

import (
	"strings"
	"testing"
	"time"
)

const intercepting = bankingCircle + "    intercept: true\n"

func TestInterceptionErrors(t *testing.T) {
	gen := "interception:\n  ca: {generate: {write_cert_to: /var/run/tokenproxy/ca.crt}}\n"
	tests := []struct {
		name string
		yaml string
		want []string // "" means valid
	}{
		{"intercepting route without a CA", intercepting, []string{"interception: missing; a route has intercept: true", "generate"}},
		{"generated CA", gen + intercepting, nil},
		{"two CA sources", "interception:\n  ca: {generate: {write_cert_to: /x}, files: {cert_file: /a, key_file: /b}}\n" + intercepting,
			[]string{"interception.ca: set exactly one of files, vault_pki or generate (found 2)"}},
		{"no CA source", "interception: {ca: {}}\n" + intercepting, []string{"interception.ca: set exactly one", "(found 0)"}},
		{"files without a key", "interception:\n  ca: {files: {cert_file: /a}}\n" + intercepting, []string{"interception.ca.files: set both cert_file and key_file"}},
		{"generate without a path", "interception:\n  ca: {generate: {}}\n" + intercepting, []string{"interception.ca.generate.write_cert_to: missing"}},
		{"vault_pki without role or vault", "interception:\n  ca: {vault_pki: {mount: pki}}\n" + intercepting,
			[]string{"interception.ca.vault_pki.role: missing", "vault: missing; interception.ca.vault_pki signs with Vault"}},
		{"short leaf", gen + "  leaf_ttl: 1m\n" + intercepting, []string{"interception.leaf_ttl: 1m0s is too short; use at least 10m"}},
		{"negative cache", gen + "  cache_size: -1\n" + intercepting, []string{"interception: cache_size, issue_rate"}},
		{"intercepting route without hosts", gen + "routes:\n  - name: api\n    upstream: https://api.example\n    listen: 127.0.0.1:9001\n    intercept: true\n",
			[]string{"routes[0](api).intercept: route api intercepts but names no hosts"}},
		{"proxy_tls without a key", "listen: {proxy_tls: {cert_file: /a}}\n" + bankingCircle, []string{"listen.proxy_tls: set both cert_file and key_file"}},
		{"certificate caller without a TLS listener", "callers: [{name: app, certificate: {subject: app}}]\n" + bankingCircle,
			[]string{"callers[0].certificate: client certificates are only read on a TLS proxy listener"}},
		{"certificate caller with both identities", "listen: {proxy_tls: {cert_file: /a, key_file: /b, client_ca_file: /c}}\ncallers: [{name: app, certificate: {subject: app, spiffe_id: spiffe://x/y}}]\n" + bankingCircle,
			[]string{"callers[0].certificate: set exactly one of subject"}},
		{"certificate caller needs no password", "listen: {proxy_tls: {cert_file: /a, key_file: /b, client_ca_file: /c}}\ncallers: [{name: app, certificate: {spiffe_id: spiffe://x/y}}]\n" + bankingCircle, nil},
		{"password caller still needs a password", "callers: [{name: app}]\n" + bankingCircle, []string{"callers[0].password"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestInterceptionDefaults(t *testing.T) {
	cfg, err := Parse([]byte("listen: {proxy_tls: {cert_file: /a, key_file: /b}}\ninterception:\n  ca: {files: {cert_file: /a, key_file: /b}}\n" + intercepting))
	if err != nil {
		t.Fatal(err)
	}
	ic := cfg.Interception
	if ic.LeafTTL != DefaultLeafTTL || ic.CacheSize != DefaultLeafCacheSize || ic.IssueRate != DefaultLeafIssueRate ||
		ic.IssueBurst != DefaultLeafIssueBurst || ic.PollInterval != DefaultCAPollInterval || ic.CA.Files.ReloadInterval != DefaultCAReloadInterval {
		t.Fatalf("defaults not applied: %+v %+v", ic, ic.CA.Files)
	}
	if cfg.Listen.ProxyTLS.ReloadInterval != 30*time.Second || !cfg.Routes[0].Intercept || !cfg.Intercepts() {
		t.Fatalf("proxy_tls or route: %+v %+v", cfg.Listen.ProxyTLS, cfg.Routes[0])
	}
}
