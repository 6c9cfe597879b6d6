package config

import (
	"fmt"
	"strings"
)

// The starter configurations `tokenproxy init` writes, one per preset. Each
// route is what an operator of that bank writes (at most 12 lines of YAML):
// the preset supplies the rest. Secrets are references; REPLACE marks a
// value to change.

func bankingCircleStarter(preset string) Starter {
	return Starter{
		Route: `  - name: bankingcircle
    preset: ` + preset + `   # hosts, upstream, token URL and flow (GET with Basic credentials over mTLS)
    client_certificate:                          # the M2M certificate Banking Circle issued at onboarding
      pkcs12:
        file: /etc/tokenproxy/bankingcircle.pfx  # REPLACE: the .pfx file
        passcode: {env: BC_PFX_PASSCODE}         # its passcode
    token:
      username: {env: BC_USERNAME}               # the M2M user
      password: {env: BC_PASSWORD}               # its password
`,
		Fill: []string{
			"/etc/tokenproxy/bankingcircle.pfx: the M2M certificate (.pfx) Banking Circle issued (client_certificate.pkcs12.file)",
			"BC_PFX_PASSCODE: the .pfx passcode",
			"BC_USERNAME, BC_PASSWORD: the M2M user and its password",
			"your egress IP must be whitelisted by Banking Circle",
		},
	}
}

// bpceStarter is the BPCE route; upstream is the line production adds.
func bpceStarter(preset, upstream string) Starter {
	fill := []string{
		"/etc/tokenproxy/qwac.crt, qwac.key: the QWAC (TLS client certificate; it also authenticates the client, tls_client_auth)",
		"/etc/tokenproxy/qsealc.crt, qsealc.key: the QSealC that signs every request (keyId is its public key)",
		"token.client_id: your agreement number from your national competent authority (PSDXX-YYYY-ZZZZZ)",
		"consents.callback_url: where the customer's browser reaches tokenproxy's consent API; register it at BPCE as the redirect_uri",
		"consents.return_urls: your app's page the customer comes back to",
		"TOKENPROXY_CONSENT_KEY: 32 random bytes, base64 (openssl rand -base64 32), sealing the consent store",
	}
	if upstream != "" {
		fill = append([]string{"upstream: your bank's production entry point"}, fill...)
	}
	return Starter{
		Route: `  - name: bpce
    preset: ` + preset + `             # entry point, token and authorize URLs, tls_client_auth, scope AISP, STET signatures
` + upstream + `    client_certificate:                # the QWAC: mTLS, and the client authentication at the token endpoint
      pem: {cert_file: /etc/tokenproxy/qwac.crt, key_file: /etc/tokenproxy/qwac.key}
    signing:
      key:                             # the QSealC: signs every request
        pem: {cert_file: /etc/tokenproxy/qsealc.crt, key_file: /etc/tokenproxy/qsealc.key}
    token:
      client_id: PSDXX-YYYY-ZZZZZ      # REPLACE: your agreement number (e.g. PSDFR-ACPR-12345)
`,
		Top: `consents:                              # per-customer consents: the consent API and its encrypted store
  callback_url: https://tokenproxy.example/v1/callback   # REPLACE: the redirect_uri registered at BPCE
  return_urls: [https://app.example/consent-done]        # REPLACE: where the customer returns to your app
  store: {bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}}
`,
		Fill: fill,
	}
}

var berlinGroupStarter = Starter{
	Route: `  - name: berlingroup
    preset: berlingroup                # signing: keyId SN=<serial>,CA=<issuer>, TPP-Signature-Certificate, Digest, Date, X-Request-ID
    upstream: https://psd2.bank.example   # REPLACE: the bank's NextGenPSD2 base URL; apps call its host
    client_certificate:                # the QWAC
      pem: {cert_file: /etc/tokenproxy/qwac.crt, key_file: /etc/tokenproxy/qwac.key}
    signing:
      key:                             # the QSealC: signs every request, sent in TPP-Signature-Certificate
        pem: {cert_file: /etc/tokenproxy/qsealc.crt, key_file: /etc/tokenproxy/qsealc.key}
`,
	Fill: []string{
		"upstream: the bank's NextGenPSD2 base URL (apps call http://<its host>/v1/...)",
		"/etc/tokenproxy/qwac.crt, qwac.key: the QWAC (TLS client certificate)",
		"/etc/tokenproxy/qsealc.crt, qsealc.key: the QSealC that signs every request",
		"the app sends its own consent headers (Consent-ID, PSU-ID, TPP-Redirect-URI) and Authorization if the bank wants one; tokenproxy signs them",
	},
}

var hubStarter = Starter{
	Route: `  - name: psd2hub
    preset: banqware-psd2hub           # host api.banqware.com, OAuth2 client_credentials (client_secret_basic)
    token:
      url: https://api.banqware.com/oauth/token   # REPLACE: the token endpoint on the hub's Security page
      client_id: your-client-id        # REPLACE: the client id of your Developer Portal subscription
      client_secret: {env: PSD2HUB_CLIENT_SECRET}
    # client_certificate:              # production: the certificate the hub issued from your CSR
    #   pem: {cert_file: /etc/tokenproxy/psd2hub.crt, key_file: /etc/tokenproxy/psd2hub.key}
`,
	Fill: []string{
		"token.url: the hub's token endpoint (its Security page)",
		"token.client_id and PSD2HUB_CLIENT_SECRET: the credentials of your Developer Portal subscription",
		"production: the certificate the hub issued from your CSR (client_certificate), and your egress IPs whitelisted",
		"apps call http://api.banqware.com/sandbox/... (the hub's paths) through tokenproxy",
	},
}

// YAMLLines counts the lines of YAML in s: neither blank nor only a comment.
func YAMLLines(s string) int {
	n := 0
	for line := range strings.SplitSeq(s, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			n++
		}
	}
	return n
}

// StarterConfig returns the commented starter configuration of a preset,
// as `tokenproxy init` writes it, or an error naming the known presets.
func StarterConfig(name string) (string, error) {
	p, ok := Presets[name]
	if !ok {
		return "", fmt.Errorf("unknown preset %q; known presets: %s", name, strings.Join(PresetNames(), ", "))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# tokenproxy configuration: %s.
# Written by "tokenproxy init --preset %s". It holds no secret: every secret is a
# reference ({env: NAME}, {file: /path} or {vault: {path, field}}), never a value.
# Change every line marked REPLACE, then check the file:
#   tokenproxy validate --config FILE --skip-credentials   # the schema and fields only
#   tokenproxy validate --config FILE                      # also loads the certificates and reads the secrets
# Every key and its default: docs/configuration.md.
listen:
  proxy: 127.0.0.1:8080                # apps set HTTP_PROXY=http://127.0.0.1:8080 and call http:// URLs
  admin: 127.0.0.1:9090                # /healthz, /readyz, /metrics, /status (tokenproxy status); POST /-/reload (tokenproxy reload)
routes:
%s`, p.Description, name, p.Starter.Route)
	if p.Starter.Top != "" {
		b.WriteString(p.Starter.Top)
	}
	return b.String(), nil
}
