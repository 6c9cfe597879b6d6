package fapi

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	fapiemu "github.com/tokenproxy/tokenproxy/emulator/fapi"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/fapitest"
)

// seen is the resource server's 200 body: what it verified.
type seen struct {
	Sub, Scope, Binding, Method, Path, X5t string
	ClientID                               string `json:"client_id"`
}

// checkResource makes the app's GET through the proxy for subject and
// checks that the resource server accepted the token and its binding.
func checkResource(t *testing.T, p *proc, subject, binding string) {
	t.Helper()
	a, err := p.resource(subject)
	if err != nil {
		t.Fatal(err)
	}
	var s seen
	if a.status != http.StatusOK || json.Unmarshal(a.body, &s) != nil {
		t.Fatalf("the app's GET through the proxy: %s", a)
	}
	if s.Sub != subject || s.ClientID != clientID || s.Binding != binding || s.Path != "/accounts" || s.Scope != "accounts" {
		t.Fatalf("the resource server saw %+v, want sub %s, client %s, binding %s", s, subject, clientID, binding)
	}
}

// TestConsentThroughPAR: the app starts a consent on the binary's consent
// API; the authorize URL carries only client_id and the request_uri the
// certified authorization server gave at PAR; the customer logs in; the
// callback (with iss) reaches the consent API, which exchanges the code;
// the app's GET with Tokenproxy-Subject reaches the resource server, which
// accepts the certificate-bound token. Client authentication
// private_key_jwt with PS256 and ES256 keys (the assertion's audience the
// issuer, the AS refuses any other), and tls_client_auth. Nothing secret
// reaches the logs, the metrics or the app.
func TestConsentThroughPAR(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct{ name, method, alg string }{
		{"private_key_jwt/PS256", fapitest.PrivateKeyJWT, "PS256"},
		{"private_key_jwt/ES256", fapitest.PrivateKeyJWT, "ES256"},
		{"tls_client_auth", fapitest.TLSClientAuth, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			var keys []signingKey
			client := codeClient(tc.method)
			lines := []string{"auth_method: " + tc.method, "certificate_bound: true"}
			if tc.method == fapitest.PrivateKeyJWT {
				k := fx.key(t, "client-"+tc.alg, tc.alg)
				keys = append(keys, k)
				client.Keys = append(client.Keys, k.pub)
				lines = append(lines, "private_key: {file: "+k.path+"}")
			} else {
				client.SubjectDN = fapitest.SubjectDN(fx.cert.Leaf)
			}
			client.CertificateBound = true
			srv := fx.startBank(t, fapitest.Options{Clients: []fapitest.Client{client}})
			p := fx.run(t, route{issuer: srv.Issuer, upstream: srv.RSURL, token: lines})

			p.consent(t, srv, "alice")
			for range 3 {
				checkResource(t, p, "alice", "mtls")
			}
			st := srv.Stats(t)
			if st.PARRequests != 1 || st.TokenRequests["authorization_code"] != 1 || st.RSAccepted != 3 || len(st.Rejections) != 0 {
				t.Fatalf("the bank saw PAR %d, code exchanges %d, resource requests accepted %d, rejections %+v",
					st.PARRequests, st.TokenRequests["authorization_code"], st.RSAccepted, st.Rejections)
			}
			checkNoLeak(t, st, keys, map[string][]byte{"the log": p.Logs(), "the metrics": p.metrics(t), "the app's bytes": p.appBytes()})
		})
	}
}

