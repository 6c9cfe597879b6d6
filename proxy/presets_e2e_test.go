package proxy_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/emulator/berlingroup"
	"github.com/tokenproxy/tokenproxy/emulator/psd2hub"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// presetBank is what a preset's end-to-end test needs: the test PKI and
// files, and the starter configuration of the preset made to run here.
type presetBank struct {
	t    *testing.T
	ca   *pki.CA
	dir  string
	cert *tls.Certificate // the bank's server certificate (127.0.0.1)
}

func newPresetBank(t *testing.T) *presetBank {
	t.Helper()
	ca, err := pki.NewCA("preset test CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	b := &presetBank{t: t, ca: ca, dir: t.TempDir(), cert: sc}
	if err := ca.WriteCertFile(filepath.Join(b.dir, "bank-ca.pem")); err != nil {
		t.Fatal(err)
	}
	return b
}

// issue writes a client certificate as <name>.crt, .key and .pfx (passcode pass) in the files directory.
func (b *presetBank) issue(name, cn, pass string) *tls.Certificate {
	b.t.Helper()
	c, err := b.ca.IssueClient(cn, pki.WithKeyType(pki.RSA2048))
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := pki.WriteFiles(b.dir, name, c, pass); err != nil {
		b.t.Fatal(err)
	}
	return c
}

// serveTLS serves h over TLS; clientAuth says whether a client certificate is required.
func (b *presetBank) serveTLS(h http.Handler, clientAuth tls.ClientAuthType) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*b.cert}, ClientAuth: clientAuth, ClientCAs: b.ca.CertPool()}
	srv.StartTLS()
	b.t.Cleanup(srv.Close)
	return srv
}

// runHere is the preset's starter configuration (tokenproxy init) made to
// run against an emulator: the route as written, at most 12 lines, with
// the test's lines added after its preset: line (hosts, the emulator as
// upstream and the test CA; token.url when the bank's token host is not
// the upstream's), its files in the test directory, its placeholders
// replaced (subst) and the listeners on free ports.
func (b *presetBank) runHere(preset, host, upstream, tokenURL string, subst map[string]string) string {
	t := b.t
	t.Helper()
	p := config.Presets[preset]
	if n := config.YAMLLines(p.Starter.Route); n > 12 {
		t.Fatalf("preset %s: the route takes %d lines of YAML; at most 12", preset, n)
	}
	yaml, err := config.StarterConfig(preset)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.SplitSeq(yaml, "\n") {
		switch {
		case strings.HasPrefix(line, "    upstream:"):
			continue // the placeholder of a preset without an upstream; the test's comes below
		case strings.HasPrefix(line, "      url:") && tokenURL != "":
			continue
		}
		out = append(out, line)
		switch {
		case strings.HasPrefix(line, "    preset: "):
			out = append(out, fmt.Sprintf("    hosts: [%s]\n    upstream: %s\n    tls: {ca_file: %s}", host, upstream, filepath.Join(b.dir, "bank-ca.pem")))
		case line == "    token:" && tokenURL != "":
			out = append(out, "      url: "+tokenURL)
		}
	}
	yaml = strings.Join(out, "\n")
	subst["/etc/tokenproxy/"] = b.dir + "/"
	subst["proxy: 127.0.0.1:8080"] = "proxy: 127.0.0.1:0"
	subst["admin: 127.0.0.1:9090"] = "admin: 'off'"
	for from, to := range subst {
		if !strings.Contains(yaml, from) {
			t.Fatalf("the starter of %s has no %q", preset, from)
		}
		yaml = strings.ReplaceAll(yaml, from, to)
	}
	return yaml
}

