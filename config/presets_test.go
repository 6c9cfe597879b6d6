package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// MaxPresetRouteLines is the most lines of YAML a bank's route takes with its preset.
const maxPresetRouteLines = 12

// Every preset's starter configuration is valid as written, and its route
// stays within 12 lines of YAML.
func TestStarterConfigsValidate(t *testing.T) {
	for _, name := range PresetNames() {
		t.Run(name, func(t *testing.T) {
			yaml, err := StarterConfig(name)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse([]byte(yaml))
			if err != nil {
				t.Fatalf("%v\n%s", err, yaml)
			}
			if r := cfg.Routes[0]; r.Preset != name {
				t.Fatalf("route preset %q", r.Preset)
			}
			if n := YAMLLines(Presets[name].Starter.Route); n > maxPresetRouteLines {
				t.Errorf("the route takes %d lines of YAML; at most %d", n, maxPresetRouteLines)
			}
			if len(Presets[name].Starter.Fill) == 0 {
				t.Error("the starter says nothing to fill in")
			}
		})
	}
}

func TestStarterConfigUnknownPreset(t *testing.T) {
	_, err := StarterConfig("bpce")
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`unknown preset "bpce"`, "bankingcircle-sandbox", "bpce-sandbox", "berlingroup", "banqware-psd2hub"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestYAMLLines(t *testing.T) {
	if n := YAMLLines("  - name: a   # c\n\n    # only a comment\n    preset: b\n"); n != 2 {
		t.Fatalf("YAMLLines = %d; want 2", n)
	}
}

// What each preset fills, and that a field the route sets beats the preset's.
func TestPresetApplication(t *testing.T) {
	const certs = "    client_certificate: {pem: {cert_file: q.crt, key_file: q.key}}\n"
	const seal = "    signing: {key: {pem: {cert_file: s.crt, key_file: s.key}}}\n"
	tests := []struct {
		name  string
		route string
		check func(t *testing.T, r Route)
	}{
		{"bpce-sandbox fills the seed's URLs, flow and signing", "    preset: bpce-sandbox\n" + certs + seal + "    token: {client_id: PSDFR-ACPR-13807}\n",
			func(t *testing.T, r Route) {
				want := Route{Upstream: "https://www.13807.sandbox.api.89C3.com", Hosts: []string{"www.13807.sandbox.api.89c3.com"}}
				if r.Upstream != want.Upstream || !reflect.DeepEqual(r.Hosts, want.Hosts) {
					t.Errorf("upstream %q hosts %v", r.Upstream, r.Hosts)
				}
				tk := r.Token
				if tk.Type != TokenAuthorizationCode || tk.URL != "https://www.13807.sandbox.api.89C3.com/stet/psd2/oauth/token" ||
					tk.AuthorizeURL != "https://www.13807.sandbox.api.89C3.com/stet/psd2/oauth/authorize" || tk.AuthMethod != "tls_client_auth" ||
					!reflect.DeepEqual(tk.Scopes, []string{"AISP"}) || tk.RefreshTTL != 90*24*time.Hour {
					t.Errorf("token %+v", tk)
				}
				if s := r.Signing; s.Profile != "stet" || s.KeyID != "{public_key}" {
					t.Errorf("signing %+v", s.SigningOptions)
				}
			}},
		{"explicit fields beat bpce-sandbox's", "    preset: bpce-sandbox\n" + certs +
			"    signing: {key_id: https://tpp.example/qsealc.pem, key: {pem: {cert_file: s.crt, key_file: s.key}}}\n" +
			"    hosts: [bpce.internal]\n" +
			"    token: {client_id: X, scopes: [aisp], url: https://auth.example/token, refresh_ttl: 24h}\n",
			func(t *testing.T, r Route) {
				if !reflect.DeepEqual(r.Hosts, []string{"bpce.internal"}) || r.Signing.KeyID != "https://tpp.example/qsealc.pem" ||
					!reflect.DeepEqual(r.Token.Scopes, []string{"aisp"}) || r.Token.URL != "https://auth.example/token" || r.Token.RefreshTTL != 24*time.Hour {
					t.Errorf("an explicit field lost: hosts %v key_id %q token %+v", r.Hosts, r.Signing.KeyID, r.Token)
				}
				if r.Token.AuthorizeURL != "https://www.13807.sandbox.api.89C3.com/stet/psd2/oauth/authorize" {
					t.Errorf("authorize_url %q", r.Token.AuthorizeURL)
				}
			}},
		{"a moved upstream takes bpce's token endpoints along", "    preset: bpce-sandbox\n    upstream: https://127.0.0.1:8443\n" + certs + seal + "    token: {client_id: X}\n",
			func(t *testing.T, r Route) {
				if r.Token.URL != "https://127.0.0.1:8443/stet/psd2/oauth/token" || r.Token.AuthorizeURL != "https://127.0.0.1:8443/stet/psd2/oauth/authorize" {
					t.Errorf("token %+v", r.Token)
				}
				if !reflect.DeepEqual(r.Hosts, []string{"www.13807.sandbox.api.89c3.com"}) {
					t.Errorf("hosts %v", r.Hosts)
				}
			}},
		{"bpce-production: hosts from the bank's upstream", "    preset: bpce-production\n    upstream: https://www.12345.api.bank.example\n" + certs + seal + "    token: {client_id: X}\n",
			func(t *testing.T, r Route) {
				if !reflect.DeepEqual(r.Hosts, []string{"www.12345.api.bank.example"}) || r.Token.URL != "https://www.12345.api.bank.example/stet/psd2/oauth/token" {
					t.Errorf("hosts %v token %+v", r.Hosts, r.Token)
				}
			}},
		{"another signing profile keeps its own options", "    preset: bpce-sandbox\n" + certs +
			"    signing: {profile: custom, key_id: k, headers: [digest], key: {pem: {cert_file: s.crt, key_file: s.key}}}\n    token: {client_id: X}\n",
			func(t *testing.T, r Route) {
				if r.Signing.Profile != "custom" || r.Signing.KeyID != "k" {
					t.Errorf("signing %+v", r.Signing.SigningOptions)
				}
			}},
		{"berlingroup signs with its profile", "    preset: berlingroup\n    upstream: https://psd2.bank.example\n" + certs + seal,
			func(t *testing.T, r Route) {
				if r.Signing.Profile != "berlin-group" || !reflect.DeepEqual(r.Hosts, []string{"psd2.bank.example"}) || r.Token != nil {
					t.Errorf("signing %+v hosts %v token %+v", r.Signing.SigningOptions, r.Hosts, r.Token)
				}
			}},
		{"banqware-psd2hub: client credentials", "    preset: banqware-psd2hub\n    token: {url: https://api.banqware.com/t, client_id: c, client_secret: {env: S}}\n",
			func(t *testing.T, r Route) {
				if r.Upstream != "https://api.banqware.com" || r.Token.Type != TokenClientCredentials || r.Token.AuthMethod != "client_secret_basic" || r.Signing != nil {
					t.Errorf("upstream %q token %+v", r.Upstream, r.Token)
				}
			}},
		{"explicit auth method beats the hub's", "    preset: banqware-psd2hub\n    token: {url: https://api.banqware.com/t, client_id: c, client_secret: {env: S}, auth_method: client_secret_post}\n",
			func(t *testing.T, r Route) {
				if r.Token.AuthMethod != "client_secret_post" {
					t.Errorf("auth_method %q", r.Token.AuthMethod)
				}
			}},
		{"another token type takes none of the preset's OAuth fields", "    preset: banqware-psd2hub\n    token: {type: basic-get, url: https://api.banqware.com/t, username: {env: U}, password: {env: P}}\n",
			func(t *testing.T, r Route) {
				if r.Token.Type != TokenBasicGet || r.Token.AuthMethod != "" || r.Token.URL != "https://api.banqware.com/t" {
					t.Errorf("token %+v", r.Token)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := "routes:\n  - name: bank\n" + tc.route
			if strings.Contains(tc.route, "authorization_code") || strings.Contains(tc.route, "bpce-") {
				yaml += "consents: {callback_url: https://tp.example/v1/callback, store: {bbolt: {path: c.db, key: {env: K}}}}\n"
			}
			cfg, err := Parse([]byte(yaml))
			if err != nil {
				t.Fatalf("%v\n%s", err, yaml)
			}
			tc.check(t, cfg.Routes[0])
		})
	}
}

func TestPresetErrors(t *testing.T) {
	tests := []struct{ name, route, want string }{
		{"bpce-production without upstream", "    preset: bpce-production\n    client_certificate: {pem: {cert_file: q.crt, key_file: q.key}}\n    signing: {key: {pem: {cert_file: s.crt, key_file: s.key}}}\n    token: {client_id: X}\n",
			"routes[0](bank).upstream: missing; preset bpce-production is for any bank of its kind"},
		{"berlingroup without QWAC", "    preset: berlingroup\n    upstream: https://psd2.bank.example\n    signing: {key: {pem: {cert_file: s.crt, key_file: s.key}}}\n",
			"routes[0](bank).client_certificate: missing; preset berlingroup requires the client certificate"},
		{"berlingroup without QSealC", "    preset: berlingroup\n    upstream: https://psd2.bank.example\n    client_certificate: {pem: {cert_file: q.crt, key_file: q.key}}\n",
			"routes[0](bank).signing.key: missing"},
		{"hub without its token endpoint", "    preset: banqware-psd2hub\n    token: {client_id: c, client_secret: {env: S}}\n",
			"routes[0](bank).token.url: missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := "routes:\n  - name: bank\n" + tc.route
			if strings.Contains(tc.route, "bpce-") {
				yaml += "consents: {callback_url: https://tp.example/v1/callback, store: {bbolt: {path: c.db, key: {env: K}}}}\n"
			}
			_, err := Parse([]byte(yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want %q", err, tc.want)
			}
		})
	}
}
