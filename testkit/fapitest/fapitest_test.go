package fapitest

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/jws"
)

const callback = "https://app.example/callback"

// fixture is one server with a client of each kind.
type fixture struct {
	srv                 *Server
	ccPS256, ccES256    *testClient // client_credentials, private_key_jwt + DPoP
	code                *testClient // authorization_code + refresh_token, private_key_jwt + DPoP
	mtls                *testClient // client_credentials, tls_client_auth, certificate-bound
	mtlsOther           *http.Client
	tokensIssued        []string
	tokensIssuedRefresh []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ps, es, code, dpop := rsaKey(t), ecKey(t), ecKey(t), ecKey(t)
	cc := func(id string, key crypto.Signer) Client {
		return Client{ID: id, AuthMethod: PrivateKeyJWT, Keys: []crypto.PublicKey{key.Public()},
			GrantTypes: []string{"client_credentials"}, DPoP: true, Scope: "accounts"}
	}
	opts := Options{Clients: []Client{
		cc("cc-ps256", ps),
		cc("cc-es256", es),
		{ID: "code", AuthMethod: PrivateKeyJWT, Keys: []crypto.PublicKey{code.Public()},
			GrantTypes: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{callback},
			DPoP: true, Scope: "openid accounts payments"},
	}}
	// The tls_client_auth client's certificate comes from the server's CA,
	// so the CA is made first.
	srv0 := &Server{}
	_ = srv0
	f := &fixture{}
	f.srv = startWithMTLS(t, &opts)
	mk := func(id string, key crypto.Signer, alg string) *testClient {
		return &testClient{t: t, srv: f.srv, id: id, authKey: key, authAlg: alg, dpopKey: dpop, dpopAlg: jws.ES256,
			http: f.srv.HTTPClient(nil)}
	}
	f.ccPS256 = mk("cc-ps256", ps, jws.PS256)
	f.ccES256 = mk("cc-es256", es, jws.ES256)
	f.code = mk("code", code, jws.ES256)
	return f
}

func startWithMTLS(t *testing.T, opts *Options) *Server {
	t.Helper()
	return Start(t, *opts)
}

func TestDiscovery(t *testing.T) {
	f := newFixture(t)
	c := f.ccES256
	req, _ := http.NewRequest(http.MethodGet, f.srv.Issuer+"/.well-known/openid-configuration", nil)
	r := c.do(req)
	if r.status != http.StatusOK {
		t.Fatalf("discovery: %d", r.status)
	}
	if r.body["issuer"] != f.srv.Issuer {
		t.Errorf("issuer %v", r.body["issuer"])
	}
	if r.body["require_pushed_authorization_requests"] != true {
		t.Errorf("require_pushed_authorization_requests %v", r.body["require_pushed_authorization_requests"])
	}
	if r.body["authorization_response_iss_parameter_supported"] != true {
		t.Errorf("authorization_response_iss_parameter_supported %v", r.body["authorization_response_iss_parameter_supported"])
	}
	for k, want := range map[string][]string{
		"dpop_signing_alg_values_supported":                {"PS256", "ES256"},
		"token_endpoint_auth_signing_alg_values_supported": {"PS256", "ES256"},
		"token_endpoint_auth_methods_supported":            {"private_key_jwt", "tls_client_auth"},
		"code_challenge_methods_supported":                 {"S256"},
	} {
		var got []string
		list, _ := r.body[k].([]any)
		for _, v := range list {
			s, _ := v.(string)
			got = append(got, s)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", k, got, want)
		}
	}
	if r.body["tls_client_certificate_bound_access_tokens"] != true {
		t.Errorf("tls_client_certificate_bound_access_tokens %v", r.body["tls_client_certificate_bound_access_tokens"])
	}
}

func TestClientCredentialsDPoP(t *testing.T) {
	f := newFixture(t)
	for _, c := range []*testClient{f.ccPS256, f.ccES256} {
		t.Run(c.authAlg, func(t *testing.T) {
			c.t = t
			at, _ := c.token(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts"}})
			r := c.dpopResource(http.MethodGet, "/accounts", at)
			if r.status != http.StatusOK {
				t.Fatalf("RS: %d %v %v", r.status, r.header, r.body)
			}
			if r.str("client_id") != c.id || r.str("binding") != "dpop" || r.str("path") != "/accounts" {
				t.Fatalf("RS saw %v", r.body)
			}
		})
	}
	st := f.srv.Stats(t)
	if st.TokenRequests["client_credentials"] != 2 || st.RSAccepted != 2 {
		t.Fatalf("stats: %+v", st)
	}
	// Each client met the AS's nonce once and the RS's once.
	if st.ASNonceChallenges != 1 || st.RSNonceChallenges != 1 {
		t.Errorf("nonce challenges: AS %d, RS %d", st.ASNonceChallenges, st.RSNonceChallenges)
	}
	if st.ASJTIRepeats != 0 || st.RSJTIRepeats != 0 {
		t.Errorf("jti repeats: AS %d, RS %d", st.ASJTIRepeats, st.RSJTIRepeats)
	}
	t.Logf("rejections: %+v", st.Rejections)
}

func ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

var _ = strings.Contains
