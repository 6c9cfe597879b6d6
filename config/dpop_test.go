package config

import (
	"strings"
	"testing"
)

// token.dpop and token.certificate_bound: accepted with a key or a client
// certificate, refused with a message naming the field and the fix.
func TestSenderConstrainedTokens(t *testing.T) {
	rep := func(old, repl string) string { return strings.Replace(stetRoute, old, repl, 1) }
	dpop := func(block string) string { return rep("pkce: true", "pkce: true\n      dpop: "+block) }
	cfg, err := Parse([]byte("vault: {address: https://vault:8200, auth: {method: token, token: {env: VT}}}\n" + dpop("{private_key: {vault_transit: {key: dpop}}}")))
	if err != nil {
		t.Fatalf("%v", err)
	}
	if k := cfg.Routes[0].Token.DPoP.PrivateKey.VaultTransit; k.Mount != DefaultTransitMount || k.Key != "dpop" {
		t.Fatalf("transit key: %+v", k)
	}
	if _, err := Parse([]byte(dpop("{private_key: {file: dpop.pem}, algorithm: PS256}"))); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(rep("pkce: true", "pkce: true\n      certificate_bound: true"))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"transit without vault", dpop("{private_key: {vault_transit: {key: dpop}}}"), "vault: missing"},
		{"no key", dpop("{algorithm: ES256}"), "token.dpop.private_key: missing"},
		{"two keys", dpop("{private_key: {file: k.pem, vault_transit: {key: k}}}"), "token.dpop.private_key: set exactly one"},
		{"RS256", dpop("{private_key: {file: k.pem}, algorithm: RS256}"), "token.dpop.algorithm: RS256 is not allowed"},
		{"unknown alg", dpop("{private_key: {file: k.pem}, algorithm: HS256}"), `token.dpop.algorithm: "HS256" is not one of ES256, PS256`},
		{"both", rep("pkce: true", "pkce: true\n      certificate_bound: true\n      dpop: {private_key: {file: k.pem}}"), "give dpop or certificate_bound, not both"},
		{"bound without certificate", rep("pkce: true", "pkce: true\n      certificate_bound: true")[:0] +
			strings.Replace(strings.Replace(stetRoute, "    client_certificate: {pem: {cert_file: qwac.pem, key_file: qwac.key}}\n", "", 1),
				"auth_method: tls_client_auth", "auth_method: client_secret_post\n      client_secret: {env: S}\n      certificate_bound: true", 1),
			"client_certificate: missing; certificate_bound tokens"},
		{"on basic-get", strings.Replace(dpop("{private_key: {file: k.pem}}"), "type: authorization_code", "type: basic-get", 1), "dpop and certificate_bound bind OAuth2 tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
