package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
)

// fapiAS is a FAPI 2.0 authorization server for tests, over mTLS: metadata,
// a pushed authorization request endpoint, an authorization endpoint that
// accepts only pushed requests, and a token endpoint. It verifies client
// assertions and request objects with go-jose, an independent verifier.
type fapiAS struct {
	t      testing.TB
	srv    *httptest.Server
	issuer string
	// keys are the private_key_jwt clients' public keys by client_id;
	// certClients the tls_client_auth ones (the certificate's CN).
	keys        map[string]crypto.PublicKey
	certClients map[string]string

	mu sync.Mutex
	// noPAR answers 404 at /par; parError answers 400 with that error code.
	noPAR    bool
	parError string
	// respIss is the iss of authorization responses ("-" for none); the issuer when empty.
	respIss  string
	pushed   map[string]url.Values // request_uri -> the request
	codes    map[string]url.Values // code -> the request
	jtis     map[string]bool
	parCalls []url.Values // every form posted to /par
	failures []string     // what the AS refused, for the test's message
}

func newFAPIAS(t *testing.T) *fapiAS {
	t.Helper()
	newEnv(t, false) // the bank PKI
	as := &fapiAS{t: t, keys: map[string]crypto.PublicKey{"jwt-ec-app": bankPKI.ec.Public(), "jwt-rsa-app": bankPKI.rsa.Public()},
		certClients: map[string]string{stetClientID: qwacCN}, pushed: map[string]url.Values{}, codes: map[string]url.Values{}, jtis: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", as.metadata)
	mux.HandleFunc("POST /par", as.par)
	mux.HandleFunc("GET /authorize", as.authorize)
	mux.HandleFunc("POST /token", as.token)
	as.srv = httptest.NewUnstartedServer(mux)
	as.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*bankPKI.server}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: bankPKI.ca.CertPool(), MinVersion: tls.VersionTLS12}
	as.srv.StartTLS()
	t.Cleanup(as.srv.Close)
	as.issuer = as.srv.URL
	return as
}

func (as *fapiAS) metadata(w http.ResponseWriter, _ *http.Request) {
	as.mu.Lock()
	noPAR := as.noPAR
	as.mu.Unlock()
	m := map[string]any{"issuer": as.issuer, "authorization_endpoint": as.issuer + "/authorize", "token_endpoint": as.issuer + "/token",
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt", "tls_client_auth"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"PS256", "ES256"},
		"authorization_response_iss_parameter_supported":   true, "require_pushed_authorization_requests": !noPAR}
	if !noPAR {
		m["pushed_authorization_request_endpoint"] = as.issuer + "/par"
	}
	_ = json.NewEncoder(w).Encode(m)
}

func (as *fapiAS) fail(w http.ResponseWriter, status int, code, why string) {
	as.mu.Lock()
	as.failures = append(as.failures, why)
	as.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": why})
}

// client authenticates the client of a PAR or token request: a client
// assertion verified with go-jose (PS256 or ES256 only, aud the issuer, a
// fresh jti, a short exp) or the mTLS certificate.
func (as *fapiAS) client(r *http.Request) (string, error) {
	id := r.PostForm.Get("client_id")
	if a := r.PostForm.Get("client_assertion"); a != "" {
		pub, ok := as.keys[id]
		if !ok || r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			return "", errors.New("unknown jwt client")
		}
		tok, err := jwt.ParseSigned(a, []jose.SignatureAlgorithm{jose.PS256, jose.ES256})
		if err != nil {
			return "", fmt.Errorf("assertion: %w", err)
		}
		var c jwt.Claims
		if err := tok.Claims(pub, &c); err != nil {
			return "", fmt.Errorf("assertion signature: %w", err)
		}
		if err := c.ValidateWithLeeway(jwt.Expected{Issuer: id, Subject: id, AnyAudience: jwt.Audience{as.issuer}, Time: time.Now()}, 0); err != nil {
			return "", fmt.Errorf("assertion claims: %w", err)
		}
		if c.Expiry == nil || c.IssuedAt == nil || c.Expiry.Time().Sub(c.IssuedAt.Time()) > 5*time.Minute || c.ID == "" {
			return "", errors.New("assertion: exp too far or no jti")
		}
		as.mu.Lock()
		defer as.mu.Unlock()
		if as.jtis[c.ID] {
			return "", errors.New("assertion: jti replayed")
		}
		as.jtis[c.ID] = true
		return id, nil
	}
	if cn, ok := as.certClients[id]; ok && len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == cn {
		return id, nil
	}
	return "", errors.New("no client authentication")
}

