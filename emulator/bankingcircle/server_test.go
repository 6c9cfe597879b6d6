package bankingcircle_test

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const (
	user = "m2m-user"
	pass = "p@ss:word" // a colon in the password must survive Basic encoding
)

// fakeClock is the emulator's injected clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2024, 2, 21, 12, 0, 10, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	ca     *pki.CA
	cert   *tls.Certificate // the M2M user's client certificate
	clock  *fakeClock
	emu    *bankingcircle.Server
	client *http.Client
}

// start runs an emulator with real TLS; edit adjusts the config first.
func start(t *testing.T, edit func(*bankingcircle.Config)) *fixture {
	t.Helper()
	ca, err := pki.NewCA("Test Bank Root")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := ca.IssueClient("m2m-user")
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	cfg := bankingcircle.Config{
		ServerCert: srvCert,
		ClientCAs:  ca.CertPool(),
		Username:   user,
		Password:   pass,
		Now:        clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	emu, err := bankingcircle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	f := &fixture{ca: ca, cert: cliCert, clock: clock, emu: emu}
	f.client = f.clientWith(cliCert)
	return f
}

// clientWith returns a stock client presenting cert (none when nil) and
// opening a new connection per request, so every request is a handshake.
func (f *fixture) clientWith(cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: f.ca.CertPool()}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true},
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

func do(t *testing.T, c *http.Client, method, url, authorization string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type %q", method, url, ct)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func basic(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

func (f *fixture) authorize(t *testing.T) response {
	t.Helper()
	return do(t, f.client, http.MethodGet, f.emu.AuthURL()+bankingcircle.AuthorizePath, basic(user, pass))
}

func (f *fixture) token(t *testing.T) string {
	t.Helper()
	r := f.authorize(t)
	if r.status != http.StatusOK {
		t.Fatalf("authorize: %d %s", r.status, r.body)
	}
	return r.json(t)["access_token"].(string)
}

func (f *fixture) accounts(t *testing.T, query, token string) response {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return do(t, f.client, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath+query, auth)
}

func TestAuthorize(t *testing.T) {
	f := start(t, nil)
	url := f.emu.AuthURL() + bankingcircle.AuthorizePath
	for _, tc := range []struct {
		name   string
		method string
		auth   string
		status int
	}{
		{"good credentials", http.MethodGet, basic(user, pass), http.StatusOK},
		{"lowercase scheme", http.MethodGet, "basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)), http.StatusOK},
		{"wrong password", http.MethodGet, basic(user, "nope"), http.StatusUnauthorized},
		{"wrong user", http.MethodGet, basic("someone", pass), http.StatusUnauthorized},
		{"no header", http.MethodGet, "", http.StatusUnauthorized},
		{"bearer instead of basic", http.MethodGet, "Bearer x", http.StatusUnauthorized},
		{"not base64", http.MethodGet, "Basic !!!", http.StatusUnauthorized},
		{"POST", http.MethodPost, basic(user, pass), http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, f.client, tc.method, url, tc.auth)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			m := r.json(t)
			switch tc.status {
			case http.StatusOK:
				if m["expires_in"] != "300" { // a JSON string, as the real service sends it
					t.Fatalf("expires_in %#v, want the string \"300\"", m["expires_in"])
				}
				if m["token_type"] != "Bearer" || m["access_token"] == "" {
					t.Fatalf("body %s", r.body)
				}
				if strings.Contains(string(r.body), pass) {
					t.Fatal("password echoed")
				}
			case http.StatusUnauthorized:
				if m["error"] != bankingcircle.CodeUnauthorized || r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("body %s header %v", r.body, r.header)
				}
			}
		})
	}
	st := f.emu.Stats()
	if st.TokenRequests != 8 || st.TokensIssued != 2 || st.TokenUnauthorized != 5 {
		t.Fatalf("stats %+v", st)
	}
	if got := len(f.emu.IssuedTokens()); got != 2 {
		t.Fatalf("%d issued tokens, want 2", got)
	}
}

