package config

import (
	"net/url"
	"sort"
	"strings"
	"time"
)

// Preset is what tokenproxy knows about one API: its URLs, its token flow and
// its signing profile. A route naming the preset gets every field it leaves
// empty from it; a field the route sets wins.
type Preset struct {
	// Description is the one line `tokenproxy init --list` prints.
	Description string
	// Hosts are the host names apps call. Empty: the host of the route's
	// upstream (a preset whose upstream is per bank).
	Hosts []string
	// Upstream is the API's base URL. Empty: the route must give it.
	Upstream string
	// Token is the token flow; nil: the preset brings no token block.
	Token *PresetToken
	// Signing is the signing profile and its options; nil: no signing.
	Signing *SigningOptions
	// ClientCertificate says the API refuses a connection without one.
	ClientCertificate bool
	// CheckPath is the probe request of `tokenproxy check`.
	CheckPath string

	// Starter is the preset's commented starter configuration (tokenproxy init).
	Starter Starter
}

// PresetToken is a preset's token flow. URL and AuthorizeURL may be a path
// ("/oauth/token"): it is then resolved against the route's upstream, so a
// route that points the upstream elsewhere takes the token endpoint along.
type PresetToken struct {
	Type         string
	URL          string
	AuthMethod   string
	AuthorizeURL string
	Scopes       []string
	RefreshTTL   time.Duration
}

// Starter is a preset's commented starter configuration: the route (a list
// item of routes:), the top-level blocks it needs besides, and what the
// operator must fill in.
type Starter struct {
	// Route is the YAML of the route, indented as an item of routes:.
	Route string
	// Top is YAML of top-level blocks the route needs (consents:), or "".
	Top string
	// Fill lists what the operator must provide: secrets, files, values.
	Fill []string
}

// Token flows.
const (
	// TokenBasicGet is Banking Circle's flow: GET with HTTP Basic credentials over mTLS.
	TokenBasicGet = "basic-get"
)

// stetPaths are the BPCE 89C3 STET endpoints, relative to the bank's entry point.
const (
	bpceTokenPath     = "/stet/psd2/oauth/token" //nolint:gosec // G101: an endpoint path, not a credential
	bpceAuthorizePath = "/stet/psd2/oauth/authorize"
)

// Presets are the APIs tokenproxy knows by name. The URLs and flows are
// the ones each API's documentation gives:
//
//   - Banking Circle: the API and the authorization service are separate
//     hosts, in sandbox and in production (note the www); the token is a GET
//     with HTTP Basic credentials over mTLS with the M2M certificate.
//   - BPCE 89C3 (STET): one entry point per bank, www.<bankcode>.sandbox.api.89C3.com
//     in the sandbox (13807 is the one sandbox bank); per-customer
//     authorization_code tokens (scope AISP, access 1 hour, refresh 90 days)
//     whose client is the agreement number authenticated by the QWAC
//     (tls_client_auth); every request signed (draft-cavage, keyId the
//     QSealC's public key as in BPCE's example).
//   - Berlin Group NextGenPSD2: every request signed with keyId
//     "SN=<serial>,CA=<issuer>" and the QSealC in TPP-Signature-Certificate,
//     covering Date, Digest, X-Request-ID (the signer's berlin-group profile);
//     the bank's URL is the operator's.
//   - banqware PSD2 API Hub: api.banqware.com (/sandbox/... in the sandbox),
//     OAuth2 client credentials issued at registration; the client
//     certificate from the hub's CSR guidelines in production.
var Presets = map[string]Preset{
	"bankingcircle-sandbox": {
		Description:       "Banking Circle sandbox: mTLS with the M2M .pfx, basic-get token",
		Hosts:             []string{"sandbox.bankingcircleconnect.com"},
		Upstream:          "https://sandbox.bankingcircleconnect.com",
		Token:             &PresetToken{Type: TokenBasicGet, URL: "https://authorizationsandbox.bankingcircleconnect.com/api/v1/authorizations/authorize"},
		ClientCertificate: true,
		CheckPath:         "/api/v1/accounts?PageNumber=1&PageSize=1",
		Starter:           bankingCircleStarter("bankingcircle-sandbox"),
	},
	"bankingcircle-production": {
		Description:       "Banking Circle production: mTLS with the M2M .pfx, basic-get token",
		Hosts:             []string{"www.bankingcircleconnect.com"},
		Upstream:          "https://www.bankingcircleconnect.com",
		Token:             &PresetToken{Type: TokenBasicGet, URL: "https://authorization.bankingcircleconnect.com/api/v1/authorizations/authorize"},
		ClientCertificate: true,
		CheckPath:         "/api/v1/accounts?PageNumber=1&PageSize=1",
		Starter:           bankingCircleStarter("bankingcircle-production"),
	},
	"bpce-sandbox": {
		Description:       "BPCE 89C3 STET sandbox (bank 13807): per-customer OAuth2, tls_client_auth, STET signatures",
		Hosts:             []string{"www.13807.sandbox.api.89c3.com"},
		Upstream:          "https://www.13807.sandbox.api.89C3.com",
		Token:             bpceToken(),
		Signing:           &SigningOptions{Profile: "stet", KeyID: "{public_key}"},
		ClientCertificate: true,
		Starter:           bpceStarter("bpce-sandbox", ""),
	},
	"bpce-production": {
		Description:       "BPCE 89C3 STET production: as bpce-sandbox at your bank's entry point (upstream)",
		Token:             bpceToken(),
		Signing:           &SigningOptions{Profile: "stet", KeyID: "{public_key}"},
		ClientCertificate: true,
		Starter: bpceStarter("bpce-production",
			"    upstream: https://www.BANKCODE.api.89c3.example   # REPLACE: your bank's production entry point (89C3 portal, at go-live)\n"),
	},
	"berlingroup": {
		Description:       "Berlin Group NextGenPSD2 bank: QWAC, requests signed with the QSealC (keyId SN=,CA=)",
		Signing:           &SigningOptions{Profile: "berlin-group"},
		ClientCertificate: true,
		Starter:           berlinGroupStarter,
	},
	"banqware-psd2hub": {
		Description: "banqware PSD2 API Hub: OAuth2 client credentials at api.banqware.com",
		Hosts:       []string{"api.banqware.com"},
		Upstream:    "https://api.banqware.com",
		Token:       &PresetToken{Type: TokenClientCredentials, AuthMethod: "client_secret_basic"},
		Starter:     hubStarter,
	},
}

