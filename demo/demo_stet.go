package demo

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const (
	demoSTETHost   = "api.bpce.example"
	demoSTETKeyID  = "https://tpp.example/certs/qsealc.pem"
	demoSTETReturn = "https://app.example/consent-done"
)

// demoClock is the STET bank's clock, which the demo moves an hour on.
type demoClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *demoClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *demoClock) add(d time.Duration) { c.mu.Lock(); c.offset += d; c.mu.Unlock() }

// demoSTET runs the per-customer steps (7-9) against a STET (BPCE 89C3)
// emulator with its authorization server: a customer's consent through
// tokenproxy's callback, a signed AISP call with that customer's token, and
// the token expiring at the bank and being refreshed once. It runs its own
// tokenproxy (with a consent store in a temporary directory) and stops it.
func demoSTET(ctx context.Context, p func(string, ...any), ca *pki.CA, server, client, qseal *tls.Certificate, log *zap.Logger) (err error) {
	clk := &demoClock{}
	emu := stet.New(stet.Config{Now: clk.now, Keys: map[string]crypto.PublicKey{demoSTETKeyID: qseal.Leaf.PublicKey},
		OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{"PSDFR-ACPR-13807": {Method: "tls_client_auth", CertSubject: client.Leaf.Subject.CommonName}}}})
	bank := httptest.NewUnstartedServer(emu)
	// The customer's browser has no client certificate; the token endpoint requires one.
	bank.TLS = &tls.Config{Certificates: []tls.Certificate{*server}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	bank.StartTLS()
	defer bank.Close()

	dir, err := os.MkdirTemp("", "tokenproxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv("TOKENPROXY_DEMO_CONSENT_KEY", randomString()+randomString()+randomString()[:16]) // 64 hex digits
	consentAddr, err := demoFreeAddr()
	if err != nil {
		return err
	}
	cfg := demoSTETConfig(bank.URL, consentAddr, filepath.Join(dir, "consents.db"))
	cfg.ApplyDefaults()
	if err := errors.Join(cfg.Validate(), assemble.Check(cfg)); err != nil {
		return err
	}
	srv, stop, err := serveInBackground(ctx, cfg, assemble.Setup{Log: log, RootCAs: ca.CertPool(), Certificates: map[string]certs.Source{
		"client": &certs.StaticSource{Cert: client, Desc: "in-memory QWAC"},
		"qsealc": &certs.StaticSource{Cert: qseal, Desc: "in-memory QSealC"},
	}})
	if err != nil {
		return err
	}
	defer stop(&err)

	app := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}}
	back, err := demoConsent("http://"+consentAddr, ca)
	if err != nil {
		return fmt.Errorf("STET consent: %w", err)
	}
	p("  %-52s the app got back only %s", "7. a STET customer consents (login as marc at BPCE)", back)
	status, n, err := demoSTETAccounts(app)
	if err != nil {
		return err
	}
	acc, rej, _ := emu.Counts()
	p("  %-52s %d         %d accounts; signature and token accepted: %d, rejected: %d", "8. Tokenproxy-Subject: alice, signed AISP call", status, n, acc, rej)
	clk.add(time.Hour)
	before := emu.Refreshes()
	if status, _, err = demoSTETAccounts(app); err != nil {
		return err
	}
	p("  %-52s %d         refreshes at the bank: %d (the app never saw a token or a code)", "9. an hour later the bank says the token expired", status, emu.Refreshes()-before)
	return nil
}

// demoSTETConfig is the STET route and its consent store.
func demoSTETConfig(bankURL, consentAddr, storePath string) *config.Config {
	u := bankURL + "/stet/psd2/oauth/"
	return &config.Config{
		Listen: config.Listen{Proxy: "127.0.0.1:0", Admin: "off"},
		Routes: []config.Route{{
			Name: "bpce", Hosts: []string{demoSTETHost}, Upstream: bankURL,
			ClientCert: config.ClientCertificate{InCode: "client"},
			Signing: &config.Signing{SigningOptions: config.SigningOptions{Profile: "stet", KeyID: demoSTETKeyID},
				Key: config.ClientCertificate{InCode: "qsealc"}},
			Token: &config.Token{Type: config.TokenAuthorizationCode, URL: u + "token", OAuthToken: config.OAuthToken{
				ClientID: "PSDFR-ACPR-13807", AuthMethod: "tls_client_auth", Scopes: []string{"aisp"},
				AuthorizeURL: u + "authorize", PKCE: true, RefreshTTL: 90 * 24 * time.Hour}},
		}},
		Consents: &config.Consents{Listen: consentAddr, CallbackURL: "http://" + consentAddr + "/v1/callback", ReturnURLs: []string{demoSTETReturn},
			Store: config.ConsentStore{Bbolt: &config.BoltStore{Path: storePath, Key: secret.Ref{Env: "TOKENPROXY_DEMO_CONSENT_KEY"}}}},
	}
}

// demoConsent plays the app and the customer's browser: the app starts a
// consent on the consent API, the browser logs in at the bank and follows
// the redirects through tokenproxy's callback to the app's return URL,
// which is returned.
func demoConsent(api string, ca *pki.CA) (string, error) {
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := direct.Post(api+"/v1/routes/bpce/consents/alice", "application/json", strings.NewReader(`{"return_url":"`+demoSTETReturn+`"}`))
	if err != nil {
		return "", err
	}
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	err = json.NewDecoder(resp.Body).Decode(&start)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("start: HTTP %d", resp.StatusCode)
	}
	var landed string
	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool()}},
		CheckRedirect: func(r *http.Request, _ []*http.Request) error {
			if r.URL.Host == "app.example" {
				landed = r.URL.String()
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err = browser.Get(start.AuthorizeURL + "&psu=marc")
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if !strings.Contains(landed, "status=active") {
		return "", fmt.Errorf("the browser landed on %q", landed)
	}
	return landed, nil
}

// demoSTETAccounts is the app's AISP call for customer alice.
func demoSTETAccounts(app *http.Client) (status, accounts int, err error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+demoSTETHost+"/stet/psd2/v1/accounts", nil)
	req.Header.Set("Tokenproxy-Subject", "alice")
	resp, err := app.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("STET call: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, 0, fmt.Errorf("STET call: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var body struct {
		Accounts []json.RawMessage `json:"accounts"`
	}
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, len(body.Accounts), nil
}

// demoFreeAddr is a free loopback address (the consent API's, which its
// callback URL names before it listens).
func demoFreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