func TestTokenShape(t *testing.T) {
	f := start(t, nil)
	tok := f.token(t)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || !strings.HasPrefix(tok, "eyJ") {
		t.Fatalf("token %q is not JWT-shaped", tok)
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(claims, &c); err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(f.cert.Leaf.Raw)
	if c["thumbprint"] != strings.ToUpper(hex.EncodeToString(sum[:])) {
		t.Fatalf("thumbprint claim %v", c["thumbprint"])
	}
	if exp := int64(c["exp"].(float64)); exp != f.clock.Now().Add(300*time.Second).Unix() {
		t.Fatalf("exp %d", exp)
	}
	if tok2 := f.token(t); tok2 == tok {
		t.Fatal("two tokens are equal")
	}
}

func TestAccounts(t *testing.T) {
	f := start(t, nil)
	tok := f.token(t)
	all := bankingcircle.DefaultAccounts()
	for _, tc := range []struct {
		name     string
		query    string
		token    string
		status   int
		wantIDs  []string
		wantPage bankingcircle.PageInfo
	}{
		{"no token", "", "", http.StatusUnauthorized, nil, bankingcircle.PageInfo{}},
		{"unknown token", "", "eyJnot.a.token", http.StatusUnauthorized, nil, bankingcircle.PageInfo{}},
		{"defaults", "", tok, http.StatusOK,
			[]string{all[0].AccountID, all[1].AccountID, all[2].AccountID}, bankingcircle.PageInfo{CurrentPage: 1, PageSize: 50}},
		{"seed query", "?PageNumber=1&PageSize=50", tok, http.StatusOK,
			[]string{all[0].AccountID, all[1].AccountID, all[2].AccountID}, bankingcircle.PageInfo{CurrentPage: 1, PageSize: 50}},
		{"second page of one", "?PageNumber=2&PageSize=1", tok, http.StatusOK,
			[]string{all[1].AccountID}, bankingcircle.PageInfo{CurrentPage: 2, PageSize: 1}},
		{"keys are case-insensitive", "?pagenumber=3&pagesize=1", tok, http.StatusOK,
			[]string{all[2].AccountID}, bankingcircle.PageInfo{CurrentPage: 3, PageSize: 1}},
		{"past the end", "?PageNumber=9&PageSize=2", tok, http.StatusOK,
			[]string{}, bankingcircle.PageInfo{CurrentPage: 9, PageSize: 2}},
		{"currency filter", "?Currency=gbp", tok, http.StatusOK,
			[]string{all[1].AccountID}, bankingcircle.PageInfo{CurrentPage: 1, PageSize: 50}},
		{"page size zero", "?PageSize=0", tok, http.StatusBadRequest, nil, bankingcircle.PageInfo{}},
		{"page size too big", "?PageSize=5001", tok, http.StatusBadRequest, nil, bankingcircle.PageInfo{}},
		{"page number not a number", "?PageNumber=one", tok, http.StatusBadRequest, nil, bankingcircle.PageInfo{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.accounts(t, tc.query, tc.token)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if tc.status == http.StatusUnauthorized && r.json(t)["error"] != bankingcircle.CodeInvalidToken {
				t.Fatalf("body %s", r.body)
			}
			if tc.status != http.StatusOK {
				return
			}
			var page bankingcircle.AccountsPage
			if err := json.Unmarshal(r.body, &page); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range page.Result {
				ids = append(ids, a.AccountID)
			}
			if !slices.Equal(ids, tc.wantIDs) || page.PageInfo != tc.wantPage {
				t.Fatalf("ids %v pageInfo %+v, want %v %+v", ids, page.PageInfo, tc.wantIDs, tc.wantPage)
			}
			if !strings.Contains(string(r.body), `"result":[`) {
				t.Fatalf("result is not a JSON array: %s", r.body)
			}
		})
	}
	st := f.emu.Stats()
	if st.APIUnauthorized != 2 || st.AccountsServed != 6 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSeedAccountShape checks the first default account against the guide's
// example, field for field, including the nulls.
func TestSeedAccountShape(t *testing.T) {
	f := start(t, nil)
	r := f.accounts(t, "?PageNumber=1&PageSize=1", f.token(t))
	var page struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Result) != 1 {
		t.Fatalf("%v %s", err, r.body)
	}
	const seed = `{
"accountId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
"accountDescription": "Description of the account",
"accountIdentifiers": [{"account": "DK6289000049910085", "financialInstitution": "", "country": "DK"}],
"ibans": ["DK6289000049910085", "LU734080000049971008", "DE422022080000499910085"],
"status": "Active", "currency": "EUR",
"openingDate": "2023-02-21T00:00:00+00:00", "closingDate": null,
"ownedByCompanyId": "2920e27e-b112-4b09-8ae6-c6f4aaacd3c7", "ownedByCompanyName": "ACME industries Ltd",
"ownedByCompanyNumber": null, "protectionType": "None",
"balances": [{"type": "CurrentBalance", "currency": "EUR", "beginOfDayAmount": 999,
  "financialDate": "2024-02-21T00:00:00+00:00", "intraDayAmount": 0,
  "lastTransactionTimestamp": "2024-02-21T12:03:01.3099984+00:00"}],
"friendlyName": "", "netInterestRate": null, "interestCalcMethod": null,
"overdraftRate": null, "overdraftRateCalcMethod": null}`
	var want map[string]any
	if err := json.Unmarshal([]byte(seed), &want); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(page.Result[0])
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Fatalf("account\n got %s\nwant %s", got, wantJSON)
	}
}

