package fapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/fapitest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const (
	// bankHost is the host the app calls through the proxy; the route
	// sends it to the resource server.
	bankHost = "api.bank.example"
	// callbackURL is the consent API's callback as the customer's browser
	// reaches it (a TLS front in a deployment): the registered redirect_uri.
	// The test carries the browser's last hop to the consent API itself.
	callbackURL = "https://tpp.example/v1/callback"
	returnURL   = "https://app.example/consent-done"
	clientID    = "tpp"
	routeName   = "bank"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() || binary == "" {
		t.Skip("end-to-end: builds and runs the tokenproxy binary")
	}
}

// fixture is the TPP's material, made before the bank starts (the bank
// registers the client's keys and certificate subject): a CA shared with
// the bank, a client certificate and signing keys, all as files.
type fixture struct {
	ca                 *pki.CA
	dir                string
	cert               *tls.Certificate
	certFile, keyFile  string
	caFile, consentKey string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := pki.NewCA("e2e FAPI CA")
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{ca: ca, dir: t.TempDir()}
	if fx.cert, err = ca.IssueClient("tpp.example"); err != nil {
		t.Fatal(err)
	}
	f, err := pki.WriteFiles(fx.dir, "client", fx.cert, "x")
	if err != nil {
		t.Fatal(err)
	}
	fx.certFile, fx.keyFile = f.Cert, f.Key
	fx.caFile = filepath.Join(fx.dir, "ca.pem")
	if err := ca.WriteCertFile(fx.caFile); err != nil {
		t.Fatal(err)
	}
	fx.consentKey = filepath.Join(fx.dir, "consent.key")
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	if err := os.WriteFile(fx.consentKey, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fx
}

// signingKey is a private key written as a PKCS#8 PEM file.
type signingKey struct {
	path string
	pub  crypto.PublicKey
	pem  []byte
}

// key makes an ES256 (P-256) or PS256 (RSA-2048) key and writes it.
func (fx *fixture) key(t *testing.T, name, alg string) signingKey {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	sk := signingKey{path: filepath.Join(fx.dir, name+".pem"), pub: k.Public(),
		pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
	if err := os.WriteFile(sk.path, sk.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return sk
}

// codeClient is an authorization_code client registered at the bank.
func codeClient(method string, keys ...crypto.PublicKey) fapitest.Client {
	return fapitest.Client{ID: clientID, AuthMethod: method, Keys: keys,
		GrantTypes: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{callbackURL}, Scope: "accounts payments"}
}

// startBank starts oidc-provider and the resource server with the
// fixture's CA.
func (fx *fixture) startBank(t *testing.T, opts fapitest.Options) *fapitest.Server {
	t.Helper()
	opts.CA = fx.ca
	return fapitest.Start(t, opts)
}

// route is what changes between the tests' routes: the lines of the
// token: block after the common ones (indented 6 spaces by config).
type route struct {
	issuer, upstream string
	token            []string
	// top is YAML added at the top level (a vault: block).
	top string
}

// config is a tokenproxy configuration for one fapi2 authorization_code
// route, as an operator writes it.
func (fx *fixture) config(l e2eenv.Listeners, r route) string {
	y := fmt.Sprintf(`listen: {proxy: %s, admin: %s}
shutdown_grace: 2s
log: {level: debug, format: json}
routes:
  - name: %s
    hosts: [%s]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
      reload_interval: 1s
    token:
      type: authorization_code
      profile: fapi2
      issuer: %s
      discovery: true
      client_id: %s
      scopes: [accounts]
      rate_limit: {requests_per_minute: 600, burst: 20}   # PAR requests count too
`, l.Proxy, l.Admin, routeName, bankHost, r.upstream, fx.caFile, fx.certFile, fx.keyFile, r.issuer, clientID)
	for _, line := range r.token {
		y += "      " + line + "\n"
	}
	return y + fmt.Sprintf(`consents:
  listen: %s
  callback_url: %s
  return_urls: [%s]
  store:
    bbolt: {path: %s, key: {file: %s}}
`, l.Local, callbackURL, returnURL, filepath.Join(fx.dir, "consents-"+e2eenv.Random("db")+".db"), fx.consentKey) + r.top
}

// proc is a running tokenproxy and the app's view of it.
type proc struct {
	*e2eenv.Proc
	api string       // consent API base URL
	app *http.Client // through the proxy listener
	bk  *http.Client // direct (the app's calls of the consent API), no redirects

	mu  sync.Mutex
	raw [][]byte // every byte the app received (headers and bodies)
}

// run writes the configuration and starts the binary on it.
func (fx *fixture) run(t *testing.T, r route) *proc {
	t.Helper()
	l, err := e2eenv.NewListeners()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	yaml := fx.config(l, r)
	p, err := e2eenv.Run(ctx, binary, dir, yaml, l)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Proxy}), MaxIdleConnsPerHost: 100}
	direct := &http.Transport{Proxy: nil}
	pr := &proc{Proc: p, api: "http://" + l.Local, app: &http.Client{Transport: tr, Timeout: 20 * time.Second},
		bk: &http.Client{Transport: direct, Timeout: 20 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		direct.CloseIdleConnections()
		if err := p.Stop(); err != nil {
			t.Errorf("tokenproxy did not stop cleanly: %v", err)
		}
		if t.Failed() {
			t.Logf("tokenproxy log (tail):\n%s", tail(p.Logs(), 30))
		}
	})
	return pr
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// answer is one HTTP answer, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body)) }

// do sends req with c and keeps what came back in p.raw (what the app saw).
func (p *proc) do(c *http.Client, req *http.Request) (answer, error) {
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: reading the body: %w", req.Method, req.URL.Redacted(), err)
	}
	var h bytes.Buffer
	_ = resp.Header.Write(&h)
	p.keep(append(h.Bytes(), body...))
	return answer{resp.StatusCode, resp.Header, body}, nil
}