func bpceToken() *PresetToken {
	return &PresetToken{Type: TokenAuthorizationCode, URL: bpceTokenPath, AuthorizeURL: bpceAuthorizePath,
		AuthMethod: "tls_client_auth", Scopes: []string{"AISP"}, RefreshTTL: 90 * 24 * time.Hour}
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// applyPreset fills fields the route left empty from its preset.
func (r *Route) applyPreset() {
	p, ok := Presets[r.Preset]
	if !ok {
		return
	}
	if r.Upstream == "" {
		r.Upstream = p.Upstream
	}
	if len(r.Hosts) == 0 {
		if len(p.Hosts) > 0 {
			r.Hosts = append([]string(nil), p.Hosts...)
		} else if u, err := url.Parse(r.Upstream); err == nil && u.Hostname() != "" && r.Listen == "" {
			r.Hosts = []string{u.Hostname()}
		}
	}
	if r.Check.Path == "" {
		r.Check.Path = p.CheckPath
	}
	if pt := p.Token; pt != nil {
		r.applyPresetToken(pt)
	}
	if ps := p.Signing; ps != nil {
		if r.Signing == nil {
			r.Signing = &Signing{}
		}
		s := &r.Signing.SigningOptions
		if s.Profile == "" {
			s.Profile = ps.Profile
		}
		if s.Profile == ps.Profile {
			if s.KeyID == "" {
				s.KeyID = ps.KeyID
			}
			if s.CertificateHeader == "" {
				s.CertificateHeader = ps.CertificateHeader
			}
		}
	}
}

// applyPresetToken fills the route's token block from the preset's flow;
// the OAuth2 fields only when the route keeps the preset's token type.
func (r *Route) applyPresetToken(pt *PresetToken) {
	if r.Token == nil {
		r.Token = &Token{}
	}
	t := r.Token
	if t.Type == "" {
		t.Type = pt.Type
	}
	if t.Type != pt.Type {
		return
	}
	if t.URL == "" {
		t.URL = resolvePresetURL(r.Upstream, pt.URL)
	}
	if t.AuthMethod == "" {
		t.AuthMethod = pt.AuthMethod
	}
	if t.AuthorizeURL == "" {
		t.AuthorizeURL = resolvePresetURL(r.Upstream, pt.AuthorizeURL)
	}
	if len(t.Scopes) == 0 {
		t.Scopes = append([]string(nil), pt.Scopes...)
	}
	if t.RefreshTTL == 0 {
		t.RefreshTTL = pt.RefreshTTL
	}
}

// resolvePresetURL returns ref, or, when ref is a path, ref on upstream's
// scheme and host ("" when the upstream is not a URL yet: validation then
// names the missing upstream).
func resolvePresetURL(upstream, ref string) string {
	if !strings.HasPrefix(ref, "/") {
		return ref
	}
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: ref}).String()
}
