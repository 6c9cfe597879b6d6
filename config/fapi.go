package config

import (
	"net/url"
	"time"
)

// ProfileFAPI2 is token.profile: fapi2, the FAPI 2.0 Security Profile.
const ProfileFAPI2 = "fapi2"

// DefaultDiscoveryRefresh is how often discovered metadata is read again.
const DefaultDiscoveryRefresh = time.Hour

// JWS algorithms of token.signing_alg.
const (
	AlgES256 = "ES256"
	AlgPS256 = "PS256"
	AlgRS256 = "RS256"
)

// FAPI holds the token: fields of the FAPI 2.0 authorization side
// (docs/fapi.md): the profile, the issuer and its metadata, pushed and
// signed authorization requests, and the client assertion's algorithm.
type FAPI struct {
	// Profile is "" or fapi2: fapi2 turns on PAR, PKCE and the iss check
	// and refuses what FAPI 2.0 forbids.
	Profile string `yaml:"profile"`
	// Issuer is the authorization server's issuer identifier: the iss the
	// authorization response must carry (RFC 9207), the audience of client
	// assertions on fapi2 routes and of request objects.
	Issuer string `yaml:"issuer"`
	// Discovery reads the endpoints from the issuer's metadata (RFC 8414).
	Discovery bool `yaml:"discovery"`
	// DiscoveryRefresh is how often the metadata is read again (default 1h).
	DiscoveryRefresh time.Duration `yaml:"discovery_refresh"`
	// PAR pushes the authorization request to the bank first (RFC 9126).
	PAR bool `yaml:"par"`
	// PARURL is the pushed authorization request endpoint; from the
	// metadata when empty.
	PARURL string `yaml:"par_url"`
	// RequestObject sends the authorization request as a signed request
	// object (RFC 9101), signed with private_key.
	RequestObject bool `yaml:"request_object"`
	// SigningAlg is the JWS algorithm of client assertions and request
	// objects: PS256, ES256 or RS256 (default: ES256 for an EC key; PS256
	// for an RSA key on fapi2 routes, RS256 elsewhere).
	SigningAlg string `yaml:"signing_alg"`
}

// IsFAPI2 reports whether the route follows the FAPI 2.0 Security Profile.
func (f *FAPI) IsFAPI2() bool { return f.Profile == ProfileFAPI2 }

// applyFAPIDefaults: fapi2 turns on PAR and PKCE on authorization_code
// routes; discovery is refreshed hourly.
func (t *Token) applyFAPIDefaults() {
	if t.IsFAPI2() && t.Type == TokenAuthorizationCode {
		t.PAR, t.PKCE = true, true
	}
	if t.Discovery && t.DiscoveryRefresh == 0 {
		t.DiscoveryRefresh = DefaultDiscoveryRefresh
	}
}

// consentRequests is how many requests one consent sends the authorization
// host back to back: the code exchange, the pushed authorization request
// before it (PAR, on with fapi2), and the exchange again with the nonce a
// DPoP token endpoint asks for. The default burst covers one consent.
func (t *Token) consentRequests() int {
	if t.Type != TokenAuthorizationCode {
		return 0
	}
	n := 1
	if t.PAR || t.IsFAPI2() {
		n++
	}
	if t.DPoP != nil {
		n++
	}
	return n
}

// fapi checks the FAPI fields of an OAuth2 route's token: block (tp is its path).
func (v *validator) fapi(tp string, r *Route) {
	add, t := v.add, r.Token
	switch t.Profile {
	case "", ProfileFAPI2:
	default:
		add(tp+".profile", "%q is not a profile; give fapi2 or remove it", t.Profile)
	}
	if t.Issuer != "" {
		if u, err := url.Parse(t.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			add(tp+".issuer", "%q must be the bank's issuer identifier, an https:// URL with no query or fragment", t.Issuer)
		}
	}
	switch t.SigningAlg {
	case "", AlgES256, AlgPS256, AlgRS256:
	default:
		add(tp+".signing_alg", "%q is not one of PS256, ES256, RS256", t.SigningAlg)
	}
	if t.SigningAlg != "" && t.AuthMethod != "private_key_jwt" && !t.RequestObject {
		add(tp+".signing_alg", "only private_key_jwt and request_object sign; remove it")
	}
	if t.Discovery && t.Issuer == "" {
		add(tp+".issuer", "missing; token.discovery reads the metadata published under the issuer: give the bank's issuer identifier, e.g. https://auth.bank.example")
	}
	if t.DiscoveryRefresh < 0 || (t.DiscoveryRefresh != 0 && t.DiscoveryRefresh < time.Minute) {
		add(tp+".discovery_refresh", "%v is too short; give at least 1m (default 1h)", t.DiscoveryRefresh)
	}
	if t.DiscoveryRefresh != 0 && !t.Discovery {
		add(tp+".discovery_refresh", "applies with discovery: true only; remove it or turn discovery on")
	}
	if t.PARURL != "" {
		if u, err := url.Parse(t.PARURL); err != nil || u.Scheme != "https" || u.Host == "" {
			add(tp+".par_url", "%q must be an https:// URL", t.PARURL)
		}
		if !t.PAR {
			add(tp+".par_url", "is used with par: true only; add par: true or remove it")
		}
	}
	if t.Type == TokenClientCredentials {
		if t.PAR || t.PARURL != "" || t.RequestObject {
			add(tp, "par, par_url and request_object belong to type %s (they shape the authorization request); remove them", TokenAuthorizationCode)
		}
	} else if t.PAR && t.PARURL == "" && !t.Discovery {
		add(tp+".par_url", "missing; pushed authorization requests need the bank's endpoint: give par_url, or discovery: true with issuer")
	}
	if t.RequestObject {
		if t.Issuer == "" {
			add(tp+".issuer", "missing; a request object's audience is the bank's issuer identifier")
		}
		if t.AuthMethod != "private_key_jwt" {
			v.privateKey(tp+".private_key", t.PrivateKey)
		}
	}
	if !t.IsFAPI2() {
		return
	}
	const why = "token.profile fapi2 "
	if t.Issuer == "" {
		add(tp+".issuer", "missing; "+why+"checks the iss of each authorization response (RFC 9207) and addresses client assertions to it: give the bank's issuer identifier")
	}
	if t.DPoP == nil && !t.CertificateBound {
		add(tp, why+"needs sender-constrained tokens: add a dpop: {private_key: ...} block, or certificate_bound: true when the bank binds tokens to the client certificate")
	}
	switch t.AuthMethod {
	case "private_key_jwt", "tls_client_auth":
	default:
		add(tp+".auth_method", "%s is not allowed by "+why+"(FAPI 2.0 §5.3.2.1); use private_key_jwt (PS256 or ES256) or tls_client_auth", t.AuthMethod)
	}
	if t.SigningAlg == AlgRS256 {
		add(tp+".signing_alg", "RS256 is not allowed by "+why+"(FAPI 2.0 §5.4.1); use PS256 with an RSA key or ES256 with a P-256 key")
	}
	if t.DPoP != nil && t.DPoP.Algorithm == AlgRS256 {
		add(tp+".dpop.algorithm", "RS256 is not allowed by "+why+"(FAPI 2.0 §5.4.1); use PS256 or ES256")
	}
}
