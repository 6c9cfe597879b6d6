package demo

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/fapi"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const (
	demoFAPIHost     = "api.fapibank.example"
	demoFAPIClientID = "tpp-demo"
	demoFAPIReturn   = "https://app.example/consent-done"
)

// demoFAPI runs the FAPI 2.0 steps (10-11) against the Go FAPI 2.0 bank
// emulator, whose DPoP nonces rotate every second: a consent through a
// pushed authorization request, the callback with iss, a DPoP-bound token
// obtained with a private_key_jwt assertion (ES256) after the bank's nonce
// challenge, and a resource call with a DPoP proof. It prints what the bank
// saw and checks that nothing the bank issued reached the app. It runs its
// own tokenproxy and stops it.
func demoFAPI(ctx context.Context, p func(string, ...any), ca *pki.CA, server *tls.Certificate, log *zap.Logger) (err error) {
	dir, err := os.MkdirTemp("", "tokenproxy-demo-fapi-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	clientKey, clientKeyFile, err := demoKeyFile(dir, "client-key.pem")
	if err != nil {
		return err
	}
	_, dpopKeyFile, err := demoKeyFile(dir, "dpop-key.pem")
	if err != nil {
		return err
	}
	consentAddr, err := demoFreeAddr()
	if err != nil {
		return err
	}
	callback := "http://" + consentAddr + "/v1/callback"
	emu := fapi.New(fapi.Config{NonceEvery: time.Second, Clients: map[string]fapi.Client{demoFAPIClientID: {
		Method: "private_key_jwt", Key: clientKey, RedirectURIs: []string{callback}, DPoP: true}}})
	bank := httptest.NewUnstartedServer(emu)
	bank.TLS = &tls.Config{Certificates: []tls.Certificate{*server}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	bank.StartTLS()
	defer bank.Close()
	emu.SetIssuer(bank.URL)

	os.Setenv("TOKENPROXY_DEMO_FAPI_CONSENT_KEY", randomString()+randomString()+randomString()[:16]) // 64 hex digits
	cfg := demoFAPIConfig(bank.URL, consentAddr, filepath.Join(dir, "consents.db"), clientKeyFile, dpopKeyFile)
	cfg.ApplyDefaults()
	if err := errors.Join(cfg.Validate(), assemble.Check(cfg)); err != nil {
		return err
	}
	srv, stop, err := serveInBackground(ctx, cfg, assemble.Setup{Log: log, RootCAs: ca.CertPool()})
	if err != nil {
		return err
	}
	defer stop(&err)

	var seen bytes.Buffer // every byte the app received
	app := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}}
	back, authorize, err := demoFAPIConsent("http://"+consentAddr, ca, &seen)
	if err != nil {
		return fmt.Errorf("FAPI 2.0 consent: %w", err)
	}
	p("  %-52s authorize URL %s?%s", "10. a FAPI 2.0 customer consents (PAR, iss check)", strings.SplitN(authorize, "?", 2)[0], demoShortQuery(authorize))
	p("  %-52s the app got back only %s", "", back)
	req, _ := http.NewRequest(http.MethodGet, "http://"+demoFAPIHost+"/accounts", nil)
	req.Header.Set("Tokenproxy-Subject", "alice")
	resp, err := app.Do(req)
	if err != nil {
		return fmt.Errorf("FAPI 2.0 call: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = resp.Header.Write(&seen)
	seen.Write(body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("FAPI 2.0 call: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	st := emu.Stats()
	p("  %-52s %d         resource requests the bank accepted with a DPoP proof: %d, refused: %d", "11. Tokenproxy-Subject: alice, DPoP-bound token", resp.StatusCode, st.Accepted, demoSum(st.Refused))
	leaked := 0
	for _, s := range emu.Issued() {
		if bytes.Contains(seen.Bytes(), []byte(s)) {
			leaked++
		}
	}
	p("      the bank saw %d PAR request, %d token requests (the code exchange and its DPoP nonce retry), nonce challenges: AS %d, RS %d;",
		st.PARRequests, demoSum(st.TokenRequests), st.NonceChallenges["as"], st.NonceChallenges["rs"])
	p("      tokens or codes in what the app received: %d", leaked)
	if leaked != 0 {
		return errors.New("FAPI 2.0: the app saw a token or a code")
	}
	return nil
}

// demoFAPIConfig is the fapi2 route (endpoints from the bank's metadata,
// private_key_jwt, a DPoP key) and its consent store.
func demoFAPIConfig(bankURL, consentAddr, storePath, clientKey, dpopKey string) *config.Config {
	return &config.Config{
		Listen: config.Listen{Proxy: "127.0.0.1:0", Admin: "off"},
		Routes: []config.Route{{
			Name: "fapibank", Hosts: []string{demoFAPIHost}, Upstream: bankURL,
			Token: &config.Token{Type: config.TokenAuthorizationCode,
				// A consent costs 3 requests at the bank: PAR, the code
				// exchange and its nonce retry.
				RateLimit: config.RateLimit{RequestsPerMinute: 60, Burst: 10},
				OAuthToken: config.OAuthToken{
					ClientID: demoFAPIClientID, AuthMethod: "private_key_jwt", Scopes: []string{"accounts"},
					PrivateKey: &config.PrivateKey{File: clientKey},
					FAPI:       config.FAPI{Profile: config.ProfileFAPI2, Issuer: bankURL, Discovery: true},
					DPoP:       &config.DPoPConfig{PrivateKey: &config.PrivateKey{File: dpopKey}},
				}},
		}},
		Consents: &config.Consents{Listen: consentAddr, CallbackURL: "http://" + consentAddr + "/v1/callback", ReturnURLs: []string{demoFAPIReturn},
			Store: config.ConsentStore{Bbolt: &config.BoltStore{Path: storePath, Key: secret.Ref{Env: "TOKENPROXY_DEMO_FAPI_CONSENT_KEY"}}}},
	}
}

// demoFAPIConsent plays the app (it starts the consent) and the customer's
// browser (it logs in at the bank and follows the redirects through
// tokenproxy's callback to the app's return URL), and returns the return
// URL and the authorize URL. What the app receives is added to seen.
func demoFAPIConsent(api string, ca *pki.CA, seen *bytes.Buffer) (back, authorize string, err error) {
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := direct.Post(api+"/v1/routes/fapibank/consents/alice", "application/json", strings.NewReader(`{"return_url":"`+demoFAPIReturn+`"}`))
	if err != nil {
		return "", "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seen.Write(body)
	if resp.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("start: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if err := json.Unmarshal(body, &start); err != nil {
		return "", "", err
	}
	var landed string
	browser := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: ca.CertPool()}},
		CheckRedirect: func(r *http.Request, _ []*http.Request) error {
			if r.URL.Host == "app.example" {
				landed = r.URL.String()
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err = browser.Get(start.AuthorizeURL + "&psu=alice")
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	seen.WriteString(landed)
	if !strings.Contains(landed, "status=active") {
		return "", "", fmt.Errorf("the browser landed on %q", landed)
	}
	return landed, start.AuthorizeURL, nil
}

// demoShortQuery shows an authorize URL's query with the request_uri cut.
func demoShortQuery(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	var parts []string
	for _, k := range []string{"client_id", "request_uri"} {
		v := pu.Query().Get(k)
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		parts = append(parts, k+"="+v)
	}
	if len(pu.Query()) != 2 {
		parts = append(parts, fmt.Sprintf("(and %d more)", len(pu.Query())-2))
	}
	return strings.Join(parts, "&")
}

// demoKeyFile makes a P-256 key and writes it as a PKCS#8 PEM file.
func demoKeyFile(dir, name string) (crypto.PublicKey, string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, "", err
	}
	return k.Public(), path, nil
}

func demoSum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