// TestCallbackRefusals: a callback whose iss is not the issuer's, or has
// none, is refused by the binary; no code is exchanged and no consent is
// stored; a wrong state is refused and leaves the started consent usable.
func TestCallbackRefusals(t *testing.T) {
	skipShort(t)
	fx := newFixture(t)
	k := fx.key(t, "client", "ES256")
	client := codeClient(fapitest.PrivateKeyJWT, k.pub)
	client.CertificateBound = true
	srv := fx.startBank(t, fapitest.Options{Clients: []fapitest.Client{client}})
	p := fx.run(t, route{issuer: srv.Issuer, upstream: srv.RSURL,
		token: []string{"auth_method: private_key_jwt", "private_key: {file: " + k.path + "}", "certificate_bound: true"}})

	for _, tc := range []struct{ name, iss string }{
		{"iss of another server", "https://127.0.0.1:1"},
		{"iss with a trailing slash", srv.Issuer + "/"},
		{"no iss", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.ResetStats(t)
			back := srv.Login(t, p.start(t, "mallory"), "mallory")
			a := p.callbackAnswer(t, withQuery(t, back, "iss", tc.iss))
			loc, _ := url.Parse(a.header.Get("Location"))
			if a.status != http.StatusSeeOther || loc == nil || loc.Query().Get("error") != "invalid_issuer" {
				t.Fatalf("a callback with iss %q: %s, Location %q; want a redirect with error=invalid_issuer", tc.iss, a, a.header.Get("Location"))
			}
			if st := p.status(t, "mallory"); st != "" {
				t.Fatalf("after a refused iss the consent is %q", st)
			}
			if n := srv.Stats(t).TokenRequests["authorization_code"]; n != 0 {
				t.Fatalf("after a refused iss the binary exchanged the code (%d token requests)", n)
			}
			// The state is used up: the genuine callback is refused too.
			if a := p.callbackAnswer(t, back); a.status == http.StatusSeeOther && strings.Contains(a.header.Get("Location"), "status=active") {
				t.Fatalf("the state survived a refused iss: %s", a.header.Get("Location"))
			}
		})
	}

	t.Run("wrong state", func(t *testing.T) {
		srv.ResetStats(t)
		back := srv.Login(t, p.start(t, "bob"), "bob")
		a := p.callbackAnswer(t, withQuery(t, back, "state", "forged-state-0123456789"))
		if a.status == http.StatusSeeOther && strings.Contains(a.header.Get("Location"), "status=active") || a.status < 300 {
			t.Fatalf("a callback with a forged state: %s, Location %q", a, a.header.Get("Location"))
		}
		if st := p.status(t, "bob"); st != "" {
			t.Fatalf("after a forged state the consent is %q", st)
		}
		if n := srv.Stats(t).TokenRequests["authorization_code"]; n != 0 {
			t.Fatalf("after a forged state the binary exchanged a code (%d token requests)", n)
		}
		t.Logf("forged state: %s", a)
		// The started consent is intact: the genuine callback completes it.
		if q := p.callback(t, back).Query(); q.Get("status") != "active" {
			t.Fatalf("the genuine callback after a forged one: %v", q)
		}
		checkResource(t, p, "bob", "mtls")
	})
	checkNoLeak(t, srv.Stats(t), []signingKey{k}, map[string][]byte{"the log": p.Logs(), "the metrics": p.metrics(t), "the app's bytes": p.appBytes()})
}

// TestRefusedConfigurations: what FAPI 2.0 forbids, or the bank cannot do,
// stops the binary before it serves, with a message naming the route and
// the field (tokenproxy validate, and run).
func TestRefusedConfigurations(t *testing.T) {
	skipShort(t)
	fx := newFixture(t)
	l, err := e2eenv.NewListeners()
	if err != nil {
		t.Fatal(err)
	}

	// A bank without PAR (the Go emulator: oidc-provider's FAPI 2.0 profile
	// always has it).
	emu := fapiemu.New(fapiemu.Config{NoPAR: true, Clients: map[string]fapiemu.Client{
		clientID: {Method: "tls_client_auth", CertSubject: "tpp.example", RedirectURIs: []string{callbackURL}, CertificateBound: true}}})
	sc, err := fx.ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(emu)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: fx.ca.CertPool()}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	emu.SetIssuer(hs.URL)

	rsa := fx.key(t, "rsa", "PS256")
	for _, tc := range []struct {
		name  string
		r     route
		wants []string
	}{
		{"a bank without PAR", route{issuer: hs.URL, upstream: hs.URL, token: []string{"auth_method: tls_client_auth", "certificate_bound: true"}},
			[]string{"routes[0](bank).token.par", "no pushed_authorization_request_endpoint"}},
		{"RS256", route{issuer: hs.URL, upstream: hs.URL, token: []string{"auth_method: private_key_jwt", "private_key: {file: " + rsa.path + "}",
			"signing_alg: RS256", "certificate_bound: true"}},
			[]string{"routes[0](bank).token.signing_alg", "RS256 is not allowed"}},
		{"another issuer's metadata", route{issuer: hs.URL + "/", upstream: hs.URL, token: []string{"auth_method: tls_client_auth", "certificate_bound: true"}},
			[]string{"routes[0](bank).token", "issuer"}},
		{"no sender constraint", route{issuer: hs.URL, upstream: hs.URL, token: []string{"auth_method: tls_client_auth"}},
			[]string{"routes[0](bank).token", "sender-constrained"}},
		{"client_secret_basic", route{issuer: hs.URL, upstream: hs.URL, token: []string{"auth_method: client_secret_basic",
			"client_secret: {env: TOKENPROXY_E2E_UNSET}", "certificate_bound: true"}},
			[]string{"routes[0](bank).token.auth_method", "not allowed by token.profile fapi2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := fx.config(l, tc.r)
			code, out := validate(t, yaml)
			if code == 0 {
				t.Fatalf("tokenproxy validate accepted it:\n%s", out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(out, w) {
					t.Fatalf("tokenproxy validate (exit %d) does not say %q:\n%s", code, w, out)
				}
			}
			t.Logf("validate, exit %d: %s", code, lastLine(out))
			// run stops at start-up with the same message.
			ctx, cancel := contextFor(t)
			defer cancel()
			if p, err := e2eenv.Run(ctx, binary, t.TempDir(), yaml, l); err == nil {
				p.Kill()
				t.Fatal("tokenproxy run served")
			} else if !strings.Contains(err.Error(), tc.wants[0]) {
				t.Fatalf("tokenproxy run stopped without naming %s: %v", tc.wants[0], err)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
