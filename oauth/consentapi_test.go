package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

const returnURL = "https://app.example/consent-done"

type apiEnv struct {
	*env
	api   *httptest.Server
	route *AuthCode
	log   *testlog.Capture
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	e := newEnv(t, true)
	store, _ := tempBolt(t)
	store.(*consentstore.Bolt).SetClock(e.clk.Now) // started consents expire on the test's clock
	route := e.authCode(t, store, nil, nil)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	log, capture := testlog.New(t)
	capture.Forbid(e.h.Issued)
	api, err := NewAPI(APIConfig{Log: log, Routes: []*AuthCode{route}, CallbackURL: srv.URL + "/v1/callback", ReturnURLs: []string{returnURL},
		Now: e.clk.Now, Authenticate: func(r *http.Request) (string, error) {
			if c := r.Header.Get("X-Test-Caller"); c != "" {
				return c, nil
			}
			return "", errors.New("no caller")
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/", api)
	return &apiEnv{env: e, api: srv, route: route, log: capture}
}

// call sends an API request as caller and decodes the JSON answer.
func (a *apiEnv) call(t *testing.T, caller, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.api.URL+path, rd)
	if caller != "" {
		req.Header.Set("X-Test-Caller", caller)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a.noSecrets(t, "an API answer", string(raw))
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// header is call's answer's header.
func (a *apiEnv) header(t *testing.T, caller, method, path string) http.Header {
	t.Helper()
	req, _ := http.NewRequest(method, a.api.URL+path, nil)
	if caller != "" {
		req.Header.Set("X-Test-Caller", caller)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.Header
}

// browse is the customer's browser: the scripted login at the bank, then
// the bank's redirect to the callback. It returns where the callback sends
// the browser.
func (a *apiEnv) browse(t *testing.T, authorizeURL, psu string) *url.URL {
	t.Helper()
	cb := a.login(t, authorizeURL, psu)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback answered %d, want 303", resp.StatusCode)
	}
	back, _ := url.Parse(resp.Header.Get("Location"))
	return back
}

func TestConsentAPICallbackFlow(t *testing.T) {
	a := newAPIEnv(t)
	st, m := a.call(t, "app-a", "POST", "/v1/routes/bpce/consents/marc", nil)
	if st != 201 {
		t.Fatalf("start: %d %v", st, m)
	}
	authURL := m["authorize_url"].(string)
	q, _ := url.Parse(authURL)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("state") != m["state"] ||
		q.Query().Get("redirect_uri") != a.api.URL+"/v1/callback" || q.Query().Get("scope") != "aisp" {
		t.Fatalf("authorize URL query %v", q.Query())
	}
	back := a.browse(t, authURL, "marc")
	if back.Scheme+"://"+back.Host+back.Path != returnURL || back.Query().Get("status") != "active" ||
		back.Query().Get("subject") != "marc" || back.Query().Has("code") {
		t.Fatalf("the app was sent to %s", back.Redacted())
	}
	a.noSecrets(t, "the app's return URL", back.String())

	st, m = a.call(t, "app-a", "GET", "/v1/routes/bpce/consents/marc", nil)
	if st != 200 || m["status"] != "active" || m["refresh_expires_at"] == nil || m["access_expires_at"] == nil {
		t.Fatalf("status: %d %v", st, m)
	}
	tok, err := a.route.Fetch(t.Context(), SubjectKey("app-a", "marc"))
	if err != nil {
		t.Fatal(err)
	}
	if psu, ok := a.h.CustomerOf(tok.Header); !ok || psu != "marc" {
		t.Fatal("the consent does not give marc's token")
	}
	// The state is single use.
	resp, err := http.Get(a.api.URL + "/v1/callback?state=" + url.QueryEscape(q.Query().Get("state")) + "&code=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Tokenproxy-Error") != "invalid_state" {
		t.Fatalf("state reuse: %d", resp.StatusCode)
	}
}

func TestConsentAPIStateExpires(t *testing.T) {
	a := newAPIEnv(t)
	_, m := a.call(t, "app-a", "POST", "/v1/routes/bpce/consents/marc", nil)
	cb := a.login(t, m["authorize_url"].(string), "marc")
	a.clk.Add(11 * time.Minute)
	resp, err := http.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("expired state: %d, want 400", resp.StatusCode)
	}
}

func TestConsentAPIExchange(t *testing.T) {
	a := newAPIEnv(t)
	st, m := a.call(t, "app-a", "POST", "/v1/routes/bpce/consents/lea", map[string]string{"redirect_uri": appCallback})
	if st != 201 {
		t.Fatalf("start: %d %v", st, m)
	}
	cb := a.login(t, m["authorize_url"].(string), "lea")
	body := map[string]string{"code": cb.Query().Get("code"), "state": cb.Query().Get("state")}
	if st, _ := a.call(t, "app-b", "POST", "/v1/routes/bpce/consents/lea/exchange", body); st != 400 {
		t.Fatalf("another caller used app-a's state: %d", st)
	}
	st, m = a.call(t, "app-a", "POST", "/v1/routes/bpce/consents/lea/exchange", body)
	if st != 200 || m["status"] != "active" {
		t.Fatalf("exchange: %d %v", st, m)
	}
}

func TestConsentAPICallerIsolation(t *testing.T) {
	a := newAPIEnv(t)
	a.consent(t, a.route, "app-a", "marc")
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		{"status", "GET", "/v1/routes/bpce/consents/marc", 404},
		{"delete", "DELETE", "/v1/routes/bpce/consents/marc", 404},
	} {
		if st, m := a.call(t, "app-b", tc.method, tc.path, nil); st != tc.want || m["error"] != "consent_not_found" {
			t.Errorf("app-b %s of app-a's subject: %d %v", tc.name, st, m)
		}
	}
	if _, m := a.call(t, "app-b", "GET", "/v1/routes/bpce/consents", nil); len(m["consents"].([]any)) != 0 {
		t.Fatalf("app-b lists %v", m["consents"])
	}
	if _, m := a.call(t, "app-a", "GET", "/v1/routes/bpce/consents", nil); len(m["consents"].([]any)) != 1 {
		t.Fatalf("app-a lists %v", m["consents"])
	}
	if _, err := a.route.Fetch(t.Context(), SubjectKey("app-b", "marc")); err == nil {
		t.Fatal("app-b got a token for app-a's subject")
	}
	if st, m := a.call(t, "", "GET", "/v1/routes/bpce/consents", nil); st != 401 || m["error"] != "unauthorized" || m["route"] != "bpce" {
		t.Fatalf("no caller: %d %v; want 401 unauthorized naming route bpce", st, m)
	}
	if h := a.header(t, "", "GET", "/v1/routes/bpce/consents"); h.Get("WWW-Authenticate") != `Basic realm="tokenproxy"` {
		t.Fatalf("no caller: WWW-Authenticate %q; a 401 must carry the scheme the API accepts", h.Get("WWW-Authenticate"))
	}
	if st, m := a.call(t, "app-a", "GET", "/v1/routes/nope/consents", nil); st != 404 || m["route"] != "nope" {
		t.Fatalf("unknown route: %d %v", st, m)
	}
	if st, _ := a.call(t, "app-a", "DELETE", "/v1/routes/bpce/consents/marc", nil); st != 204 {
		t.Fatalf("app-a delete: %d", st)
	}
	if st, _ := a.call(t, "app-a", "GET", "/v1/routes/bpce/consents/marc", nil); st != 404 {
		t.Fatalf("after delete: %d", st)
	}
	if !strings.HasPrefix(a.api.URL, "http://127.0.0.1") {
		t.Fatal("the API test server is not on loopback")
	}
}

func TestConsentAPIFailedExchangeIsLoggedWithoutTheCode(t *testing.T) {
	a := newAPIEnv(t)
	_, m := a.call(t, "app-a", "POST", "/v1/routes/bpce/consents/marc", nil)
	cb := a.login(t, m["authorize_url"].(string), "marc")
	q := cb.Query()
	code := q.Get("code")
	q.Set("code", code+"-tampered")
	cb.RawQuery = q.Encode()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	if back.Query().Get("error") != "exchange_failed" || back.Query().Has("code") {
		t.Fatalf("the app was sent to %s", back.Redacted())
	}
	if st, _ := a.call(t, "app-a", "GET", "/v1/routes/bpce/consents/marc", nil); st != 404 {
		t.Fatalf("a failed exchange stored a consent: %d", st)
	}
	if a.log.Count("consent code exchange failed", "invalid_grant") != 1 {
		t.Fatalf("log: %s", a.log.String())
	}
}