func (p *proc) keep(b []byte) {
	p.mu.Lock()
	p.raw = append(p.raw, b)
	p.mu.Unlock()
}

func (p *proc) must(t testing.TB, c *http.Client, method, u string, body io.Reader, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	a, err := p.do(c, req)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// resource is the app's GET of the bank's accounts through the proxy, for
// subject.
func (p *proc) resource(subject string) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+bankHost+"/accounts", nil)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Tokenproxy-Subject", subject)
	return p.do(p.app, req)
}

// start starts a consent for subject on the consent API and returns the
// authorize URL.
func (p *proc) start(t *testing.T, subject string) string {
	t.Helper()
	a := p.must(t, p.bk, http.MethodPost, p.api+"/v1/routes/"+routeName+"/consents/"+subject,
		strings.NewReader(`{"return_url":"`+returnURL+`"}`), "Content-Type", "application/json")
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if a.status != http.StatusCreated || json.Unmarshal(a.body, &start) != nil || start.AuthorizeURL == "" {
		t.Fatalf("starting the consent of %s: %s", subject, a)
	}
	return start.AuthorizeURL
}

// callbackAnswer carries the browser's redirect out of the bank (the
// callback URL with code, state and iss) to the consent API.
func (p *proc) callbackAnswer(t *testing.T, redirect string) answer {
	t.Helper()
	u, err := url.Parse(redirect)
	if err != nil || !strings.HasPrefix(redirect, callbackURL+"?") {
		t.Fatalf("the bank redirected to %q, not the callback", redirect)
	}
	return p.must(t, p.bk, http.MethodGet, p.api+"/v1/callback?"+u.RawQuery, nil)
}

// callback carries the browser's redirect to the consent API and returns
// the return URL it sends the browser to.
func (p *proc) callback(t *testing.T, redirect string) *url.URL {
	t.Helper()
	a := p.callbackAnswer(t, redirect)
	loc, err := url.Parse(a.header.Get("Location"))
	if a.status != http.StatusSeeOther || err != nil || !strings.HasPrefix(loc.String(), returnURL+"?") {
		t.Fatalf("callback: %s, Location %q", a, a.header.Get("Location"))
	}
	return loc
}

// withQuery returns u with its query parameter k set to v, or removed when
// v is "".
func withQuery(t *testing.T, u, k, v string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Query()
	if v == "" {
		q.Del(k)
	} else {
		q.Set(k, v)
	}
	p.RawQuery = q.Encode()
	return p.String()
}