func (as *fapiAS) par(w http.ResponseWriter, r *http.Request) {
	as.mu.Lock()
	noPAR, parErr := as.noPAR, as.parError
	as.mu.Unlock()
	if noPAR {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		as.fail(w, 400, "invalid_request", "form")
		return
	}
	as.mu.Lock()
	as.parCalls = append(as.parCalls, r.PostForm)
	as.mu.Unlock()
	id, err := as.client(r)
	if err != nil {
		as.fail(w, 401, "invalid_client", err.Error())
		return
	}
	if parErr != "" {
		as.fail(w, 400, parErr, "refused by the test")
		return
	}
	req := r.PostForm
	if ro := req.Get("request"); ro != "" {
		if req, err = as.requestObject(id, ro); err != nil {
			as.fail(w, 400, "invalid_request_object", err.Error())
			return
		}
	}
	if req.Get("client_id") != id || req.Get("response_type") != "code" || req.Get("code_challenge_method") != "S256" || req.Get("code_challenge") == "" || req.Get("state") == "" {
		as.fail(w, 400, "invalid_request", "missing parameters")
		return
	}
	uri := "urn:ietf:params:oauth:request_uri:" + randomString()
	as.mu.Lock()
	as.pushed[uri] = req
	as.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"request_uri": uri, "expires_in": 60})
}

// requestObject verifies a request object (RFC 9101, FAPI 2.0): typ, the
// signature, iss, aud, exp - nbf at most an hour; its claims are the request.
func (as *fapiAS) requestObject(clientID, raw string) (url.Values, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.PS256, jose.ES256})
	if err != nil {
		return nil, err
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); typ != "oauth-authz-req+jwt" {
		return nil, fmt.Errorf("typ %q", typ)
	}
	pub := as.keys["jwt-ec-app"]
	var c jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(pub, &c, &all); err != nil {
		return nil, err
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: clientID, AnyAudience: jwt.Audience{as.issuer}, Time: time.Now()}, 0); err != nil {
		return nil, err
	}
	if c.Expiry == nil || c.NotBefore == nil || c.Expiry.Time().Sub(c.NotBefore.Time()) > time.Hour || c.ID == "" || c.IssuedAt == nil {
		return nil, errors.New("exp, nbf, iat or jti")
	}
	q := url.Values{}
	for k, v := range all {
		if s, ok := v.(string); ok {
			q.Set(k, s)
		}
	}
	return q, nil
}

// authorize accepts only client_id and request_uri, and logs the customer
// named by psu in at once.
func (as *fapiAS) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	as.mu.Lock()
	req, ok := as.pushed[q.Get("request_uri")]
	delete(as.pushed, q.Get("request_uri"))
	respIss := as.respIss
	as.mu.Unlock()
	for k := range q {
		if k != "client_id" && k != "request_uri" && k != "psu" {
			ok = false
		}
	}
	if !ok || q.Get("client_id") != req.Get("client_id") {
		as.fail(w, 400, "invalid_request", "not a pushed request")
		return
	}
	code := randomString()
	as.mu.Lock()
	as.codes[code] = req
	as.mu.Unlock()
	back, _ := url.Parse(req.Get("redirect_uri"))
	bq := url.Values{"code": {code}, "state": {req.Get("state")}}
	switch respIss {
	case "":
		bq.Set("iss", as.issuer)
	case "-":
	default:
		bq.Set("iss", respIss)
	}
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (as *fapiAS) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		as.fail(w, 400, "invalid_request", "form")
		return
	}
	id, err := as.client(r)
	if err != nil {
		as.fail(w, 401, "invalid_client", err.Error())
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		as.mu.Lock()
		req, ok := as.codes[f.Get("code")]
		delete(as.codes, f.Get("code"))
		as.mu.Unlock()
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		if !ok || req.Get("client_id") != id || req.Get("redirect_uri") != f.Get("redirect_uri") ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != req.Get("code_challenge") {
			as.fail(w, 400, "invalid_grant", "code, client, redirect_uri or verifier")
			return
		}
	case "client_credentials":
	default:
		as.fail(w, 400, "unsupported_grant_type", f.Get("grant_type"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + randomString(), "token_type": "Bearer", "expires_in": 300,
		"refresh_token": "rt-" + randomString()})
}

func (as *fapiAS) refusals() string {
	as.mu.Lock()
	defer as.mu.Unlock()
	return strings.Join(as.failures, "; ")
}

