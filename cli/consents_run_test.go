package cli_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/webhook"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// `tokenproxy run` with an authorization_code route: the consent API on
// its listener, a consent through the callback, the app's request with the
// subject header, and the consent census on /metrics.
func TestRunServesConsents(t *testing.T) {
	f := newFixture(t)
	qseal, err := f.ca.IssueClient("cli QSealC", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	qwac, _ := f.ca.IssueClient("cli QWAC")
	sf, _ := pki.WriteFiles(f.dir, "qseal", qseal, "x")
	qf, _ := pki.WriteFiles(f.dir, "qwac", qwac, "x")
	caFile := filepath.Join(f.dir, "ca.pem")
	if err := f.ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	emu := stet.New(stet.Config{Keys: map[string]crypto.PublicKey{"qseal": qseal.Leaf.PublicKey},
		OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{"PSDFR-ACPR-13807": {Method: "tls_client_auth", CertSubject: "cli QWAC"}}}})
	sc, _ := f.ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	bank := httptest.NewUnstartedServer(emu)
	bank.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: f.ca.CertPool()}
	bank.StartTLS()
	t.Cleanup(bank.Close)
	write(t, filepath.Join(f.dir, "consent.key"), strings.Repeat("5a", 32))
	const hookSecret = "whsec-run-4f1c9a0b7e"
	write(t, filepath.Join(f.dir, "webhook.secret"), hookSecret)
	hooks := make(chan map[string]string, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(hookSecret), r.Header.Get(webhook.HeaderSignature), b, time.Now(), time.Minute); err != nil {
			t.Errorf("webhook delivery: %v", err)
		}
		var ev map[string]string
		_ = json.Unmarshal(b, &ev)
		hooks <- ev
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	proxyAddr, adminAddr, consentAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	u := bank.URL + "/stet/psd2/oauth/"
	cfg := filepath.Join(f.dir, "run.yaml")
	write(t, cfg, fmt.Sprintf(`
listen: {proxy: %s, admin: %s}
routes:
  - name: bpce
    hosts: [api.bpce.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing: {profile: stet, key_id: qseal, key: {pem: {cert_file: %s, key_file: %s}}}
    token:
      type: authorization_code
      url: %stoken
      client_id: PSDFR-ACPR-13807
      auth_method: tls_client_auth
      authorize_url: %sauthorize
      pkce: true
consents:
  listen: %s
  callback_url: http://%s/v1/callback
  return_urls: [https://app.example/done]
  census_interval: 50ms
  store:
    bbolt: {path: %s/consents.db, key: {file: %s/consent.key}}
  webhooks:
    - {url: %s/hooks, secret: {file: %s/webhook.secret}}
  webhook_delivery: {poll_interval: 20ms}
`, proxyAddr, adminAddr, bank.URL, caFile, qf.Cert, qf.Key, sf.Cert, sf.Key, u, u, consentAddr, consentAddr, f.dir, f.dir, receiver.URL, f.dir))

	log, logs := testlog.New(t)
	logs.Forbid(emu.Issued)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var out syncBuffer
	go func() {
		done <- cli.Execute([]string{"run", "--config", cfg}, cli.WithOutput(&out, &out), cli.WithLogger(log), cli.WithContext(ctx))
	}()
	get := func(c *http.Client, req *http.Request) (int, string) {
		resp, err := c.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	ready, _ := http.NewRequest("GET", "http://"+adminAddr+"/readyz", nil)
	for i := 0; ; i++ {
		if code, _ := get(direct, ready); code == http.StatusOK {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("run exited %d:\n%s", code, out.String())
		default:
		}
		if i > 400 {
			t.Fatal("tokenproxy did not become ready")
		}
		time.Sleep(25 * time.Millisecond)
	}

	start, _ := http.NewRequest("POST", "http://"+consentAddr+"/v1/routes/bpce/consents/alice", nil)
	code, body := get(direct, start)
	var st struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("start: %d %s", code, body)
	}
	var landed *url.URL
	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.CertPool()}},
		CheckRedirect: func(r *http.Request, _ []*http.Request) error {
			if r.URL.Host == "app.example" {
				landed = r.URL
				return http.ErrUseLastResponse
			}
			return nil
		}}
	login, _ := http.NewRequest("GET", st.AuthorizeURL+"&psu=marc", nil)
	if get(browser, login); landed == nil || landed.Query().Get("status") != "active" {
		t.Fatalf("the browser landed on %v", landed)
	}

	app := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr})}}
	req, _ := http.NewRequest("GET", "http://api.bpce.example/stet/psd2/v1/accounts", nil)
	req.Header.Set("Tokenproxy-Subject", "alice")
	if code, body := get(app, req); code != http.StatusOK || !strings.Contains(body, "accounts") {
		t.Fatalf("app request: %d %s", code, body)
	}
	metrics, _ := http.NewRequest("GET", "http://"+adminAddr+"/metrics", nil)
	for i := 0; ; i++ {
		_, m := get(direct, metrics)
		if strings.Contains(m, `tokenproxy_consents{route="bpce",state="active"} 1`) && strings.Contains(m, `tokenproxy_consents_stored_total{route="bpce"} 1`) {
			break
		}
		if i > 200 {
			t.Fatalf("metrics lack the consent census:\n%s", m)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// The app's webhook hears of the consent, then of its deletion.
	del, _ := http.NewRequest("DELETE", "http://"+consentAddr+"/v1/routes/bpce/consents/alice", nil)
	if code, body := get(direct, del); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	for _, want := range []string{"consent.active", "consent.deleted"} {
		select {
		case ev := <-hooks:
			if ev["type"] != want || ev["subject"] != "alice" || ev["route"] != "bpce" {
				t.Fatalf("webhook event %v, want %s for alice", ev, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s webhook", want)
		}
	}
	for i := 0; ; i++ {
		_, m := get(direct, metrics)
		if strings.Contains(m, `tokenproxy_webhook_deliveries_total{result="delivered",webhook="`+receiver.URL+`/hooks"} 2`) &&
			strings.Contains(m, `tokenproxy_consent_events_total{type="consent.deleted"} 1`) {
			break
		}
		if i > 200 {
			t.Fatalf("metrics lack the webhook deliveries:\n%s", m)
		}
		time.Sleep(25 * time.Millisecond)
	}
	validateBesideRun(t, f, cfg)
	cancel()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("run exited %d:\n%s", code, out.String())
	}
}

// validateBesideRun runs `tokenproxy validate` on the configuration of a
// running tokenproxy, which holds the bbolt consent store (an exclusive
// flock; two opens in one process conflict as two processes do): validate
// answers at once, checks the key on a copy and says so; a wrong key is
// still found.
func validateBesideRun(t *testing.T, f *fixture, cfg string) {
	t.Helper()
	start := time.Now()
	code, out, errOut := run(t, "validate", "--config", cfg)
	if code != cli.ExitOK || !strings.Contains(out, "consent store "+f.dir+"/consents.db: held by a running tokenproxy; its key was checked on a read-only copy") {
		t.Fatalf("validate beside run: exit %d\n%s%s", code, out, errOut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("validate beside run took %v", d)
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.dir, "other.key"), strings.Repeat("6b", 32))
	other := filepath.Join(f.dir, "other.yaml")
	write(t, other, strings.Replace(string(raw), "/consent.key}", "/other.key}", 1))
	code, out, errOut = run(t, "validate", "--config", other)
	if code != cli.ExitConfig || !strings.Contains(errOut, "consents.store.bbolt.key") || !strings.Contains(errOut, "not the one this store was created with") {
		t.Fatalf("validate with another key beside run: exit %d\n%s%s", code, out, errOut)
	}
}
