package proxy_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

const (
	bpceHost        = "api.bpce.example"
	bpceClientID    = "PSDFR-ACPR-13807"
	bpceQWAC        = "tpp.example QWAC"
	bpceKeyID       = "https://tpp.example/certs/qsealc.pem"
	bpceReturnURL   = "https://app.example/consent-done"
	bpceAccountsURL = "http://" + bpceHost + "/stet/psd2/v1/accounts"
	ccSecret        = "cc-s3cret-Hn27"
)

// bank is the STET emulator with its authorization server over TLS. Its
// account endpoints answer, in X-Test-Psu, whose access token they got.
type bank struct {
	clock bankClock
	emu   *stet.Handler
	srv   *httptest.Server
	ca    *pki.CA
	dir   string
	// files
	caFile, qwacCert, qwacKey, sealCert, sealKey, jwtKey string
}

// bankClock is the bank's clock: real time plus an offset a test moves on.
type bankClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *bankClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *bankClock) add(d time.Duration) { c.mu.Lock(); c.offset += d; c.mu.Unlock() }

func newBank(t *testing.T, extra ...map[string]stet.Client) *bank {
	t.Helper()
	ca, err := pki.NewCA("bank test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	qwac, err := ca.IssueClient(bpceQWAC)
	if err != nil {
		t.Fatal(err)
	}
	seal, err := ca.IssueClient("TPP QSealC", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	sf, _ := pki.WriteFiles(dir, "qseal", seal, "x")
	b := &bank{ca: ca, dir: dir, caFile: filepath.Join(dir, "ca.pem"), qwacCert: qf.Cert, qwacKey: qf.Key, sealCert: sf.Cert, sealKey: sf.Key}
	if err := ca.WriteCertFile(b.caFile); err != nil {
		t.Fatal(err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(jwtKey)
	b.jwtKey = filepath.Join(dir, "jwt.pem")
	if err := os.WriteFile(b.jwtKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	clients := map[string]stet.Client{
		bpceClientID: {Method: "tls_client_auth", CertSubject: bpceQWAC},
		"cc-post":    {Method: "client_secret_post", Secret: ccSecret},
		"cc-basic":   {Method: "client_secret_basic", Secret: ccSecret},
		"cc-jwt":     {Method: "private_key_jwt", Key: jwtKey.Public()},
	}
	for _, m := range extra {
		maps.Copy(clients, m)
	}
	b.emu = stet.New(stet.Config{Now: b.clock.now, Keys: map[string]crypto.PublicKey{bpceKeyID: seal.Leaf.PublicKey},
		OAuth: &stet.OAuthConfig{Clients: clients}})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/stet/psd2/v1/") {
			if psu, ok := b.emu.CustomerOf(r.Header.Get("Authorization")); ok {
				w.Header().Set("X-Test-Psu", psu)
			}
		}
		b.emu.ServeHTTP(w, r)
	})
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewUnstartedServer(h)
	// The customer's browser reaches the authorize endpoint without a client
	// certificate; the token endpoint refuses a request without one.
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

// freeAddr returns a free loopback address (the consent listener's, which
// the callback URL must name before it listens).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// oauthYAML is the configuration of one authorization_code route on the
// bank; top goes at the top level, allow under the route, store under
// consents.store.
func (b *bank) oauthYAML(consentAddr, top, allow, store string) string {
	u := b.srv.URL + "/stet/psd2/oauth/"
	return top + fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: bpce
    hosts: [%s]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
    signing:
      profile: stet
      key_id: %s
      key:
        pem: {cert_file: %s, key_file: %s}
    token:
      type: authorization_code
      url: %stoken
      client_id: %s
      auth_method: tls_client_auth
      scopes: [aisp]
      authorize_url: %sauthorize
      revocation_url: %srevoke
      pkce: true
      refresh_ttl: 2160h
      max_wait: 10s
      rate_limit: {requests_per_minute: 6000, burst: 100}
%s
consents:
  census_interval: 50ms
  listen: %s
  callback_url: http://%s/v1/callback
  return_urls: [%s]
  store:
%s
`, bpceHost, b.srv.URL, b.caFile, b.qwacCert, b.qwacKey, bpceKeyID, b.sealCert, b.sealKey, u, bpceClientID, u, u,
		allow, consentAddr, consentAddr, bpceReturnURL, store)
}

// boltStore is a consents.store block for a bbolt file keyed from a file.
func boltStore(t *testing.T, dir string, key []byte) string {
	t.Helper()
	return boltStoreAt(t, dir, dir, key)
}

// boltStoreAt is boltStore with the key file in its own directory.
func boltStoreAt(t *testing.T, dir, keyDir string, key []byte) string {
	t.Helper()
	kf := filepath.Join(keyDir, "consent.key")
	if err := os.WriteFile(kf, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("    bbolt: {path: %s, key: {file: %s}}", filepath.Join(dir, "consents.db"), kf)
}

// tp is one running tokenproxy with its consent API, built from YAML.
type tp struct {
	srv      *proxy.Server
	consents *assemble.Consents
	metrics  *metrics.Metrics
	proxyURL *url.URL
	api      string
	stop     func()
}

// startTP builds tokenproxy from yaml as `tokenproxy run` does (one consent
// store per process, the consent API on its listener) and serves it until
// stop or the end of the test.
func startTP(t *testing.T, b *bank, yaml string, vc *vaultsrc.Client) *tp {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	zl, logs := testlog.New(t)
	logs.Forbid(b.emu.Issued)
	m := metrics.New()
	bo := assemble.Options{Log: zl, TokenObserver: m, AccessObserver: m}
	if vc != nil {
		bo.Vault = vc
	}
	// store.kind: redis shares access tokens, the refresh lock and the budget.
	st, err := assemble.OpenStore(context.Background(), cfg.Store, assemble.StoreOptions{Log: zl, Vault: bo.Vault})
	if err != nil {
		t.Fatal(err)
	}
	if st != nil {
		bo.Store = st
		t.Cleanup(func() { st.Close() })
	}
	consents, err := assemble.OpenConsents(context.Background(), cfg, bo)
	if err != nil {
		t.Fatal(err)
	}
	om := m.OAuth()
	bo.Consents, bo.OAuthObserver = consents, om
	routes, err := assemble.Build(context.Background(), cfg, bo)
	if err != nil {
		consents.Close()
		t.Fatal(err)
	}
	apiCfg := consents.APIConfig()
	apiCfg.Log = zl
	h, err := assemble.ConsentHandler(routes, apiCfg)
	if err != nil {
		t.Fatal(err)
	}
	census := func(ctx context.Context) {
		consents.Census(ctx, func(c *oauth.Census, err error) { om.Census([]string{"bpce"}, c, err) })
	}
	srv := proxy.New(routes, proxy.Options{Log: zl, Observer: m, ProxyAddr: cfg.Listen.Proxy, ConsentAddr: cfg.Consents.Listen,
		Consents: h, ShutdownGrace: 5 * time.Second, Jobs: []func(context.Context){census}})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	x := &tp{srv: srv, consents: consents, metrics: m, proxyURL: &url.URL{Scheme: "http", Host: srv.Addr("proxy")}, api: "http://" + srv.Addr("consents")}
	x.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			consents.Close()
		})
	}
	t.Cleanup(x.stop)
	return x
}

// app is what the app sees: every body, header and URL it received.
type app struct {
	t    *testing.T
	tp   *tp
	user string // gateway caller name:password, or ""
	c    *http.Client

	mu   sync.Mutex
	seen []string
}

func (x *tp) app(t *testing.T, user string) *app {
	tr := &http.Transport{Proxy: http.ProxyURL(x.proxyURL), MaxIdleConnsPerHost: 1000}
	if user != "" {
		u := *x.proxyURL
		name, pass, _ := strings.Cut(user, ":")
		u.User = url.UserPassword(name, pass)
		tr.Proxy = http.ProxyURL(&u)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &app{t: t, tp: x, user: user, c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (a *app) note(resp *http.Response, body []byte) {
	var b strings.Builder
	for k, v := range resp.Header {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(v, ","))
	}
	a.mu.Lock()
	a.seen = append(a.seen, b.String(), string(body))
	a.mu.Unlock()
}

// do sends req and records what came back.
func (a *app) do(c *http.Client, req *http.Request) answer {
	a.t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		a.t.Errorf("%s %s: %v", req.Method, req.URL, err)
		return answer{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a.note(resp, body)
	return answer{resp.StatusCode, resp.Header, body}
}

// account calls the bank's accounts endpoint through tokenproxy for subject.
func (a *app) account(subject string) answer {
	req, _ := http.NewRequest("GET", bpceAccountsURL, nil)
	if subject != "" {
		req.Header.Set("Tokenproxy-Subject", subject)
	}
	return a.do(a.c, req)
}

// api calls the consent API.
func (a *app) api(method, path string, body any) answer {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.tp.api+path, rd)
	if a.user != "" {
		name, pass, _ := strings.Cut(a.user, ":")
		req.SetBasicAuth(name, pass)
	}
	return a.do(http.DefaultClient, req)
}

// consent runs a whole consent for subject: the app starts it, the
// customer's browser logs in at the bank as psu and follows the redirects
// to tokenproxy's callback, which sends it to the app's return URL. The
// return URL is what the app receives; it is recorded.
func (a *app) consent(b *bank, subject, psu string) {
	a.t.Helper()
	ans := a.api("POST", "/v1/routes/bpce/consents/"+subject, map[string]string{"return_url": bpceReturnURL})
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if ans.status != http.StatusCreated || json.Unmarshal(ans.body, &start) != nil {
		a.t.Fatalf("start: %d %s", ans.status, ans.body)
	}
	var landed *url.URL
	browser := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.ca.CertPool()}},
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host == "app.example" {
				landed = req.URL
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err := browser.Get(start.AuthorizeURL + "&psu=" + url.QueryEscape(psu))
	if err != nil {
		a.t.Fatal(err)
	}
	resp.Body.Close()
	if landed == nil {
		a.t.Fatalf("the browser did not reach the return URL (last status %d)", resp.StatusCode)
	}
	a.mu.Lock()
	a.seen = append(a.seen, landed.String())
	a.mu.Unlock()
	if q := landed.Query(); q.Get("status") != "active" || q.Get("subject") != subject {
		a.t.Fatalf("return URL %s", landed)
	}
}

// assertNoSecrets fails if anything the app saw holds a code or token the bank issued.
func (a *app) assertNoSecrets(b *bank) {
	a.t.Helper()
	issued := b.emu.Issued()
	if len(issued) == 0 {
		a.t.Fatal("the bank issued nothing")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.seen {
		for _, sec := range issued {
			if strings.Contains(s, sec) {
				a.t.Fatalf("the app received an issued code or token (%.8s...)", sec)
			}
		}
	}
}
