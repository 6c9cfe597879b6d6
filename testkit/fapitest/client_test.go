package fapitest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// A minimal FAPI 2.0 client, written here so that the kit is proven without
// tokenproxy: private_key_jwt client assertions and DPoP proofs built with
// internal/jws, the nonce dance done by hand.

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return jws.B64(b)
}

// testClient is one registered client as the test drives it.
type testClient struct {
	t       *testing.T
	srv     *Server
	id      string
	authKey crypto.Signer // private_key_jwt; nil for tls_client_auth
	authAlg string
	dpopKey crypto.Signer // nil: no DPoP
	dpopAlg string
	http    *http.Client
	aud     string // of the client assertion; empty: the issuer

	asNonce, rsNonce string
}

func (c *testClient) assertion() string {
	c.t.Helper()
	now := time.Now().Unix()
	aud := c.aud
	if aud == "" {
		aud = c.srv.Issuer
	}
	a, err := jws.SignJSON(c.authKey, c.authAlg, map[string]any{"typ": "JWT"}, map[string]any{
		"iss": c.id, "sub": c.id, "aud": aud, "jti": randomID(c.t),
		"iat": now, "nbf": now, "exp": now + 60,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return a
}

type proofOpts struct {
	nonce string
	token string // ath of it
	ath   string // overrides the ath
	jti   string // fixed jti
	htm   string // overrides the method
}

func (c *testClient) proof(method, htu string, o proofOpts) string {
	c.t.Helper()
	jwk, err := jws.JWK(c.dpopKey.Public())
	if err != nil {
		c.t.Fatal(err)
	}
	claims := map[string]any{"htm": method, "htu": htu, "iat": time.Now().Unix(), "jti": o.jti}
	if o.htm != "" {
		claims["htm"] = o.htm
	}
	if o.jti == "" {
		claims["jti"] = randomID(c.t)
	}
	if o.nonce != "" {
		claims["nonce"] = o.nonce
	}
	if o.token != "" {
		sum := sha256.Sum256([]byte(o.token))
		claims["ath"] = jws.B64(sum[:])
	}
	if o.ath != "" {
		claims["ath"] = o.ath
	}
	p, err := jws.SignJSON(c.dpopKey, c.dpopAlg, map[string]any{"typ": "dpop+jwt", "jwk": jwk}, claims)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (r response) str(k string) string { s, _ := r.body[k].(string); return s }

func (c *testClient) do(req *http.Request) response {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	out := response{status: resp.StatusCode, header: resp.Header}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			c.t.Fatalf("%s %s: %d, not JSON: %.200s", req.Method, req.URL, resp.StatusCode, raw)
		}
	}
	return out
}

// post sends a form to an AS endpoint with client authentication and, for a
// DPoP client, a proof, retrying on use_dpop_nonce (3 times: a nonce may change during the dance).
func (c *testClient) post(endpoint string, form url.Values) response {
	c.t.Helper()
	u := c.srv.Issuer + endpoint
	for try := 0; ; try++ {
		f := url.Values{"client_id": {c.id}}
		for k, v := range form {
			f[k] = v
		}
		if c.authKey != nil {
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
			f.Set("client_assertion", c.assertion())
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(f.Encode()))
		if err != nil {
			c.t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if c.dpopKey != nil {
			req.Header.Set("DPoP", c.proof(http.MethodPost, u, proofOpts{nonce: c.asNonce}))
		}
		r := c.do(req)
		if n := r.header.Get("DPoP-Nonce"); n != "" {
			c.asNonce = n
		}
		if r.str("error") == "use_dpop_nonce" && try < 3 {
			continue
		}
		return r
	}
}

// token asks for a token and fails the test unless it gets one.
func (c *testClient) token(form url.Values) (access, refresh string) {
	c.t.Helper()
	r := c.post("/token", form)
	if r.status != http.StatusOK {
		c.t.Fatalf("token %s: %d %v", form.Get("grant_type"), r.status, r.body)
	}
	wantType := "Bearer"
	if c.dpopKey != nil {
		wantType = "DPoP"
	}
	if got := r.str("token_type"); got != wantType {
		c.t.Fatalf("token_type %q, want %q", got, wantType)
	}
	return r.str("access_token"), r.str("refresh_token")
}

// resource calls the RS at path with the token under scheme; proof builds
// the DPoP header (nil: none). It does the nonce dance (up to 3 times) when a proof is
// given and the RS asks for a nonce.
func (c *testClient) resource(method, path, scheme, token string, proof func(htu, nonce string) string) response {
	c.t.Helper()
	u := c.srv.RSURL + path
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
		if err != nil {
			c.t.Fatal(err)
		}
		req.Header.Set("Authorization", scheme+" "+token)
		if proof != nil {
			req.Header.Set("DPoP", proof(u, c.rsNonce))
		}
		r := c.do(req)
		if n := r.header.Get("DPoP-Nonce"); n != "" {
			c.rsNonce = n
		}
		if proof != nil && try < 3 && r.status == http.StatusUnauthorized &&
			strings.Contains(r.header.Get("WWW-Authenticate"), `error="use_dpop_nonce"`) {
			continue
		}
		return r
	}
}

// dpopResource calls the RS with a valid proof for token.
func (c *testClient) dpopResource(method, path, token string) response {
	c.t.Helper()
	return c.resource(method, path, "DPoP", token, func(htu, nonce string) string {
		return c.proof(method, htu, proofOpts{nonce: nonce, token: token})
	})
}

func tlsCert(t *testing.T, ca *pki.CA, cn string) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueClient(cn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
