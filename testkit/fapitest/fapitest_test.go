package fapitest

import (
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const callback = "https://app.example/callback"

// TestKit drives one server with a minimal client of each kind, without
// tokenproxy.
func TestKit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts node")
	}
	ca, err := pki.NewCA("fapitest bank CA")
	if err != nil {
		t.Fatal(err)
	}
	mtlsCert, otherCert := tlsCert(t, ca, "tpp-mtls"), tlsCert(t, ca, "another-tpp")
	ps, es, codeKey, dpop := rsaKey(t), ecKey(t), ecKey(t), ecKey(t)
	privateKeyJWT := func(id string, key crypto.Signer, grants ...string) Client {
		return Client{ID: id, AuthMethod: PrivateKeyJWT, Keys: []crypto.PublicKey{key.Public()},
			GrantTypes: grants, DPoP: true, Scope: "accounts"}
	}
	code := privateKeyJWT("code", codeKey, "authorization_code", "refresh_token")
	code.RedirectURIs, code.Scope = []string{callback}, "openid accounts payments"
	srv := Start(t, Options{CA: ca, Clients: []Client{
		privateKeyJWT("cc-ps256", ps, "client_credentials"),
		privateKeyJWT("cc-es256", es, "client_credentials"),
		code,
		{ID: "mtls", AuthMethod: TLSClientAuth, SubjectDN: SubjectDN(mtlsCert.Leaf),
			GrantTypes: []string{"client_credentials"}, CertificateBound: true, Scope: "accounts"},
	}})
	client := func(t *testing.T, id string, key crypto.Signer, alg string) *testClient {
		return &testClient{t: t, srv: srv, id: id, authKey: key, authAlg: alg, dpopKey: dpop, dpopAlg: jws.ES256,
			http: srv.HTTPClient(nil)}
	}
	var issued []string // every token seen, to check none is printed

	t.Run("discovery", func(t *testing.T) {
		c := client(t, "", nil, "")
		req, _ := http.NewRequest(http.MethodGet, srv.Issuer+"/.well-known/openid-configuration", nil)
		r := c.do(req)
		if r.status != http.StatusOK || r.body["issuer"] != srv.Issuer {
			t.Fatalf("discovery: %d issuer %v", r.status, r.body["issuer"])
		}
		for _, k := range []string{"require_pushed_authorization_requests",
			"authorization_response_iss_parameter_supported", "tls_client_certificate_bound_access_tokens"} {
			if r.body[k] != true {
				t.Errorf("%s: %v", k, r.body[k])
			}
		}
		for k, want := range map[string][]string{
			"dpop_signing_alg_values_supported":                {"ES256", "PS256"},
			"token_endpoint_auth_signing_alg_values_supported": {"ES256", "PS256"},
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
			if !slices.Equal(got, want) {
				t.Errorf("%s: %v, want %v", k, got, want)
			}
		}
	})

	t.Run("client_credentials/private_key_jwt+DPoP", func(t *testing.T) {
		srv.ResetStats(t)
		for _, c := range []*testClient{client(t, "cc-ps256", ps, jws.PS256), client(t, "cc-es256", es, jws.ES256)} {
			at, _ := c.token(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts"}})
			issued = append(issued, at)
			r := c.dpopResource(http.MethodGet, "/accounts", at)
			if r.status != http.StatusOK {
				t.Fatalf("%s at the RS: %d %v", c.authAlg, r.status, r.body)
			}
			if r.str("client_id") != c.id || r.str("sub") != c.id || r.str("binding") != "dpop" || r.str("path") != "/accounts" {
				t.Fatalf("the RS saw %v", r.body)
			}
		}
		st := srv.Stats(t)
		if st.TokenRequests["client_credentials"] != 2 || st.RSAccepted != 2 {
			t.Fatalf("stats: %+v", st)
		}
		// Each client met each server's nonce demand once.
		if st.ASNonceChallenges != 2 || st.RSNonceChallenges != 2 {
			t.Errorf("nonce challenges: AS %d, RS %d", st.ASNonceChallenges, st.RSNonceChallenges)
		}
		if want := []string{"use_dpop_nonce", "use_dpop_nonce"}; !slices.Equal(st.Reasons("as"), want) || !slices.Equal(st.Reasons("rs"), want) {
			t.Errorf("rejections: %+v", st.Rejections)
		}
		if st.ASJTIRepeats != 0 || st.RSJTIRepeats != 0 {
			t.Errorf("jti repeats: AS %d, RS %d", st.ASJTIRepeats, st.RSJTIRepeats)
		}
	})

	t.Run("client_credentials/refused", func(t *testing.T) {
		c := client(t, "cc-es256", es, jws.ES256)
		// A wrong audience in the client assertion (FAPI 2.0: aud is the issuer).
		c.aud = srv.Issuer + "/token"
		srv.ResetStats(t)
		r := c.post("/token", url.Values{"grant_type": {"client_credentials"}})
		c.aud = ""
		if r.status != http.StatusUnauthorized || r.str("error") != "invalid_client" {
			t.Fatalf("aud = token endpoint: %d %v", r.status, r.body)
		}
		// No proof for a DPoP client.
		noDPoP := *c
		noDPoP.dpopKey = nil
		r = noDPoP.post("/token", url.Values{"grant_type": {"client_credentials"}})
		if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Fatalf("no DPoP proof: %d %v", r.status, r.body)
		}
		st := srv.Stats(t)
		if got := st.Reasons("as"); !slices.Equal(got, []string{"invalid_client", "invalid_grant"}) {
			t.Fatalf("AS rejections %v: %+v", got, st.Rejections)
		}
		if !strings.Contains(st.Rejections[0].Detail, "aud") {
			t.Errorf("detail %q", st.Rejections[0].Detail)
		}
	})

	t.Run("resource/refused", func(t *testing.T) {
		c := client(t, "cc-es256", es, jws.ES256)
		at, _ := c.token(url.Values{"grant_type": {"client_credentials"}})
		issued = append(issued, at)
		if r := c.dpopResource(http.MethodGet, "/accounts", at); r.status != http.StatusOK { // learns the nonce
			t.Fatalf("RS: %d %v", r.status, r.body)
		}
		srv.ResetStats(t)
		proof := func(o proofOpts) func(htu, nonce string) string {
			return func(htu, nonce string) string {
				o.nonce = nonce
				return c.proof(http.MethodGet, htu, o)
			}
		}
		other := &testClient{t: t, dpopKey: ecKey(t), dpopAlg: jws.ES256}
		replayed := c.proof(http.MethodGet, srv.RSURL+"/accounts", proofOpts{nonce: c.rsNonce, token: at})
		steps := []struct {
			name, scheme string
			proof        func(htu, nonce string) string
			status       int
			reason       string
		}{
			{"no proof", "DPoP", nil, 401, "missing_dpop_proof"},
			{"wrong ath", "DPoP", proof(proofOpts{ath: jws.B64(make([]byte, 32))}), 401, "dpop_ath_mismatch"},
			{"no ath", "DPoP", proof(proofOpts{}), 401, "dpop_ath_mismatch"},
			{"wrong htm", "DPoP", proof(proofOpts{token: at, htm: http.MethodPost}), 401, "dpop_htm_mismatch"},
			{"another key", "DPoP", func(htu, nonce string) string {
				return other.proof(http.MethodGet, htu, proofOpts{nonce: nonce, token: at})
			}, 401, "dpop_key_mismatch"},
			{"first use", "DPoP", func(string, string) string { return replayed }, 200, ""},
			{"replayed jti", "DPoP", func(string, string) string { return replayed }, 401, "dpop_replay"},
			{"as a bearer token", "Bearer", nil, 401, "dpop_token_as_bearer"},
			{"as a bearer token with a proof", "Bearer", proof(proofOpts{token: at}), 401, "dpop_token_as_bearer"},
		}
		var want []string
		for _, s := range steps {
			r := c.resource(http.MethodGet, "/accounts", s.scheme, at, s.proof)
			if r.status != s.status || r.str("error_description") != s.reason {
				t.Fatalf("%s: %d %v, want %d %s", s.name, r.status, r.body, s.status, s.reason)
			}
			if s.status == 401 && !strings.Contains(r.header.Get("WWW-Authenticate"), `error=`) {
				t.Errorf("%s: WWW-Authenticate %q", s.name, r.header.Get("WWW-Authenticate"))
			}
			if s.reason != "" {
				want = append(want, s.reason)
			}
		}
		st := srv.Stats(t)
		if got := st.Reasons("rs"); !slices.Equal(got, want) {
			t.Errorf("RS rejections %v, want %v", got, want)
		}
		if st.RSJTIRepeats != 1 || st.RSAccepted != 1 {
			t.Errorf("jti repeats %d, accepted %d", st.RSJTIRepeats, st.RSAccepted)
		}
		if st.Rejections[0].ClientID != "cc-es256" {
			t.Errorf("client_id %q", st.Rejections[0].ClientID)
		}
	})

	t.Run("resource/nonce rotated", func(t *testing.T) {
		c := client(t, "cc-es256", es, jws.ES256)
		at, _ := c.token(url.Values{"grant_type": {"client_credentials"}})
		issued = append(issued, at)
		if r := c.dpopResource(http.MethodPost, "/accounts/1/payments", at); r.status != http.StatusOK {
			t.Fatalf("RS: %d %v", r.status, r.body)
		}
		old := c.rsNonce
		srv.RotateNonces(t)
		srv.ResetStats(t)
		if r := c.dpopResource(http.MethodPost, "/accounts/1/payments", at); r.status != http.StatusOK || r.str("method") != "POST" {
			t.Fatalf("RS after rotation: %d %v", r.status, r.body)
		}
		if st := srv.Stats(t); st.RSNonceChallenges != 1 || c.rsNonce == old {
			t.Fatalf("nonce challenges %d, nonce changed %v", st.RSNonceChallenges, c.rsNonce != old)
		}
	})

	t.Run("authorization_code/PAR", func(t *testing.T) {
		c := client(t, "code", codeKey, jws.ES256)
		srv.ResetStats(t)

		// Without PAR, the authorization server refuses.
		direct := srv.Issuer + "/auth?" + url.Values{"client_id": {"code"}, "response_type": {"code"},
			"redirect_uri": {callback}, "scope": {"accounts"}, "code_challenge_method": {"S256"},
			"code_challenge": {jws.B64(make([]byte, 32))}}.Encode()
		back, err := url.Parse(srv.Login(t, direct, "alice"))
		if err != nil || back.Query().Get("error") != "invalid_request" {
			t.Fatalf("authorization without PAR: %v %v", back, err)
		}

		verifier := randomID(t) + randomID(t)
		sum := sha256.Sum256([]byte(verifier))
		r := c.post("/request", url.Values{"response_type": {"code"}, "redirect_uri": {callback},
			"scope": {"openid accounts"}, "state": {"st-1"}, "code_challenge_method": {"S256"},
			"code_challenge": {jws.B64(sum[:])}})
		if r.status != http.StatusCreated || !strings.HasPrefix(r.str("request_uri"), "urn:ietf:params:oauth:request_uri:") {
			t.Fatalf("PAR: %d %v", r.status, r.body)
		}
		authorize := srv.Issuer + "/auth?" + url.Values{"client_id": {"code"}, "request_uri": {r.str("request_uri")}}.Encode()
		back, err = url.Parse(srv.Login(t, authorize, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		q := back.Query()
		if !strings.HasPrefix(back.String(), callback+"?") || q.Get("state") != "st-1" || q.Get("iss") != srv.Issuer || q.Get("code") == "" {
			t.Fatalf("callback %s?%v", back.Path, q)
		}

		at, rt := c.token(url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
			"redirect_uri": {callback}, "code_verifier": {verifier}})
		issued = append(issued, at, rt)
		if rt == "" {
			t.Fatal("no refresh token")
		}
		res := c.dpopResource(http.MethodGet, "/accounts", at)
		if res.status != http.StatusOK || res.str("sub") != "alice" || res.str("client_id") != "code" || res.str("scope") != "accounts" {
			t.Fatalf("RS: %d %v", res.status, res.body)
		}

		at2, rt2 := c.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		issued = append(issued, at2, rt2)
		if res := c.dpopResource(http.MethodGet, "/accounts", at2); res.status != http.StatusOK || res.str("sub") != "alice" {
			t.Fatalf("RS with the refreshed token: %d %v", res.status, res.body)
		}
		st := srv.Stats(t)
		if st.PARRequests != 1 || st.TokenRequests["authorization_code"] != 1 || st.TokenRequests["refresh_token"] != 1 {
			t.Fatalf("stats: %+v", st)
		}
	})

	t.Run("tls_client_auth/certificate-bound", func(t *testing.T) {
		c := &testClient{t: t, srv: srv, id: "mtls", http: srv.HTTPClient(mtlsCert)}
		at, _ := c.token(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts"}})
		issued = append(issued, at)
		r := c.resource(http.MethodGet, "/accounts", "Bearer", at, nil)
		if r.status != http.StatusOK || r.str("binding") != "mtls" || r.str("client_id") != "mtls" {
			t.Fatalf("RS with the bound certificate: %d %v", r.status, r.body)
		}
		srv.ResetStats(t)
		for _, s := range []struct {
			name   string
			http   *http.Client
			scheme string
			reason string
		}{
			{"another certificate", srv.HTTPClient(otherCert), "Bearer", "certificate_mismatch"},
			{"no certificate", srv.HTTPClient(nil), "Bearer", "missing_client_certificate"},
			{"DPoP scheme", srv.HTTPClient(mtlsCert), "DPoP", "bearer_token_as_dpop"},
		} {
			o := *c
			o.http = s.http
			if r := o.resource(http.MethodGet, "/accounts", s.scheme, at, nil); r.status != 401 || r.str("error_description") != s.reason {
				t.Fatalf("%s: %d %v", s.name, r.status, r.body)
			}
		}
		// The AS refuses another certificate of the same CA.
		o := *c
		o.http = srv.HTTPClient(otherCert)
		if r := o.post("/token", url.Values{"grant_type": {"client_credentials"}}); r.str("error") != "invalid_client" {
			t.Fatalf("token with another certificate: %d %v", r.status, r.body)
		}
		st := srv.Stats(t)
		if got, want := st.Reasons("rs"), []string{"certificate_mismatch", "missing_client_certificate", "bearer_token_as_dpop"}; !slices.Equal(got, want) {
			t.Errorf("RS rejections %v", got)
		}
		if got := st.Reasons("as"); !slices.Equal(got, []string{"invalid_client"}) {
			t.Errorf("AS rejections %v", got)
		}
	})

	t.Run("no token printed", func(t *testing.T) {
		st, err := json.Marshal(srv.Stats(t))
		if err != nil {
			t.Fatal(err)
		}
		out := srv.Output()
		for _, tok := range issued {
			if tok == "" {
				continue
			}
			if strings.Contains(out, tok) || strings.Contains(string(st), tok) {
				t.Fatalf("a token was printed or logged")
			}
		}
		if len(issued) < 8 {
			t.Fatalf("only %d tokens checked", len(issued))
		}
	})
}

// TestExpiryAndRotation shows the knobs: access tokens that expire within
// seconds, and nonces the AS and the RS change on their own.
func TestExpiryAndRotation(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts node")
	}
	key, dpop := ecKey(t), ecKey(t)
	srv := Start(t, Options{
		AccessTokenTTL:  2 * time.Second,
		ASNonceRotation: 300 * time.Millisecond,
		RSNonceRotation: 300 * time.Millisecond,
		Clients: []Client{{ID: "cc", AuthMethod: PrivateKeyJWT, Keys: []crypto.PublicKey{key.Public()},
			GrantTypes: []string{"client_credentials"}, DPoP: true}},
	})
	c := &testClient{t: t, srv: srv, id: "cc", authKey: key, authAlg: jws.ES256, dpopKey: dpop, dpopAlg: jws.ES256,
		http: srv.HTTPClient(nil)}
	form := url.Values{"grant_type": {"client_credentials"}}
	start := time.Now()
	at, _ := c.token(form)
	deadline := time.Now().Add(15 * time.Second)
	// Until both servers have asked for a fresh nonce a second time (they
	// rotated), every request succeeds after at most one retry; then, until
	// the token expires, the RS keeps accepting it.
	for st := srv.Stats(t); st.ASNonceChallenges < 2 || st.RSNonceChallenges < 2; st = srv.Stats(t) {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation seen: %+v", st)
		}
		if st.ASNonceChallenges < 2 {
			c.token(form)
		}
		if r := c.dpopResource(http.MethodGet, "/accounts", at); r.status != http.StatusOK {
			if r.str("error_description") == "token_expired" {
				at, _ = c.token(form)
				start = time.Now()
				continue
			}
			t.Fatalf("RS: %d %v", r.status, r.body)
		}
	}
	for {
		r := c.dpopResource(http.MethodGet, "/accounts", at)
		if r.status == http.StatusUnauthorized && r.str("error_description") == "token_expired" {
			break
		}
		if r.status != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("RS: %d %v after %v", r.status, r.body, time.Since(start))
		}
	}
	if lived := time.Since(start); lived < time.Second || lived > 5*time.Second {
		t.Fatalf("the token lived %v", lived)
	}
	st := srv.Stats(t)
	if st.RSRefused["token_expired"] != 1 || st.ASJTIRepeats != 0 || st.RSJTIRepeats != 0 {
		t.Fatalf("stats: %+v", st)
	}
}
