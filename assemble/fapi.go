package assemble

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
	"github.com/tokenproxy/tokenproxy/problem"
)

// fapiAuth sets the client assertion's algorithm and audience: signing_alg,
// else the key's default (PS256 for an RSA key on fapi2 routes, RS256
// elsewhere); on fapi2 routes the audience is the issuer (FAPI 2.0 §5.3.2.1).
func fapiAuth(p string, t *config.Token, a *oauth.ClientAuth) error {
	if t.IsFAPI2() {
		a.Audience = t.Issuer
	}
	if a.Key == nil {
		return nil
	}
	alg, err := signingAlg(t, a.Key)
	if err != nil {
		return &problem.FieldError{Path: p + ".private_key", Err: err, Fix: "give an RSA key of at least 2048 bits (PS256) or an ECDSA P-256 key (ES256)"}
	}
	a.Alg = alg
	return nil
}

// signingAlg is the JWS algorithm of t's client assertions and request objects.
func signingAlg(t *config.Token, key crypto.Signer) (string, error) {
	if t.SigningAlg != "" {
		return t.SigningAlg, jws.CheckAlg(key.Public(), t.SigningAlg)
	}
	return jws.Alg(key.Public(), t.IsFAPI2())
}

// openDiscovery reads the issuer's metadata over the route's client when
// token.discovery is on (nil otherwise), checks it offers what the route
// needs, and schedules its refresh on the route.
func openDiscovery(ctx context.Context, p, route string, t *config.Token, hc *http.Client, auth oauth.ClientAuth, o Options) (*discovery.Source, error) {
	if !t.Discovery {
		return nil, nil
	}
	src, err := discovery.Open(ctx, hc, t.Issuer)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".discovery", Err: fmt.Errorf("route %s: %w", route, err),
			Fix: "check token.issuer is the bank's issuer identifier exactly, and that the bank publishes its metadata"}
	}
	if err := checkMetadata(p, t, auth, src.Current(), o.Log.With(zap.String("route", route))); err != nil {
		return nil, err
	}
	if o.addJob != nil {
		o.addJob(func(ctx context.Context) { src.Run(ctx, route, t.DiscoveryRefresh, o.Log) })
	}
	return src, nil
}

// checkMetadata refuses a route whose configuration needs what the bank's
// metadata says it lacks; each error names the field that needs it.
func checkMetadata(p string, t *config.Token, auth oauth.ClientAuth, m *discovery.Metadata, log *zap.Logger) error {
	mtls := usesMTLS(t)
	lacks := func(field, what, fix string) error {
		return problem.Field(p+"."+field, fmt.Sprintf("the bank's metadata at %s has no %s; %s", m.URL, what, fix))
	}
	if t.URL == "" && m.Endpoint(discovery.Token, mtls) == "" {
		return lacks("url", "token_endpoint", "give token.url")
	}
	if t.Type == config.TokenAuthorizationCode {
		if t.AuthorizeURL == "" && m.Endpoint(discovery.Authorization, mtls) == "" {
			return lacks("authorize_url", "authorization_endpoint", "give token.authorize_url")
		}
		if t.PAR && t.PARURL == "" && m.Endpoint(discovery.PAR, mtls) == "" {
			return lacks("par", "pushed_authorization_request_endpoint", "token.par needs one")
		}
		if m.RequirePAR && !t.PAR {
			return problem.Field(p+".par", fmt.Sprintf("the bank's metadata at %s requires pushed authorization requests; set token.par: true", m.URL))
		}
		if t.PKCE && !discovery.Supports(m.CodeChallengeMethods, "S256") {
			return lacks("pkce", "S256 in code_challenge_methods_supported", "PKCE needs S256")
		}
		if t.RequestObject && auth.Alg != "" && !discovery.Supports(m.RequestObjectSigningAlgs, auth.Alg) {
			return lacks("signing_alg", auth.Alg+" in request_object_signing_alg_values_supported", "give a signing_alg (and key) the bank accepts")
		}
	}
	if !discovery.Supports(m.TokenEndpointAuthMethods, t.AuthMethod) {
		return lacks("auth_method", t.AuthMethod+" in token_endpoint_auth_methods_supported",
			fmt.Sprintf("use one of %v", m.TokenEndpointAuthMethods))
	}
	if auth.Method == oauth.PrivateKeyJWT && !discovery.Supports(m.TokenEndpointAuthAlgs, auth.Alg) {
		return lacks("signing_alg", auth.Alg+" in token_endpoint_auth_signing_alg_values_supported",
			fmt.Sprintf("use one of %v with a matching key", m.TokenEndpointAuthAlgs))
	}
	if d := t.DPoP; d != nil && d.Algorithm != "" && len(m.DPoPSigningAlgs) > 0 && !slices.Contains(m.DPoPSigningAlgs, d.Algorithm) {
		return lacks("dpop.algorithm", d.Algorithm+" in dpop_signing_alg_values_supported", fmt.Sprintf("use one of %v", m.DPoPSigningAlgs))
	}
	if t.CertificateBound && !m.CertificateBoundTokens {
		log.Warn("token.certificate_bound is set but the bank's metadata does not say tls_client_certificate_bound_access_tokens", zap.String("metadata", m.URL))
	}
	return nil
}

// usesMTLS reports whether the route presents its certificate to the
// authorization server to authenticate or to bind tokens: it then uses the
// metadata's mtls_endpoint_aliases (RFC 8705 §5).
func usesMTLS(t *config.Token) bool {
	return t.AuthMethod == string(oauth.TLSClientAuth) || t.CertificateBound
}

// pushed is the authorization request's configuration of t: PAR, the
// request object signed with key, the issuer and its check.
func pushed(t *config.Token, key crypto.Signer, alg string) oauth.Pushed {
	ps := oauth.Pushed{PAR: t.PAR, PARURL: t.PARURL, Issuer: t.Issuer, RequireIss: t.IsFAPI2()}
	if t.RequestObject {
		ps.RequestObject, ps.RequestKey, ps.RequestAlg, ps.RequestKeyID = true, key, alg, t.KeyID
	}
	return ps
}