func TestAccountByID(t *testing.T) {
	f := start(t, nil)
	tok := f.token(t)
	id := bankingcircle.DefaultAccounts()[1].AccountID
	r := do(t, f.client, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath+"/"+id, "Bearer "+tok)
	if r.status != http.StatusOK || r.json(t)["accountId"] != id {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = do(t, f.client, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath+"/nope", "Bearer "+tok)
	if r.status != http.StatusNotFound {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = do(t, f.client, http.MethodGet, f.emu.APIURL()+"/api/v1/payments", "Bearer "+tok)
	if r.status != http.StatusNotFound {
		t.Fatalf("unknown endpoint: %d %s", r.status, r.body)
	}
}

func TestTokenExpiry(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.TokenTTL = 60 * time.Second })
	tok := f.token(t)
	f.clock.Advance(59 * time.Second)
	if r := f.accounts(t, "", tok); r.status != http.StatusOK {
		t.Fatalf("before expiry: %d %s", r.status, r.body)
	}
	f.clock.Advance(time.Second)
	r := f.accounts(t, "", tok)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.json(t)["message"].(string), "expired") {
		t.Fatalf("at expiry: %d %s", r.status, r.body)
	}
	if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}

	f.emu.SetTokenTTL(2 * time.Second)
	if got := f.authorize(t).json(t)["expires_in"]; got != "2" {
		t.Fatalf("expires_in after SetTokenTTL: %#v", got)
	}
}

func TestRevokeTokens(t *testing.T) {
	f := start(t, nil)
	tok := f.token(t)
	if r := f.accounts(t, "", tok); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	f.emu.RevokeTokens()
	if r := f.accounts(t, "", tok); r.status != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d %s", r.status, r.body)
	}
	if !slices.Contains(f.emu.IssuedTokens(), tok) {
		t.Fatal("IssuedTokens forgot a revoked token")
	}
	if r := f.accounts(t, "", f.token(t)); r.status != http.StatusOK {
		t.Fatalf("new token: %d %s", r.status, r.body)
	}
}

