package oauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

const (
	stetClientID = "PSDFR-ACPR-13807"
	qwacCN       = "tpp.example QWAC"
	appCallback  = "https://app.example/cb"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var (
	pkiOnce sync.Once
	bankPKI struct {
		ca             *pki.CA
		server, client *tls.Certificate
		ec             *ecdsa.PrivateKey
		rsa            *rsa.PrivateKey
	}
)

// env is the STET emulator with its authorization server, served over mTLS.
type env struct {
	h      *stet.Handler
	srv    *httptest.Server
	client *http.Client // presents the QWAC
	clk    *clock
}

func newEnv(t testing.TB, rotate bool, extraClients ...map[string]stet.Client) *env {
	t.Helper()
	pkiOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		bankPKI.ca, err = pki.NewCA("bank test CA")
		if err != nil {
			panic(err)
		}
		var e1, e2, e3, e4 error
		bankPKI.server, e1 = bankPKI.ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
		bankPKI.client, e2 = bankPKI.ca.IssueClient(qwacCN)
		bankPKI.ec, e3 = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		bankPKI.rsa, e4 = rsa.GenerateKey(rand.Reader, 2048)
		for _, e := range []error{e1, e2, e3, e4} {
			must(e)
		}
		if err != nil {
			panic(err)
		}
	})
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	clients := map[string]stet.Client{
		stetClientID:  {Method: "tls_client_auth", CertSubject: qwacCN},
		"basic-app":   {Method: "client_secret_basic", Secret: "basic s3cret:&"},
		"post-app":    {Method: "client_secret_post", Secret: "post-s3cret"},
		"jwt-ec-app":  {Method: "private_key_jwt", Key: bankPKI.ec.Public()},
		"jwt-rsa-app": {Method: "private_key_jwt", Key: bankPKI.rsa.Public()},
	}
	for _, m := range extraClients {
		maps.Copy(clients, m)
	}
	h := stet.New(stet.Config{Now: clk.Now, OAuth: &stet.OAuthConfig{Rotate: rotate, Clients: clients}})
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*bankPKI.server}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: bankPKI.ca.CertPool(), MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: bankPKI.ca.CertPool(), Certificates: []tls.Certificate{*bankPKI.client}, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(client.CloseIdleConnections)
	return &env{h: h, srv: srv, client: client, clk: clk}
}

func (e *env) url(p string) string { return e.srv.URL + "/stet/psd2/oauth/" + p }

func (e *env) endpoint(route string, auth ClientAuth) Endpoint {
	return Endpoint{Route: route, TokenURL: e.url("token"), Client: e.client, Auth: auth, Now: e.clk.Now}
}

func (e *env) stetAuth() ClientAuth { return ClientAuth{Method: TLSClientAuth, ClientID: stetClientID} }

// countObserver counts observer calls.
type countObserver struct{ refreshed, invalid, stored atomic.Int64 }

func (o *countObserver) Refreshed(string)     { o.refreshed.Add(1) }
func (o *countObserver) InvalidGrant(string)  { o.invalid.Add(1) }
func (o *countObserver) ConsentStored(string) { o.stored.Add(1) }

func openBolt(t testing.TB, path string) consentstore.Store {
	t.Helper()
	s, err := consentstore.OpenBolt(path, testRing(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tempBolt(t testing.TB) (consentstore.Store, string) {
	path := filepath.Join(t.TempDir(), "consents.db")
	s := openBolt(t, path)
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func (e *env) authCode(t testing.TB, store consentstore.Store, obs Observer, hooks *Hooks) *AuthCode {
	t.Helper()
	a, err := NewAuthCode(AuthCodeConfig{Endpoint: e.endpoint("bpce", e.stetAuth()), AuthorizeURL: e.url("authorize"),
		RevocationURL: e.url("revoke"), Scopes: []string{"aisp"}, PKCE: true, RefreshTTL: 90 * 24 * time.Hour,
		Store: store, Observer: obs, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// login runs the scripted customer login for authURL and returns the
// redirect it ends with.
func (e *env) login(t testing.TB, authURL, psu string) *url.URL {
	t.Helper()
	resp, err := e.client.Get(authURL + "&psu=" + url.QueryEscape(psu))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("login: %d %v", resp.StatusCode, err)
	}
	return loc
}

// consent gives owner's subject a consent through Exchange (no PKCE).
func (e *env) consent(t testing.TB, a *AuthCode, owner, subject string) {
	t.Helper()
	loc := e.login(t, a.AuthorizeURL("st", "", appCallback), subject)
	if _, err := a.Exchange(context.Background(), owner, subject, loc.Query().Get("code"), "", appCallback); err != nil {
		t.Fatal(err)
	}
}

// noSecrets fails when any code or token the emulator issued, or a client
// secret, appears in s.
func (e *env) noSecrets(t testing.TB, what, s string) {
	t.Helper()
	for _, x := range append(e.h.Issued(), "basic s3cret:&", "post-s3cret") {
		if strings.Contains(s, x) {
			t.Fatalf("%s holds a secret: %.8s...", what, x)
		}
	}
}

var _ = secret.New

func boltStore(t *testing.T) consentstore.Store {
	s, _ := tempBolt(t)
	return s
}

// vaultStore is a Vault KV v2 store on a fresh mount of the test Vault.
func vaultStore(t *testing.T) consentstore.Store {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("consents")
	srv.Mount(mount, "kv-v2")
	return consentstore.NewVault(vaultClient(t, srv), mount, "tokenproxy")
}

// vaultClient is a vaultsrc client logged in to srv with its root token: the
// client through which tokenproxy reaches the consent store.
func vaultClient(t testing.TB, srv *vaulttest.Server, opts ...vaultsrc.Option) *vaultsrc.Client {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tok, []byte(srv.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := vaultsrc.New(context.Background(), vaultsrc.Config{Address: srv.Addr, Timeout: 5 * time.Second,
		Auth: vaultsrc.AuthConfig{Method: vaultsrc.MethodToken, Token: &vaultsrc.TokenAuth{File: tok}}}, opts...)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testRing is the consent store keyring the tests use.
func testRing(t testing.TB) *consentstore.Keyring {
	t.Helper()
	r, err := consentstore.SingleKey(bytes.Repeat([]byte{1}, consentstore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
