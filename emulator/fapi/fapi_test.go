package fapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// bank is an emulated FAPI bank over real TLS with a client that speaks to it.
type bank struct {
	*Server
	url    string
	client *http.Client // presents the client certificate
	other  *http.Client // presents another certificate of the same CA
}

func startBank(t *testing.T, cfg Config) *bank {
	t.Helper()
	ca, err := pki.NewCA("fapi test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := ca.IssueClient("tpp-client")
	oc, _ := ca.IssueClient("other-client")
	s := New(cfg)
	hs := httptest.NewUnstartedServer(s)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	s.SetIssuer(hs.URL)
	mk := func(c *tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: ca.CertPool(), Certificates: []tls.Certificate{*c}}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &bank{Server: s, url: hs.URL, client: mk(cc), other: mk(oc)}
}

func assertion(t *testing.T, key crypto.Signer, alg, id, aud string) string {
	t.Helper()
	tok, err := jws.SignJSON(key, alg, map[string]any{"typ": "JWT"}, map[string]any{"iss": id, "sub": id, "aud": aud,
		"jti": random(), "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func proof(t *testing.T, key crypto.Signer, alg, method, u, token, nonce string) string {
	t.Helper()
	jwk, _ := jws.JWK(key.Public())
	cl := map[string]any{"jti": random(), "htm": method, "htu": u, "iat": time.Now().Unix()}
	if token != "" {
		cl["ath"] = s256(token)
	}
	if nonce != "" {
		cl["nonce"] = nonce
	}
	p, err := jws.SignJSON(key, alg, map[string]any{"typ": "dpop+jwt", "jwk": jwk}, cl)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, http.Header, map[string]any) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, resp.Header, m
}

func form(t *testing.T, u string, v url.Values, dpop string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if dpop != "" {
		req.Header.Set("DPoP", dpop)
	}
	return req
}

// TestAuthorizationCodeThroughPARWithDPoP walks the FAPI 2.0 flow: PAR with
// a PS256 client assertion, login, the callback with iss, the code exchange
// with a DPoP proof after the nonce challenge, and resource calls with a
// proof after the resource server's own nonce challenge.
func TestAuthorizationCodeThroughPARWithDPoP(t *testing.T) {
	ck, _ := rsa.GenerateKey(rand.Reader, 2048)
	dk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const redirect = "https://tokenproxy.example/v1/callback"
	b := startBank(t, Config{NonceEvery: time.Hour, Clients: map[string]Client{
		"tpp": {Method: "private_key_jwt", Key: ck.Public(), RedirectURIs: []string{redirect}, DPoP: true}}})

	verifier := random() + random()
	par := url.Values{"client_id": {"tpp"}, "response_type": {"code"}, "redirect_uri": {redirect}, "scope": {"accounts"},
		"state": {"st-1"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion(t, ck, jws.PS256, "tpp", b.url)}}
	st, _, m := do(t, b.client, form(t, b.url+"/par", par, ""))
	if st != http.StatusCreated {
		t.Fatalf("PAR: %d %v", st, m)
	}
	uri, _ := m["request_uri"].(string)

	req, _ := http.NewRequest(http.MethodGet, b.url+"/authorize?"+url.Values{"client_id": {"tpp"}, "request_uri": {uri}, "psu": {"alice"}}.Encode(), nil)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	if back.Query().Get("iss") != b.url || back.Query().Get("state") != "st-1" || back.Query().Get("code") == "" {
		t.Fatalf("callback %s", back)
	}

	exchange := func(nonce string) (int, http.Header, map[string]any) {
		v := url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")}, "redirect_uri": {redirect},
			"code_verifier": {verifier}, "client_id": {"tpp"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {assertion(t, ck, jws.PS256, "tpp", b.url)}}
		return do(t, b.client, form(t, b.url+"/token", v, proof(t, dk, jws.ES256, "POST", b.url+"/token", "", nonce)))
	}
	st, h, m := exchange("")
	if st != http.StatusBadRequest || m["error"] != "use_dpop_nonce" || h.Get("DPoP-Nonce") == "" {
		t.Fatalf("token without nonce: %d %v", st, m)
	}
	st, _, m = exchange(h.Get("DPoP-Nonce"))
	if st != http.StatusOK || m["token_type"] != "DPoP" || m["refresh_token"] == nil {
		t.Fatalf("token: %d %v", st, m)
	}
	tok := m["access_token"].(string)

	get := func(scheme, p string) (int, http.Header, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, b.url+"/accounts", nil)
		req.Header.Set("Authorization", scheme+" "+tok)
		if p != "" {
			req.Header.Set("DPoP", p)
		}
		return do(t, b.client, req)
	}
	st, h, _ = get("DPoP", proof(t, dk, jws.ES256, "GET", b.url+"/accounts", tok, ""))
	if st != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), "use_dpop_nonce") {
		t.Fatalf("resource without nonce: %d", st)
	}
	rsNonce := h.Get("DPoP-Nonce")
	if st, _, m = get("DPoP", proof(t, dk, jws.ES256, "GET", b.url+"/accounts", tok, rsNonce)); st != http.StatusOK || m["psu"] != "alice" {
		t.Fatalf("resource: %d %v", st, m)
	}

	// Refusals: each must be counted as the reason says.
	replayed := proof(t, dk, jws.ES256, "GET", b.url+"/accounts", tok, rsNonce)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name, scheme, proof, want string
	}{
		{"bearer use of a DPoP token", "Bearer", proof(t, dk, jws.ES256, "GET", b.url+"/accounts", tok, rsNonce), "presented as Bearer"},
		{"no proof", "DPoP", "", "not exactly one DPoP header"},
		{"wrong ath", "DPoP", proof(t, dk, jws.ES256, "GET", b.url+"/accounts", "another-token", rsNonce), "ath does not match"},
		{"wrong htm", "DPoP", proof(t, dk, jws.ES256, "POST", b.url+"/accounts", tok, rsNonce), "htm"},
		{"another key", "DPoP", proof(t, other, jws.ES256, "GET", b.url+"/accounts", tok, rsNonce), "not the token's"},
		{"replay (first use)", "DPoP", replayed, ""},
		{"replay", "DPoP", replayed, "jti replayed"},
	} {
		st, _, m := get(tc.scheme, tc.proof)
		if tc.want == "" {
			if st != http.StatusOK {
				t.Fatalf("%s: %d %v", tc.name, st, m)
			}
			continue
		}
		if d, _ := m["error_description"].(string); st != http.StatusUnauthorized || !strings.Contains(d, tc.want) {
			t.Errorf("%s: %d %v, want a refusal saying %q", tc.name, st, m, tc.want)
		}
	}
	if b.Stats().JTIReplays != 1 {
		t.Fatalf("jti replays %d", b.Stats().JTIReplays)
	}
}