func TestThrottle(t *testing.T) {
	type step struct {
		advance    time.Duration
		status     int
		retryAfter string
	}
	for _, tc := range []struct {
		name   string
		window bankingcircle.ThrottleWindow
		steps  []step
	}{
		{"sliding", bankingcircle.SlidingWindow, []step{
			{0, 200, ""},
			{20 * time.Second, 200, ""},
			{0, 200, ""},
			{0, 429, "40"},               // the first leaves the window 60 s after it came
			{39 * time.Second, 429, "1"}, // refused requests do not count
			{time.Second, 200, ""},       // first one left
			{0, 429, "20"},               // now the two at 20 s are the oldest
			{19 * time.Second, 429, "1"}, // still inside their minute
			{time.Second, 200, ""},       // both left
			{60 * time.Second, 200, ""},  // everything left
		}},
		{"fixed", bankingcircle.FixedWindow, []step{ // the clock starts at 12:00:10
			{0, 200, ""},
			{20 * time.Second, 200, ""},
			{0, 200, ""},
			{0, 429, "30"}, // until 12:01:00
			{29 * time.Second, 429, "1"},
			{time.Second, 200, ""}, // 12:01:00, a new window
			{0, 200, ""},
			{0, 200, ""},
			{0, 429, "60"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, func(c *bankingcircle.Config) {
				c.TokenRequestsPerMinute = 3
				c.ThrottleWindow = tc.window
			})
			for i, s := range tc.steps {
				f.clock.Advance(s.advance)
				r := f.authorize(t)
				if r.status != s.status || r.header.Get("Retry-After") != s.retryAfter {
					t.Fatalf("step %d: status %d Retry-After %q, want %d %q; body %s",
						i, r.status, r.header.Get("Retry-After"), s.status, s.retryAfter, r.body)
				}
				if r.status == 429 && r.json(t)["error"] != bankingcircle.CodeTooManyRequests {
					t.Fatalf("step %d: body %s", i, r.body)
				}
			}
			accepted := 0
			var times []time.Time
			for _, tr := range f.emu.TokenRequests() {
				if tr.Status == http.StatusOK {
					accepted++
					times = append(times, tr.Time)
				}
			}
			if got := bankingcircle.MaxTokenRequestsInWindow(times, time.Minute); tc.window == bankingcircle.SlidingWindow && got > 3 {
				t.Fatalf("%d accepted in one sliding minute", got)
			}
			st := f.emu.Stats()
			if st.TokenRequests != len(tc.steps) || st.TokensIssued != accepted || st.TokenThrottled != len(tc.steps)-accepted {
				t.Fatalf("stats %+v", st)
			}
			if len(f.emu.TokenRequestTimes()) != len(tc.steps) {
				t.Fatal("TokenRequestTimes incomplete")
			}
		})
	}
}

func TestThrottleCountsWrongCredentials(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.TokenRequestsPerMinute = 1 })
	url := f.emu.AuthURL() + bankingcircle.AuthorizePath
	if r := do(t, f.client, http.MethodGet, url, basic(user, "wrong")); r.status != http.StatusUnauthorized {
		t.Fatalf("%d", r.status)
	}
	if r := f.authorize(t); r.status != http.StatusTooManyRequests {
		t.Fatalf("a refused login must use the budget too: %d", r.status)
	}
	f.emu.SetTokenRequestsPerMinute(0)
	if r := f.authorize(t); r.status != http.StatusOK {
		t.Fatalf("throttle off: %d", r.status)
	}
}

