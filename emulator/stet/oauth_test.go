package stet

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/internal/emutest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type oauthEnv struct {
	h      *Handler
	base   string
	client *http.Client
	clk    *clock
}

func startOAuth(t *testing.T, rotate bool) *oauthEnv {
	t.Helper()
	p := emutest.NewPKI(t)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := New(Config{Keys: trust(p), Now: clk.Now, OAuth: &OAuthConfig{Rotate: rotate, Clients: map[string]Client{
		"PSDFR-ACPR-13807": {Method: "tls_client_auth", CertSubject: "tpp.example QWAC"},
		"basic-client":     {Method: "client_secret_basic", Secret: "s3cret:&"},
	}}})
	srv, client := emutest.StartMTLS(t, p, h)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &oauthEnv{h: h, base: srv.URL + "/stet/psd2/oauth", client: client, clk: clk}
}

// login runs the scripted customer login and returns the code.
func (e *oauthEnv) login(t *testing.T, psu, challenge string) string {
	t.Helper()
	q := url.Values{"response_type": {"code"}, "client_id": {"PSDFR-ACPR-13807"}, "redirect_uri": {"https://app.example/cb"},
		"scope": {"aisp"}, "state": {"st-1"}, "psu": {psu}}
	if challenge != "" {
		q.Set("code_challenge", challenge)
		q.Set("code_challenge_method", "S256")
	}
	resp, err := e.client.Get(e.base + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Query().Get("state") != "st-1" {
		t.Fatalf("authorize: %d %v", resp.StatusCode, err)
	}
	return loc.Query().Get("code")
}

func (e *oauthEnv) token(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	if !form.Has("client_id") {
		form.Set("client_id", "PSDFR-ACPR-13807")
	}
	resp, err := e.client.PostForm(e.base+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func TestOAuthCodeAndRefresh(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		t.Run(map[bool]string{false: "BPCE same refresh token", true: "rotating"}[rotate], func(t *testing.T) {
			e := startOAuth(t, rotate)
			verifier := strings.Repeat("v", 50)
			sum := sha256.Sum256([]byte(verifier))
			code := e.login(t, "marc", base64.RawURLEncoding.EncodeToString(sum[:]))
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"}}
			if st, m := e.token(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"},
				"code_verifier": {"wrong"}}); st != 400 || m["error"] != "invalid_grant" {
				t.Fatalf("wrong PKCE verifier: %d %v", st, m)
			}
			form.Set("code_verifier", verifier)
			st, m := e.token(t, form)
			if st != 200 || m["expires_in"].(float64) != 3600 {
				t.Fatalf("code exchange: %d %v", st, m)
			}
			if st, _ := e.token(t, form); st != 400 {
				t.Fatalf("code reuse: %d, want 400", st)
			}
			rt, at1 := m["refresh_token"].(string), m["access_token"].(string)
			st, m = e.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			if st != 200 || (m["refresh_token"] == rt) == rotate || e.h.Refreshes() != 1 {
				t.Fatalf("refresh: %d, same token back %v, rotate %v, refreshes %d", st, m["refresh_token"] == rt, rotate, e.h.Refreshes())
			}
			if _, ok := e.h.CustomerOf("Bearer " + at1); ok {
				t.Fatal("the previous access token still works after a refresh")
			}
			if psu, ok := e.h.CustomerOf("Bearer " + m["access_token"].(string)); !ok || psu != "marc" {
				t.Fatalf("new access token: %q %v", psu, ok)
			}
			st, m2 := e.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			if rotate && (st != 400 || m2["error"] != "invalid_grant") {
				t.Fatalf("reuse of a rotated refresh token: %d %v", st, m2)
			}
			if !rotate && st != 200 {
				t.Fatalf("BPCE refresh token reuse: %d", st)
			}
			e.clk.Add(91 * 24 * time.Hour)
			cur, _ := m2["refresh_token"].(string)
			if cur == "" {
				cur = m["refresh_token"].(string)
			}
			if st, m := e.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cur}}); st != 400 || m["error"] != "invalid_grant" {
				t.Fatalf("after 90 days: %d %v", st, m)
			}
		})
	}
}

func TestOAuthClientAuthAndRevoke(t *testing.T) {
	e := startOAuth(t, false)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody"}}
	if st, m := e.token(t, form); st != 401 || m["error"] != "invalid_client" {
		t.Fatalf("unknown client: %d %v", st, m)
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("basic-client", url.QueryEscape("s3cret:&"))
	resp, err := e.client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("client_secret_basic: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodPost, e.base+"/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("basic-client", "wrong")
	if resp, err = e.client.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("wrong secret: %v", err)
	}
	resp.Body.Close()

	code := e.login(t, "marc", "")
	_, m := e.token(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"}})
	rt := m["refresh_token"].(string)
	resp, err = e.client.PostForm(e.base+"/revoke", url.Values{"token": {rt}, "client_id": {"PSDFR-ACPR-13807"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v", err)
	}
	resp.Body.Close()
	if st, m := e.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); st != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("revoked refresh token: %d %v", st, m)
	}
	if _, ok := e.h.CustomerOf("Bearer " + m["access_token"].(string)); ok {
		t.Fatal("access token survived revocation")
	}
	e.h.Throttle(1)
	if st, _ := e.token(t, url.Values{"grant_type": {"client_credentials"}}); st != 429 {
		t.Fatalf("throttled: %d", st)
	}
}