// status is the consent's status on the consent API ("" when there is none).
func (p *proc) status(t *testing.T, subject string) string {
	t.Helper()
	a := p.must(t, p.bk, http.MethodGet, p.api+"/v1/routes/"+routeName+"/consents/"+subject, nil)
	if a.status == http.StatusNotFound {
		return ""
	}
	var c struct{ Status string }
	if a.status != http.StatusOK || json.Unmarshal(a.body, &c) != nil {
		t.Fatalf("consent status of %s: %s", subject, a)
	}
	return c.Status
}

// consent runs a whole consent: start, the customer's login at the bank,
// the callback; it fails the test unless the consent is active.
func (p *proc) consent(t *testing.T, srv *fapitest.Server, subject string) {
	t.Helper()
	authorize := p.start(t, subject)
	checkPushed(t, authorize, srv.Issuer)
	back := p.callback(t, srv.Login(t, authorize, subject))
	if q := back.Query(); q.Get("status") != "active" || q.Get("subject") != subject {
		t.Fatalf("consent of %s: return URL %s", subject, back.Redacted())
	}
	if st := p.status(t, subject); st != "active" {
		t.Fatalf("consent of %s: status %q", subject, st)
	}
}

// checkPushed checks that an authorize URL is the issuer's and carries only
// client_id and a PAR request_uri.
func checkPushed(t *testing.T, authorize, issuer string) {
	t.Helper()
	u, err := url.Parse(authorize)
	if err != nil || !strings.HasPrefix(authorize, issuer+"/") {
		t.Fatalf("authorize URL %q is not the issuer's (%s)", authorize, issuer)
	}
	q := u.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"client_id", "request_uri"}) || q.Get("client_id") != clientID ||
		!strings.HasPrefix(q.Get("request_uri"), "urn:ietf:params:oauth:request_uri:") {
		t.Fatalf("authorize URL carries %v, want only client_id and a request_uri", keys)
	}
}

// metrics reads the admin listener's /metrics.
func (p *proc) metrics(t *testing.T) []byte {
	t.Helper()
	return p.must(t, p.bk, http.MethodGet, "http://"+p.L.Admin+"/metrics", nil).body
}

// secretish matches maximal runs that could hold a token, code, proof or
// key: base64url and JWT characters.
var secretish = regexp.MustCompile(`[A-Za-z0-9_\-.~+/=%]{16,}`)

// checkNoLeak fails the test when out (a name and its bytes) holds a token,
// code or DPoP proof the bank issued or received (by their hashes), or one
// of the private keys' PEM bodies.
func checkNoLeak(t *testing.T, st fapitest.Stats, keys []signingKey, outs map[string][]byte) {
	t.Helper()
	hashes := map[string]bool{}
	for _, h := range st.SecretHashes {
		hashes[h] = true
	}
	if len(hashes) == 0 {
		t.Fatal("leak check: the bank reports no secret issued or received")
	}
	for name, b := range outs {
		for _, m := range secretish.FindAll(b, -1) {
			// A token inside a URL query or after a separator: try the
			// run and its parts.
			for _, cand := range append([][]byte{m}, bytes.FieldsFunc(m, func(r rune) bool { return strings.ContainsRune("=%+/~", r) })...) {
				sum := sha256.Sum256(cand)
				if hashes[base64.RawURLEncoding.EncodeToString(sum[:])] {
					t.Errorf("%s holds a token, code or proof the bank issued or received", name)
				}
			}
		}
		for _, k := range keys {
			body := strings.Join(strings.Split(string(k.pem), "\n")[1:3], "")
			if bytes.Contains(b, []byte(body)) {
				t.Errorf("%s holds a private key", name)
			}
		}
	}
}

// validate runs `tokenproxy validate` on yaml and returns its exit code
// and output.
func validate(t *testing.T, yaml string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokenproxy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "validate", "--config", path)
	cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY=")
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// appBytes is everything the app received from tokenproxy so far.
func (p *proc) appBytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Join(p.raw, []byte("\n"))
}

// contextFor is a 30 s context for starting the binary.
func contextFor(*testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