func TestForceThrottle(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) {
		c.ThrottleNext = 1
		c.ThrottleRetryAfter = 1500 * time.Millisecond
	})
	r := f.authorize(t)
	if r.status != 429 || r.header.Get("Retry-After") != "2" { // rounded up
		t.Fatalf("from Config: %d %q", r.status, r.header.Get("Retry-After"))
	}
	f.emu.ForceThrottle(2, 0)
	for i := range 2 {
		r := f.authorize(t)
		if r.status != 429 || r.header.Values("Retry-After") != nil {
			t.Fatalf("forced %d: %d %q", i, r.status, r.header.Values("Retry-After"))
		}
	}
	if r := f.authorize(t); r.status != 200 {
		t.Fatalf("after the forced ones: %d", r.status)
	}
	f.emu.ForceThrottle(5, 7*time.Second)
	f.emu.ForceThrottle(0, 0)
	if r := f.authorize(t); r.status != 200 {
		t.Fatalf("cancelled: %d", r.status)
	}
	if st := f.emu.Stats(); st.TokenThrottled != 3 || st.TokensIssued != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAllowlist(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.AllowedIPs = []string{"192.0.2.10", "198.51.100.0/24"} })
	check := func(r response) {
		t.Helper()
		if r.status != http.StatusForbidden {
			t.Fatalf("status %d, want 403; body %s", r.status, r.body)
		}
		m := r.json(t)
		if m["error"] != "ip_not_whitelisted" || m["message"] != "Your IP 127.0.0.1 is not whitelisted" {
			t.Fatalf("body %s", r.body)
		}
	}
	check(f.authorize(t))
	check(f.accounts(t, "", "whatever"))
	if st := f.emu.Stats(); st.Forbidden != 2 || st.TokensIssued != 0 {
		t.Fatalf("stats %+v", st)
	}

	if err := f.emu.SetAllowedIPs("127.0.0.0/8"); err != nil {
		t.Fatal(err)
	}
	if r := f.accounts(t, "", f.token(t)); r.status != http.StatusOK {
		t.Fatalf("allowed: %d %s", r.status, r.body)
	}
	if err := f.emu.SetAllowedIPs("not-an-ip"); err == nil {
		t.Fatal("bad allowlist entry accepted")
	}
	if err := f.emu.SetAllowedIPs(); err != nil {
		t.Fatal(err)
	}
	if r := f.authorize(t); r.status != http.StatusOK {
		t.Fatalf("empty allowlist: %d", r.status)
	}
}

func TestNoAccountAccess(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.NoAccountAccess = true })
	tok := f.token(t)
	r := f.accounts(t, "?PageNumber=1&PageSize=50", tok)
	if r.status != http.StatusNotFound || r.json(t)["error"] != bankingcircle.CodeNotFound {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// the token is checked first: no token is still 401
	if r := f.accounts(t, "", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("%d", r.status)
	}
	f.emu.SetNoAccountAccess(false)
	if r := f.accounts(t, "", tok); r.status != http.StatusOK {
		t.Fatalf("%d", r.status)
	}
	if st := f.emu.Stats(); st.AccountsNotFound != 1 || st.AccountsServed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHandshakes(t *testing.T) {
	f := start(t, nil)
	rotated, err := f.ca.IssueClient("m2m-user", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	tok := f.token(t)           // auth host, first certificate
	f.accounts(t, "", tok)      // API host, first certificate
	f.accounts(t, "", tok)      // new connection: another handshake
	c2 := f.clientWith(rotated) // after a rotation
	do(t, c2, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath, "Bearer "+tok)

	old, fresh := pki.Fingerprint(f.cert.Leaf), pki.Fingerprint(rotated.Leaf)
	if old != bankingcircle.Fingerprint(f.cert.Leaf) {
		t.Fatal("testpki and emulator fingerprints differ")
	}
	st := f.emu.Stats()
	if st.Handshakes != 4 || st.HandshakesByFingerprint[old] != 3 || st.HandshakesByFingerprint[fresh] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if st.HandshakesBySerial[bankingcircle.SerialHex(rotated.Leaf)] != 1 {
		t.Fatalf("by serial %v", st.HandshakesBySerial)
	}
	hs := f.emu.Handshakes()
	if len(hs) != 4 || hs[0].Host != bankingcircle.HostAuth || hs[1].Host != bankingcircle.HostAPI ||
		hs[3].Fingerprint != fresh || hs[3].Subject != "CN=m2m-user" || hs[3].Resumed {
		t.Fatalf("handshakes %+v", hs)
	}

	// A keep-alive client makes one handshake for many requests.
	f.emu.ResetStats()
	ka := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: f.ca.CertPool(), Certificates: []tls.Certificate{*f.cert},
	}}}
	defer ka.CloseIdleConnections()
	for range 3 {
		do(t, ka, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath, "Bearer "+tok)
	}
	if st := f.emu.Stats(); st.Handshakes != 1 || st.APIRequests != 3 || st.ClientHellos != 1 {
		t.Fatalf("keep-alive stats %+v", st)
	}
}