// TestClientAuthenticationRules checks the FAPI 2.0 client assertion
// rules: PS256 or ES256 only, the issuer as audience, no replay.
func TestClientAuthenticationRules(t *testing.T) {
	ck, _ := rsa.GenerateKey(rand.Reader, 2048)
	b := startBank(t, Config{Clients: map[string]Client{"tpp": {Method: "private_key_jwt", Key: ck.Public()}}})
	cc := func(a string) (int, map[string]any) {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {"tpp"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}}
		st, _, m := do(t, b.client, form(t, b.url+"/token", v, ""))
		return st, m
	}
	good := assertion(t, ck, jws.PS256, "tpp", b.url)
	for _, tc := range []struct {
		name, assertion string
		want            int
	}{
		{"PS256, aud issuer", good, http.StatusOK},
		{"replayed", good, http.StatusUnauthorized},
		{"RS256", assertion(t, ck, jws.RS256, "tpp", b.url), http.StatusUnauthorized},
		{"aud token endpoint", assertion(t, ck, jws.PS256, "tpp", b.url+"/token"), http.StatusUnauthorized},
	} {
		if st, m := cc(tc.assertion); st != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, st, m, tc.want)
		}
	}
}

// TestCertificateBoundToken: a token fetched over tls_client_auth works
// only over a connection presenting the same certificate.
func TestCertificateBoundToken(t *testing.T) {
	b := startBank(t, Config{Clients: map[string]Client{"tpp": {Method: "tls_client_auth", CertSubject: "tpp-client", CertificateBound: true}}})
	st, _, m := do(t, b.client, form(t, b.url+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"tpp"}}, ""))
	if st != http.StatusOK || m["token_type"] != "Bearer" {
		t.Fatalf("token: %d %v", st, m)
	}
	tok := m["access_token"].(string)
	get := func(c *http.Client) int {
		req, _ := http.NewRequest(http.MethodGet, b.url+"/accounts", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		st, _, _ := do(t, c, req)
		return st
	}
	if get(b.client) != http.StatusOK || get(b.other) != http.StatusUnauthorized {
		t.Fatal("binding to the certificate not enforced")
	}
	if st, _, _ := do(t, b.other, form(t, b.url+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"tpp"}}, "")); st != http.StatusUnauthorized {
		t.Fatalf("tls_client_auth with another certificate: %d", st)
	}
}

// TestPARRequired: the authorization endpoint takes only a pushed request,
// and a bank configured without PAR neither serves nor advertises it.
func TestPARRequired(t *testing.T) {
	b := startBank(t, Config{Clients: map[string]Client{}})
	req, _ := http.NewRequest(http.MethodGet, b.url+"/authorize?client_id=tpp&response_type=code&redirect_uri=https://x/cb&psu=a", nil)
	if st, _, _ := do(t, b.client, req); st != http.StatusBadRequest {
		t.Fatalf("authorize without PAR: %d", st)
	}
	n := startBank(t, Config{NoPAR: true})
	req, _ = http.NewRequest(http.MethodGet, n.url+"/.well-known/oauth-authorization-server", nil)
	st, _, m := do(t, n.client, req)
	if st != http.StatusOK || m["pushed_authorization_request_endpoint"] != nil || m["issuer"] != n.url {
		t.Fatalf("metadata: %d %v", st, m)
	}
	if st, _, _ := do(t, n.client, form(t, n.url+"/par", url.Values{}, "")); st == http.StatusCreated {
		t.Fatal("PAR served")
	}
}

// TestNonceRotation: a nonce older than the previous one is refused.
func TestNonceRotation(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	s := New(Config{NonceEvery: time.Second, Now: clock})
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.currentNonce("as").cur
	now = now.Add(time.Second)
	if !s.validNonce("as", first) {
		t.Fatal("the previous nonce is refused")
	}
	now = now.Add(time.Second)
	if s.validNonce("as", first) {
		t.Fatal("a nonce two rotations old is accepted")
	}
	if s.validNonce("rs", s.currentNonce("as").cur) {
		t.Fatal("the resource server accepts the authorization server's nonce")
	}
}