// serveYAML runs tokenproxy from yaml and returns an app's client, set up
// only with tokenproxy as its HTTP proxy.
func serveYAML(t *testing.T, yaml string, forbid ...string) *http.Client {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	zl, logs := testlog.New(t)
	logs.ForbidStrings(forbid...)
	srv := serve(t, cfg, assemble.Options{Log: zl}, proxy.Options{Log: zl})
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func call(t *testing.T, c *http.Client, method, rawURL string, body any, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, rawURL, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// Banking Circle: the M2M certificate from its .pfx on both hosts, the token
// by GET with Basic credentials, the accounts with the bearer token.
func TestPresetBankingCircle(t *testing.T) {
	b := newPresetBank(t)
	b.issue("bankingcircle", "bc-m2m", "pfx-pass-5521")
	t.Setenv("BC_PFX_PASSCODE", "pfx-pass-5521")
	t.Setenv("BC_USERNAME", "m2m-user")
	t.Setenv("BC_PASSWORD", "m2m-pass-7734")
	emu, err := bankingcircle.New(bankingcircle.Config{ServerCert: b.cert, ClientCAs: b.ca.CertPool(), Username: "m2m-user", Password: "m2m-pass-7734"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	yaml := b.runHere("bankingcircle-sandbox", "sandbox.bankingcircleconnect.com", emu.APIURL(), emu.AuthURL()+bankingcircle.AuthorizePath, map[string]string{})
	c := serveYAML(t, yaml, "pfx-pass-5521", "m2m-pass-7734")
	status, body := call(t, c, "GET", "http://sandbox.bankingcircleconnect.com/api/v1/accounts?PageNumber=1&PageSize=50", nil)
	if status != http.StatusOK || !strings.Contains(string(body), "accountId") {
		t.Fatalf("accounts: %d %s", status, body)
	}
	if s := emu.Stats(); s.TokensIssued != 1 || s.AccountsServed != 1 || s.TokenUnauthorized != 0 || s.APIUnauthorized != 0 {
		t.Fatalf("emulator: %+v", s)
	}
}

// BPCE 89C3: a customer consents (authorization_code, the client
// authenticated by the QWAC), then the app's accounts call is signed with
// the QSealC (keyId its public key) and carries the customer's token.
func TestPresetBPCESandbox(t *testing.T) {
	b := newPresetBank(t)
	b.issue("qwac", "tpp QWAC", "x")
	seal := b.issue("qsealc", "tpp QSealC", "x")
	spki, err := x509.MarshalPKIXPublicKey(seal.Leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	const clientID = "PSDFR-ACPR-12345"
	emu := stet.New(stet.Config{Keys: map[string]crypto.PublicKey{base64.StdEncoding.EncodeToString(spki): seal.Leaf.PublicKey},
		OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{clientID: {Method: "tls_client_auth", CertSubject: "tpp QWAC"}}}})
	srv := b.serveTLS(emu, tls.VerifyClientCertIfGiven)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	t.Setenv("TOKENPROXY_CONSENT_KEY", base64.StdEncoding.EncodeToString(key))
	addr := freeAddr(t)
	yaml := b.runHere("bpce-sandbox", "www.13807.sandbox.api.89c3.com", srv.URL, "", map[string]string{
		"PSDXX-YYYY-ZZZZZ": clientID,
		"  callback_url: https://tokenproxy.example/v1/callback": "  listen: " + addr + "\n  callback_url: http://" + addr + "/v1/callback",
		"/var/lib/tokenproxy/": b.dir + "/",
	})
	bk := &bank{emu: emu, srv: srv, ca: b.ca}
	x := startTP(t, bk, yaml, nil)
	a := x.app(t, "")
	a.consent(bk, "alice", "marc")
	ans := a.do(a.c, func() *http.Request {
		req, _ := http.NewRequest("GET", "http://www.13807.sandbox.api.89c3.com/stet/psd2/v1/accounts", nil)
		req.Header.Set("Tokenproxy-Subject", "alice")
		req.Header.Set("PSU-IP-Address", "192.168.0.1")
		return req
	}())
	if ans.status != http.StatusOK || !strings.Contains(string(ans.body), "FR7613807008043001965405158") {
		t.Fatalf("accounts: %d %s", ans.status, ans.body)
	}
	accepted, rejected, reasons := emu.Counts()
	if accepted != 1 || rejected != 0 {
		t.Fatalf("the bank accepted %d, rejected %d: %v", accepted, rejected, reasons)
	}
	got := emu.Received()[0]
	if !strings.Contains(got.Header.Get("Signature"), `keyId="`+base64.StdEncoding.EncodeToString(spki)+`"`) {
		t.Fatalf("signature %q", got.Header.Get("Signature"))
	}
	if psu, ok := emu.CustomerOf(got.Header.Get("Authorization")); !ok || psu != "marc" {
		t.Fatalf("the accounts call carried a token of %q (%v)", psu, ok)
	}
	a.assertNoSecrets(bk)
}

// A Berlin Group bank: QWAC on the connection, every request signed with
// the QSealC, sent in TPP-Signature-Certificate, keyId SN=..,CA=...
func TestPresetBerlinGroup(t *testing.T) {
	b := newPresetBank(t)
	b.issue("qwac", "tpp QWAC", "x")
	b.issue("qsealc", "tpp QSealC", "x")
	emu := berlingroup.New(berlingroup.Config{Roots: b.ca.CertPool()})
	srv := b.serveTLS(emu, tls.RequireAndVerifyClientCert)
	yaml := b.runHere("berlingroup", "psd2.bank.example", srv.URL, "", map[string]string{})
	c := serveYAML(t, yaml)
	status, body := call(t, c, "GET", bgAccount, nil, "PSU-ID", "PSU-1234")
	if status != http.StatusOK || !strings.Contains(string(body), berlingroup.DefaultMockAccountID) {
		t.Fatalf("account: %d %s", status, body)
	}
	if accepted, rejected, reasons := emu.Counts(); accepted != 1 || rejected != 0 {
		t.Fatalf("the bank accepted %d, rejected %d: %v", accepted, rejected, reasons)
	}
}

// The banqware PSD2 hub: a client_credentials token with the sandbox
// credentials, then the onboarding guide's calls: register the redirect
// URL, create a user, create a consent for a bank.
func TestPresetPSD2Hub(t *testing.T) {
	b := newPresetBank(t)
	const secret = "hub-s3cret-4471"
	emu := psd2hub.New(psd2hub.Config{ClientID: "tpp-client-1", ClientSecret: secret})
	srv := b.serveTLS(emu, tls.NoClientCert)
	t.Setenv("PSD2HUB_CLIENT_SECRET", secret)
	yaml := b.runHere("banqware-psd2hub", "api.banqware.com", srv.URL, srv.URL+psd2hub.TokenPath, map[string]string{"your-client-id": "tpp-client-1"})
	c := serveYAML(t, yaml, secret)
	const base = "http://api.banqware.com/sandbox/"
	if status, body := call(t, c, "PUT", base+"management-resources/api/tenant/urls", map[string]any{"redirectUrls": []string{"https://app.example/back"}}); status != http.StatusOK {
		t.Fatalf("urls: %d %s", status, body)
	}
	status, body := call(t, c, "POST", base+"user-resources/api/user", map[string]string{"clientId": "customer-7"})
	var user struct{ UserID string }
	if status != http.StatusCreated || json.Unmarshal(body, &user) != nil || user.UserID == "" {
		t.Fatalf("user: %d %s", status, body)
	}
	status, body = call(t, c, "POST", base+"consent-resources/api/user/id/"+user.UserID+"/consent",
		map[string]string{"bankId": "13807", "bankIdType": "code", "redirectUrl": "https://app.example/back"})
	if status != http.StatusCreated || !strings.Contains(string(body), `"status":"requested"`) {
		t.Fatalf("consent: %d %s", status, body)
	}
	if accepted, rejected, tokens := emu.Counts(); accepted != 3 || rejected != 0 || tokens != 1 {
		t.Fatalf("the hub accepted %d calls, rejected %d, token requests %d", accepted, rejected, tokens)
	}
}