func TestHandshakeFailures(t *testing.T) {
	f := start(t, nil)
	otherCA, err := pki.NewCA("Someone Else")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.IssueClient("m2m-user")
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-72 * time.Hour)
	expired, err := f.ca.IssueClient("m2m-user", pki.WithValidity(past, past.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	serverUsage, err := f.ca.IssueClient("m2m-user", pki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate from another CA", foreign},
		{"expired certificate", expired},
		{"not for client auth", serverUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, url := range []string{f.emu.AuthURL() + bankingcircle.AuthorizePath, f.emu.APIURL() + bankingcircle.AccountsPath} {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Authorization", basic(user, pass))
				resp, err := f.clientWith(tc.cert).Do(req)
				if err == nil {
					resp.Body.Close()
					t.Fatalf("%s: request succeeded with status %d", url, resp.StatusCode)
				}
			}
		})
	}
	st := f.emu.Stats()
	if st.Handshakes != 0 || st.TokenRequests != 0 || st.APIRequests != 0 || st.ClientHellos != 8 {
		t.Fatalf("stats %+v", st)
	}

	// The bank stops trusting our CA: the next handshake fails.
	f.emu.SetClientCAs(otherCA.CertPool())
	if resp, err := f.client.Get(f.emu.APIURL() + bankingcircle.AccountsPath); err == nil {
		resp.Body.Close()
		t.Fatal("handshake with a no longer trusted certificate succeeded")
	}
	if r := do(t, f.clientWith(foreign), http.MethodGet, f.emu.AuthURL()+bankingcircle.AuthorizePath, basic(user, pass)); r.status != 200 {
		t.Fatalf("newly trusted certificate: %d", r.status)
	}
}

func TestAuthorizeHost(t *testing.T) {
	for _, onAPI := range []bool{false, true} {
		f := start(t, func(c *bankingcircle.Config) { c.AuthorizeOnAPIHost = onAPI })
		r := do(t, f.client, http.MethodGet, f.emu.APIURL()+bankingcircle.AuthorizePath, basic(user, pass))
		if want := map[bool]int{false: http.StatusUnauthorized, true: http.StatusOK}[onAPI]; r.status != want {
			// without the option the API host treats the path as an unknown
			// endpoint behind the bearer check
			t.Fatalf("AuthorizeOnAPIHost=%v: status %d, want %d", onAPI, r.status, want)
		}
		if f.emu.AuthURL() == f.emu.APIURL() {
			t.Fatal("one listener for both hosts")
		}
	}
}

func TestLatency(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.APILatency = time.Hour })
	tok := f.token(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.emu.APIURL()+bankingcircle.AccountsPath, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := f.client.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("a request against an hour of latency returned %d %q %v", resp.StatusCode, b, resp.Header)
	}
	f.emu.SetAPILatency(0)
	if r := f.accounts(t, "", tok); r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	f.emu.SetTokenLatency(50 * time.Millisecond)
	begin := time.Now()
	f.token(t)
	if time.Since(begin) < 50*time.Millisecond {
		t.Fatal("token latency not applied")
	}
}

func TestSetCredentials(t *testing.T) {
	f := start(t, nil)
	f.emu.SetCredentials("new-user", "new-pass")
	if r := f.authorize(t); r.status != http.StatusUnauthorized {
		t.Fatalf("old credentials: %d", r.status)
	}
	r := do(t, f.client, http.MethodGet, f.emu.AuthURL()+bankingcircle.AuthorizePath, basic("new-user", "new-pass"))
	if r.status != http.StatusOK {
		t.Fatalf("new credentials: %d", r.status)
	}
}

