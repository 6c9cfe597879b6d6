package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/fapi"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// A fapi2 authorization_code route with DPoP against the emulated FAPI 2.0
// bank, whose both servers demand nonces: the pushed authorization request
// names the route's DPoP key (dpop_jkt), the customer logs in, tokenproxy's
// callback exchanges the code with a proof by that key (after the token
// endpoint's nonce challenge), and the app's request is served with the
// DPoP-bound token and a proof (after the resource server's nonce
// challenge). The app sees no code, token, proof or nonce.
func TestDPoPAuthorizationCodeEndToEnd(t *testing.T) {
	ca, err := pki.NewCA("FAPI bank CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(clientKey)
	clientKeyFile := filepath.Join(dir, "client.pem")
	if err := os.WriteFile(clientKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	consentAddr := freeAddr(t)
	redirect := "http://" + consentAddr + "/v1/callback"
	emu := fapi.New(fapi.Config{NonceEvery: time.Hour, Clients: map[string]fapi.Client{
		"tpp": {Method: "private_key_jwt", Key: clientKey.Public(), RedirectURIs: []string{redirect}, DPoP: true}}})
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(emu)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	emu.SetIssuer(srv.URL)

	yaml := fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: fapi
    hosts: [fapi.example]
    upstream: %s
    tls: {ca_file: %s}
    token:
      type: authorization_code
      profile: fapi2
      issuer: %s
      discovery: true
      client_id: tpp
      auth_method: private_key_jwt
      private_key: {file: %s}
      scopes: [accounts]
      max_wait: 10s
      dpop: {private_key: {file: %s}}
consents:
  listen: %s
  callback_url: %s
  return_urls: [%s]
  store:
%s
`, srv.URL, caFile, srv.URL, clientKeyFile, writeECKey(t, dir, "dpop.pem"), consentAddr, redirect, bpceReturnURL,
		boltStore(t, dir, newKey(t)))
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	zl, logs := testlog.New(t)
	logs.Forbid(emu.Issued)
	x := startConsentsTP(t, cfg, assemble.Options{Log: zl})
	app := x.app(t, "")

	// The consent: PAR, the bank's login, tokenproxy's callback, the code exchange.
	ans := app.api("POST", "/v1/routes/fapi/consents/alice", map[string]string{"return_url": bpceReturnURL})
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if ans.status != http.StatusCreated || json.Unmarshal(ans.body, &start) != nil {
		t.Fatalf("start: %d %s", ans.status, ans.body)
	}
	var landed *url.URL
	browser := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool()}},
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host == "app.example" {
				landed = req.URL
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err := browser.Get(start.AuthorizeURL + "&psu=marc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if landed == nil || landed.Query().Get("status") != "active" {
		t.Fatalf("the consent did not complete: return URL %v, last status %d; bank %+v\n%s", landed, resp.StatusCode, emu.Stats(), logs.String())
	}
	app.mu.Lock()
	app.seen = append(app.seen, landed.String())
	app.mu.Unlock()

	// The app's request, served with the DPoP-bound token.
	req, _ := http.NewRequest(http.MethodGet, "http://fapi.example/accounts", nil)
	req.Header.Set("Tokenproxy-Subject", "alice")
	a := app.do(app.c, req)
	var body struct{ PSU string }
	if a.status != http.StatusOK || json.Unmarshal(a.body, &body) != nil || body.PSU != "marc" {
		t.Fatalf("resource: %d %s", a.status, a.body)
	}

	st := emu.Stats()
	if st.DPoPJKTExchanges != 1 {
		t.Fatalf("codes exchanged bound to the pushed dpop_jkt: %d, want 1 (the pushed request must name the route's DPoP key)", st.DPoPJKTExchanges)
	}
	if st.NonceChallenges["as"] == 0 || st.NonceChallenges["rs"] == 0 {
		t.Fatalf("nonce challenges %v: both servers must have asked for one", st.NonceChallenges)
	}
	if st.Accepted != 1 || len(st.Refused) != 0 || st.JTIReplays != 0 {
		t.Fatalf("resource requests accepted %d, refused %v, jti replays %d", st.Accepted, st.Refused, st.JTIReplays)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	for _, s := range app.seen {
		if strings.Contains(strings.ToLower(s), "dpop") {
			t.Fatalf("the app received a DPoP header: %q", s)
		}
		for _, sec := range emu.Issued() {
			if strings.Contains(s, sec) {
				t.Fatalf("the app received an issued code or token (%.8s...)", sec)
			}
		}
	}
}

// startConsentsTP builds tokenproxy from cfg with its consent API on
// cfg.Consents.Listen and serves it until the end of the test.
func startConsentsTP(t *testing.T, cfg *config.Config, bo assemble.Options) *tp {
	t.Helper()
	consents, err := assemble.OpenConsents(context.Background(), cfg, bo)
	if err != nil {
		t.Fatal(err)
	}
	bo.Consents = consents
	routes, err := assemble.Build(context.Background(), cfg, bo)
	if err != nil {
		consents.Close()
		t.Fatal(err)
	}
	apiCfg := consents.APIConfig()
	apiCfg.Log = bo.Log
	h, err := assemble.ConsentHandler(routes, apiCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(routes, proxy.Options{Log: bo.Log, ProxyAddr: cfg.Listen.Proxy, ConsentAddr: cfg.Consents.Listen,
		Consents: h, ShutdownGrace: 5 * time.Second})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		consents.Close()
	})
	return &tp{srv: srv, consents: consents, proxyURL: &url.URL{Scheme: "http", Host: srv.Addr("proxy")}, api: "http://" + srv.Addr("consents")}
}
