package config

import (
	"strings"
	"testing"
	"time"
)

// fapiRoute is a FAPI 2.0 authorization_code route that validates.
const fapiRoute = `
routes:
  - name: psd2
    hosts: [api.bank.example]
    upstream: https://api.bank.example
    client_certificate: {pem: {cert_file: qwac.pem, key_file: qwac.key}}
    token:
      type: authorization_code
      profile: fapi2
      issuer: https://auth.bank.example
      discovery: true
      client_id: tpp-1
      auth_method: private_key_jwt
      private_key: {file: client-key.pem}
      certificate_bound: true
      scopes: [accounts]
consents:
  callback_url: https://tokenproxy.example/v1/callback
  store:
    bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}
`

func TestFAPIDefaults(t *testing.T) {
	cfg, err := Parse([]byte(fapiRoute))
	if err != nil {
		t.Fatal(err)
	}
	tok := cfg.Routes[0].Token
	if !tok.PAR || !tok.PKCE || !tok.IsFAPI2() || tok.DiscoveryRefresh != time.Hour {
		t.Fatalf("fapi2 defaults: par %v pkce %v refresh %v", tok.PAR, tok.PKCE, tok.DiscoveryRefresh)
	}
	cfg, err = Parse([]byte(strings.Replace(fapiRoute, "certificate_bound: true", "dpop: {private_key: {file: dpop.pem}, algorithm: ES256}", 1)))
	if err != nil {
		t.Fatalf("fapi2 with dpop: %v", err)
	}
	if d := cfg.Routes[0].Token.DPoP; d == nil || d.PrivateKey.File != "dpop.pem" || d.Algorithm != AlgES256 {
		t.Fatalf("dpop = %+v", d)
	}
}

func TestFAPIErrors(t *testing.T) {
	rep := func(old, repl string) string {
		if !strings.Contains(fapiRoute, old) {
			t.Fatalf("%q is not in the route", old)
		}
		return strings.Replace(fapiRoute, old, repl, 1)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown profile", rep("profile: fapi2", "profile: fapi1"), `token.profile: "fapi1" is not a profile`},
		{"fapi2 without issuer", rep("      issuer: https://auth.bank.example\n      discovery: true\n", "      url: https://auth.bank.example/token\n      authorize_url: https://auth.bank.example/authorize\n      par_url: https://auth.bank.example/par\n"),
			"token.issuer: missing; token.profile fapi2 checks the iss"},
		{"fapi2 without sender constraint", rep("      certificate_bound: true\n", ""), "token: token.profile fapi2 needs sender-constrained tokens"},
		{"fapi2 with client secret", rep("auth_method: private_key_jwt\n      private_key: {file: client-key.pem}", "auth_method: client_secret_basic\n      client_secret: {env: S}"),
			"token.auth_method: client_secret_basic is not allowed by token.profile fapi2"},
		{"fapi2 with RS256", rep("private_key: {file: client-key.pem}", "private_key: {file: client-key.pem}\n      signing_alg: RS256"),
			"token.signing_alg: RS256 is not allowed by token.profile fapi2"},
		{"fapi2 with RS256 DPoP", rep("certificate_bound: true", "dpop: {private_key: {file: d.pem}, algorithm: RS256}"), "token.dpop.algorithm: RS256 is not allowed"},
		{"unknown signing alg", rep("private_key: {file: client-key.pem}", "private_key: {file: client-key.pem}\n      signing_alg: HS256"), `token.signing_alg: "HS256" is not one of`},
		{"signing alg without signing", strings.Replace(rep("auth_method: private_key_jwt\n      private_key: {file: client-key.pem}", "auth_method: tls_client_auth\n      signing_alg: ES256"), "      profile: fapi2\n", "", 1),
			"token.signing_alg: only private_key_jwt and request_object sign"},
		{"discovery without issuer", strings.Replace(rep("      issuer: https://auth.bank.example\n", ""), "      profile: fapi2\n", "", 1), "token.issuer: missing; token.discovery reads the metadata"},
		{"issuer not https", rep("issuer: https://auth.bank.example", "issuer: http://auth.bank.example"), "token.issuer: \"http://auth.bank.example\" must be the bank's issuer identifier"},
		{"no url without discovery", rep("      discovery: true\n", ""), "token.url: missing"},
		{"par without endpoint", strings.Replace(rep("      discovery: true\n", "      url: https://auth.bank.example/token\n      authorize_url: https://auth.bank.example/authorize\n"), "profile: fapi2\n", "par: true\n", 1),
			"token.par_url: missing; pushed authorization requests need the bank's endpoint"},
		{"par_url without par", strings.Replace(rep("      discovery: true\n", "      discovery: true\n      par_url: https://auth.bank.example/par\n"), "      profile: fapi2\n", "", 1), "token.par_url: is used with par: true only"},
		{"request object without issuer", strings.Replace(rep("      issuer: https://auth.bank.example\n      discovery: true\n", "      url: https://auth.bank.example/token\n      authorize_url: https://auth.bank.example/authorize\n      request_object: true\n"), "      profile: fapi2\n", "", 1),
			"token.issuer: missing; a request object's audience"},
		{"request object without key", strings.Replace(rep("auth_method: private_key_jwt\n      private_key: {file: client-key.pem}", "auth_method: tls_client_auth\n      request_object: true"), "      profile: fapi2\n", "", 1),
			"token.private_key: missing"},
		{"par on client credentials", strings.Replace(rep("type: authorization_code", "type: client_credentials"), "profile: fapi2\n", "par: true\n", 1), "par, par_url and request_object belong to type authorization_code"},
		{"discovery refresh too short", rep("discovery: true", "discovery: true\n      discovery_refresh: 5s"), "token.discovery_refresh: 5s is too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// A private key signs request objects on a tls_client_auth route.
func TestFAPIRequestObjectKeyWithTLSClientAuth(t *testing.T) {
	y := strings.Replace(fapiRoute, "auth_method: private_key_jwt", "auth_method: tls_client_auth\n      request_object: true", 1)
	if _, err := Parse([]byte(y)); err != nil {
		t.Fatal(err)
	}
}