// TestMountedHandlers serves the handlers on listeners the caller owns.
func TestMountedHandlers(t *testing.T) {
	ca, _ := pki.NewCA("Root")
	srvCert, _ := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliCert, _ := ca.IssueClient("m2m")
	emu, err := bankingcircle.New(bankingcircle.Config{
		ServerCert: srvCert, ClientCAs: ca.CertPool(), Username: user, Password: pass,
	})
	if err != nil {
		t.Fatal(err)
	}
	auth := httptest.NewUnstartedServer(emu.AuthHandler())
	auth.TLS = emu.AuthTLSConfig()
	auth.StartTLS()
	defer auth.Close()
	api := httptest.NewUnstartedServer(emu.APIHandler())
	api.TLS = emu.APITLSConfig()
	api.StartTLS()
	defer api.Close()

	f := &fixture{ca: ca, cert: cliCert}
	c := f.clientWith(cliCert)
	r := do(t, c, http.MethodGet, auth.URL+bankingcircle.AuthorizePath, basic(user, pass))
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	tok := r.json(t)["access_token"].(string)
	if r := do(t, c, http.MethodGet, api.URL+bankingcircle.AccountsPath, "Bearer "+tok); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if st := emu.Stats(); st.Handshakes != 2 || st.AccountsServed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := emu.Close(); err != nil { // never started: a no-op
		t.Fatal(err)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := start(t, func(c *bankingcircle.Config) { c.TokenRequestsPerMinute = 1000 })
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: f.ca.CertPool(), Certificates: []tls.Certificate{*f.cert}},
		MaxIdleConnsPerHost: 8,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 16 {
		wg.Go(func() {
			for j := range 4 {
				r, err := c.Get(f.emu.AuthURL() + bankingcircle.AuthorizePath)
				if err != nil {
					errs <- err.Error()
					return
				}
				r.Body.Close()
				if i%4 == 0 && j == 0 {
					f.emu.RevokeTokens()
					f.emu.SetTokenTTL(time.Minute)
					_ = f.emu.Stats()
					_ = f.emu.IssuedTokens()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if st := f.emu.Stats(); st.TokenRequests != 64 || st.TokenUnauthorized != 64 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bankingcircle.Config
	}{
		{"no username", bankingcircle.Config{Password: "p"}},
		{"no password", bankingcircle.Config{Username: "u"}},
		{"negative TTL", bankingcircle.Config{Username: "u", Password: "p", TokenTTL: -time.Second}},
		{"negative throttle", bankingcircle.Config{Username: "u", Password: "p", TokenRequestsPerMinute: -1}},
		{"bad window", bankingcircle.Config{Username: "u", Password: "p", ThrottleWindow: 7}},
		{"bad allowlist", bankingcircle.Config{Username: "u", Password: "p", AllowedIPs: []string{"10.0.0.0/33"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := bankingcircle.New(tc.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	emu, err := bankingcircle.New(bankingcircle.Config{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err == nil {
		t.Fatal("Start without certificates succeeded")
	}
}

func TestMaxTokenRequestsInWindow(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(secs ...int) []time.Time {
		var out []time.Time
		for _, s := range secs {
			out = append(out, t0.Add(time.Duration(s)*time.Second))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		times []time.Time
		want  int
	}{
		{"none", nil, 0},
		{"one", at(5), 1},
		{"spread", at(0, 60, 120), 1},
		{"burst then one", at(0, 1, 2, 59), 4},
		{"unsorted", at(59, 0, 200, 2, 1), 4},
		{"sliding beats fixed", at(50, 55, 65, 70), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bankingcircle.MaxTokenRequestsInWindow(tc.times, time.Minute); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}