// client is the route's mTLS client (the QWAC), following no redirect.
func (as *fapiAS) httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: bankPKI.ca.CertPool(), Certificates: []tls.Certificate{*bankPKI.client}, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// fapiRoute is an authorization_code route on as, FAPI 2.0 style: PAR,
// PKCE, iss required, the client assertion addressed to the issuer.
func (as *fapiAS) route(t *testing.T, store consentstore.Store, auth ClientAuth, mod func(*AuthCodeConfig)) *AuthCode {
	t.Helper()
	hc := as.httpClient()
	t.Cleanup(hc.CloseIdleConnections)
	auth.Audience = as.issuer
	cfg := AuthCodeConfig{Endpoint: Endpoint{Route: "psd2", TokenURL: as.issuer + "/token", Client: hc, Auth: auth},
		AuthorizeURL: as.issuer + "/authorize", Scopes: []string{"accounts"}, PKCE: true, Store: store,
		Pushed: Pushed{PAR: true, PARURL: as.issuer + "/par", Issuer: as.issuer, RequireIss: true}}
	if mod != nil {
		mod(&cfg)
	}
	a, err := NewAuthCode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// countingStore counts the started consents written.
type countingStore struct {
	consentstore.Store
	mu      sync.Mutex
	pending int
}

func (s *countingStore) PutPending(ctx context.Context, p *consentstore.Pending) error {
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	return s.Store.PutPending(ctx, p)
}

func (s *countingStore) started() int { s.mu.Lock(); defer s.mu.Unlock(); return s.pending }

// consentAPI serves routes on a test listener, with "app" as the caller
// and no return URL (the callback answers JSON).
func consentAPI(t *testing.T, store consentstore.Store, routes ...*AuthCode) (*httptest.Server, string) {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	api, err := NewAPI(APIConfig{Routes: routes, Store: store, CallbackURL: srv.URL + "/v1/callback",
		Authenticate: func(*http.Request) (string, error) { return "app", nil }})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", api)
	return srv, srv.URL + "/v1/callback"
}

// startConsent posts a start and returns the status and the decoded answer.
func startConsent(t *testing.T, api *httptest.Server, subject string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(api.URL+"/v1/routes/psd2/consents/"+subject, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// loginAt runs the customer's login at the bank and returns the callback
// URL the browser is sent to.
func (as *fapiAS) loginAt(t *testing.T, authorizeURL, psu string) *url.URL {
	t.Helper()
	resp, err := as.httpClient().Get(authorizeURL + "&psu=" + psu)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: HTTP %d; the AS refused: %s", resp.StatusCode, as.refusals())
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// callback follows the bank's redirect to the consent API's callback.
func callback(t *testing.T, loc *url.URL) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func hasConsent(t *testing.T, store consentstore.Store, subject string) bool {
	t.Helper()
	_, err := store.Get(context.Background(), consentstore.Key{Route: "psd2", Owner: "app", Subject: subject})
	if err != nil && !errors.Is(err, consentstore.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestPARConsentEndToEnd: a consent started through the consent API is
// pushed to the bank with the client authentication (PS256 and ES256
// assertions addressed to the issuer, and tls_client_auth), the authorize
// URL carries only client_id and request_uri, and the callback with the
// bank's iss stores the consent.
func TestPARConsentEndToEnd(t *testing.T) {
	newEnv(t, false) // the bank PKI
	for _, tc := range []struct {
		name string
		auth ClientAuth
	}{
		{"private_key_jwt PS256", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-rsa-app", Key: bankPKI.rsa, Alg: "PS256"}},
		{"private_key_jwt ES256", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-ec-app", Key: bankPKI.ec}},
		{"tls_client_auth", ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := newFAPIAS(t)
			store := boltStore(t)
			route := as.route(t, store, tc.auth, func(c *AuthCodeConfig) { c.DPoPJKT = "jkt-of-the-dpop-key" })
			api, callbackURL := consentAPI(t, store, route)
			status, out := startConsent(t, api, "alice")
			if status != http.StatusCreated {
				t.Fatalf("start: HTTP %d %v; the AS refused: %s", status, out, as.refusals())
			}
			au, _ := url.Parse(out["authorize_url"].(string))
			if q := au.Query(); len(q) != 2 || q.Get("client_id") != tc.auth.ClientID || !strings.HasPrefix(q.Get("request_uri"), "urn:ietf:params:oauth:request_uri:") {
				t.Fatalf("the authorize URL carries more than client_id and request_uri: %s", au.RawQuery)
			}
			as.mu.Lock()
			pushed := as.parCalls[0]
			as.mu.Unlock()
			for k, want := range map[string]string{"response_type": "code", "redirect_uri": callbackURL, "scope": "accounts",
				"code_challenge_method": "S256", "dpop_jkt": "jkt-of-the-dpop-key", "state": out["state"].(string)} {
				if got := pushed.Get(k); got != want {
					t.Errorf("pushed %s = %q, want %q", k, got, want)
				}
			}
			loc := as.loginAt(t, au.String(), "alice")
			if code, res := callback(t, loc); code != http.StatusOK || res["status"] != "active" {
				t.Fatalf("callback: HTTP %d %v; the AS refused: %s", code, res, as.refusals())
			}
			if !hasConsent(t, store, "alice") {
				t.Fatal("no consent stored")
			}
		})
	}
}

// TestPARRefusedStoresNothing: the bank refuses the pushed request (400
// with an error) or has no PAR endpoint (404): the app gets a 502 naming
// the refusal, and no started consent is stored.
func TestPARRefusedStoresNothing(t *testing.T) {
	for _, tc := range []struct {
		name, parError string
		noPAR          bool
		want           string
	}{
		{"400 invalid_request", "invalid_request", false, "answered HTTP 400 invalid_request"},
		{"bank without PAR", "", true, "answered HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := newFAPIAS(t)
			as.parError, as.noPAR = tc.parError, tc.noPAR
			store := &countingStore{Store: boltStore(t)}
			api, _ := consentAPI(t, store, as.route(t, store, ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}, nil))
			status, out := startConsent(t, api, "alice")
			if status != http.StatusBadGateway || out["error"] != "authorization_request_refused" || !strings.Contains(out["message"].(string), tc.want) ||
				!strings.Contains(out["message"].(string), "pushed authorization request endpoint") {
				t.Fatalf("start: HTTP %d %v", status, out)
			}
			if strings.Contains(fmt.Sprint(out), "refused by the test") {
				t.Fatalf("the bank's description reached the app: %v", out)
			}
			if n := store.started(); n != 0 {
				t.Fatalf("%d started consents stored", n)
			}
		})
	}
}

// TestIssuerCheckRefuses: an authorization response from another issuer,
// or without iss where it is required, is refused: no code exchange, no
// consent. The exchange endpoint checks the iss the app passes the same way.
func TestIssuerCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, respIss string
		requireIss    bool
		metadataIss   bool // the metadata says authorization_response_iss_parameter_supported
	}{
		{"another issuer", "https://evil.example", false, false},
		{"iss missing on a route that requires it", "-", true, false},
		{"iss missing where the metadata promises it", "-", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := newFAPIAS(t)
			as.respIss = tc.respIss
			store := boltStore(t)
			route := as.route(t, store, ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}, func(c *AuthCodeConfig) {
				c.RequireIss = tc.requireIss
				if tc.metadataIss {
					c.Endpoint.Discovery = discovery.Static(&discovery.Metadata{Issuer: as.issuer, IssParameterSupported: true})
				}
			})
			api, _ := consentAPI(t, store, route)
			_, out := startConsent(t, api, "alice")
			loc := as.loginAt(t, out["authorize_url"].(string), "alice")
			if code, res := callback(t, loc); code != http.StatusOK || res["error"] != "invalid_issuer" || res["status"] != "" {
				t.Fatalf("callback: HTTP %d %v", code, res)
			}
			if hasConsent(t, store, "alice") {
				t.Fatal("a consent was stored from a refused response")
			}
			as.mu.Lock()
			codes := len(as.codes)
			as.mu.Unlock()
			if codes != 1 {
				t.Fatalf("the code was exchanged (%d codes left)", codes)
			}
		})
	}
	t.Run("exchange endpoint", func(t *testing.T) {
		as := newFAPIAS(t)
		store := boltStore(t)
		route := as.route(t, store, ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}, nil)
		api, _ := consentAPI(t, store, route)
		body := `{"redirect_uri":"https://app.example/cb"}`
		resp, err := http.Post(api.URL+"/v1/routes/psd2/consents/bob", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		loc := as.loginAt(t, out["authorize_url"].(string), "bob")
		ex, _ := json.Marshal(map[string]string{"code": loc.Query().Get("code"), "state": loc.Query().Get("state"), "iss": "https://evil.example"})
		resp, err = http.Post(api.URL+"/v1/routes/psd2/consents/bob/exchange", "application/json", strings.NewReader(string(ex)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Tokenproxy-Error") != "invalid_issuer" {
			t.Fatalf("exchange with another issuer: HTTP %d %s", resp.StatusCode, resp.Header.Get("X-Tokenproxy-Error"))
		}
		if hasConsent(t, store, "bob") {
			t.Fatal("a consent was stored from a refused response")
		}
	})
}

// TestPARWrongState: a callback whose state was not issued is refused and
// stores nothing, with PAR as without.
func TestPARWrongState(t *testing.T) {
	as := newFAPIAS(t)
	store := boltStore(t)
	api, _ := consentAPI(t, store, as.route(t, store, ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}, nil))
	_, out := startConsent(t, api, "alice")
	loc := as.loginAt(t, out["authorize_url"].(string), "alice")
	q := loc.Query()
	q.Set("state", "forged-"+q.Get("state"))
	loc.RawQuery = q.Encode()
	if code, res := callback(t, loc); code != http.StatusBadRequest || res["error"] != "invalid_state" {
		t.Fatalf("callback: HTTP %d %v", code, res)
	}
	if hasConsent(t, store, "alice") {
		t.Fatal("a consent was stored with a forged state")
	}
}

// TestPARRequestObject: the pushed parameters travel as a signed request
// object that go-jose verifies (typ, iss, aud = issuer, exp/nbf, jti),
// with tls_client_auth as the client authentication.
func TestPARRequestObject(t *testing.T) {
	as := newFAPIAS(t)
	store := boltStore(t)
	route := as.route(t, store, ClientAuth{Method: TLSClientAuth, ClientID: stetClientID}, func(c *AuthCodeConfig) {
		c.RequestObject, c.RequestKey = true, bankPKI.ec
	})
	as.keys["jwt-ec-app"] = bankPKI.ec.Public()
	api, _ := consentAPI(t, store, route)
	status, out := startConsent(t, api, "alice")
	if status != http.StatusCreated {
		t.Fatalf("start: HTTP %d %v; the AS refused: %s", status, out, as.refusals())
	}
	as.mu.Lock()
	pushed := as.parCalls[0]
	as.mu.Unlock()
	for _, k := range []string{"state", "redirect_uri", "code_challenge", "scope"} {
		if pushed.Has(k) {
			t.Fatalf("%s was sent beside the request object", k)
		}
	}
	loc := as.loginAt(t, out["authorize_url"].(string), "alice")
	if code, res := callback(t, loc); code != http.StatusOK || res["status"] != "active" {
		t.Fatalf("callback: HTTP %d %v; the AS refused: %s", code, res, as.refusals())
	}
}

// TestPARNeedsAnEndpoint: a route that pushes its requests to a bank whose
// metadata has no PAR endpoint is refused when built, naming the document.
func TestPARNeedsAnEndpoint(t *testing.T) {
	md := discovery.Static(&discovery.Metadata{URL: "https://auth.bank.example/.well-known/oauth-authorization-server",
		Issuer: "https://auth.bank.example", AuthorizationEndpoint: "https://auth.bank.example/authorize", TokenEndpoint: "https://auth.bank.example/token"})
	_, err := NewAuthCode(AuthCodeConfig{Endpoint: Endpoint{Route: "psd2", Discovery: md, Client: http.DefaultClient,
		Auth: ClientAuth{Method: TLSClientAuth, ClientID: "x"}}, Store: boltStore(t), Pushed: Pushed{PAR: true, Issuer: "https://auth.bank.example"}})
	want := "route psd2: the bank's metadata at https://auth.bank.example/.well-known/oauth-authorization-server has no pushed_authorization_request_endpoint; token.par needs one"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

// The assertion's algorithm follows Alg, and a key that cannot sign with it is refused.
func TestClientAuthAlg(t *testing.T) {
	newEnv(t, false) // the bank PKI
	for _, tc := range []struct {
		key  crypto.Signer
		alg  string
		want jose.SignatureAlgorithm
	}{
		{bankPKI.rsa, "PS256", jose.PS256}, {bankPKI.rsa, "", jose.RS256}, {bankPKI.ec, "", jose.ES256}, {bankPKI.ec, "ES256", jose.ES256},
	} {
		a := ClientAuth{Method: PrivateKeyJWT, ClientID: "c", Key: tc.key, Alg: tc.alg, Audience: "https://auth.bank.example"}
		s, err := a.assertion(a.Audience, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.ParseSigned(s, []jose.SignatureAlgorithm{tc.want})
		if err != nil {
			t.Fatalf("%s: %v", tc.alg, err)
		}
		var c jwt.Claims
		if err := tok.Claims(tc.key.Public(), &c); err != nil {
			t.Fatalf("%s: %v", tc.alg, err)
		}
	}
	bad := ClientAuth{Method: PrivateKeyJWT, ClientID: "c", Key: bankPKI.ec, Alg: "PS256"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "PS256 needs an RSA key") {
		t.Fatalf("an EC key for PS256: %v", err)
	}
}

var _ = []any{(*ecdsa.PrivateKey)(nil), (*rsa.PrivateKey)(nil)}
