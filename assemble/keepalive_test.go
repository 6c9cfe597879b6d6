package assemble

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// A keep-alive pass refreshes, through the route's token cache, the
// consents that went unused for keep_alive, and counts them; a consent the
// bank no longer honours is counted as consent_required.
func TestKeepAlivePass(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	bank := stet.New(stet.Config{Now: clk.Now, OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{
		"tpp": {Method: "client_secret_post", Secret: "s3cret-post"}}}})
	ca, err := pki.NewCA("keep-alive test CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.IssueServer(nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ca.IssueClient("tpp")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(bank)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ring, err := consentstore.SingleKey(make([]byte, consentstore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	store, err := consentstore.OpenBolt(filepath.Join(t.TempDir(), "c.db"), ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	u := srv.URL + "/stet/psd2/oauth/"
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), Certificates: []tls.Certificate{*cc}}}}
	ac, err := oauth.NewAuthCode(oauth.AuthCodeConfig{
		Endpoint: oauth.Endpoint{Route: "bpce", TokenURL: u + "token", Client: client, Now: clk.Now,
			Auth: oauth.ClientAuth{Method: oauth.ClientSecretPost, ClientID: "tpp", Secret: secret.Static(secret.New("s3cret-post"), "test")}},
		AuthorizeURL: u + "authorize", Scopes: []string{"aisp"}, KeepAlive: 24 * time.Hour, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := tokencache.New(ac, tokencache.NewLimiter(tokencache.Budget{PerMinute: 600, Burst: 10}),
		tokencache.Options{Route: "bpce", Skew: 30 * time.Second, MaxWait: 5 * time.Second, FetchTimeout: 5 * time.Second, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	for _, psu := range []string{"anna", "marc"} {
		resp, err := client.Get(ac.AuthorizeURL("st", "", "https://tp.example/v1/callback") + "&psu=" + psu)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if _, err := ac.Exchange(context.Background(), "", psu, loc.Query().Get("code"), "", "https://tp.example/v1/callback"); err != nil {
			t.Fatal(err)
		}
	}
	refreshes := func() int { // refresh requests the bank received, answered or refused
		n := 0
		for _, f := range bank.TokenRequests() {
			if f.Get("grant_type") == "refresh_token" {
				n++
			}
		}
		return n
	}
	m := metrics.New()
	om := m.OAuth()
	routes := []*route.Route{{Name: "bpce", Tokens: cache}}
	jobs := keepAliveJobs(routes, []*oauth.AuthCode{ac}, zap.NewNop(), om)
	if len(jobs) != 1 {
		t.Fatalf("%d keep-alive jobs; want 1", len(jobs))
	}
	keepAlivePass(context.Background(), ac, cache, zap.NewNop(), om)
	if n := refreshes(); n != 0 {
		t.Fatalf("%d refreshes of fresh consents", n)
	}
	clk.Add(25 * time.Hour)
	// The bank dropped marc's idle refresh token.
	mc, err := store.Get(context.Background(), consentstore.Key{Route: "bpce", Subject: "marc"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.PostForm(u+"revoke", url.Values{"token": {mc.RefreshToken.Reveal()}, "client_id": {"tpp"}, "client_secret": {"s3cret-post"}})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("revoking marc's refresh token: %v %v", resp, err)
	}
	resp.Body.Close()
	keepAlivePass(context.Background(), ac, cache, zap.NewNop(), om)
	if n := refreshes(); n != 2 {
		t.Fatalf("%d refreshes at the bank after 25 h unused; want 2 (anna's kept alive, marc's refused)", n)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b := rec.Body
	for _, want := range []string{`tokenproxy_consent_keepalive_total{result="ok",route="bpce"} 1`, `tokenproxy_consent_keepalive_total{result="consent_required",route="bpce"} 1`} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, b.String())
		}
	}
	keepAlivePass(context.Background(), ac, cache, zap.NewNop(), om)
	if n := refreshes(); n != 2 {
		t.Fatalf("a second pass refreshed again (%d refreshes); anna was refreshed, marc is invalid", n)
	}
}

func TestKeepAliveEvery(t *testing.T) {
	for _, tc := range []struct{ keep, want time.Duration }{
		{10 * time.Minute, 2*time.Minute + 30*time.Second}, {24 * time.Hour, time.Hour}, {2 * time.Minute, time.Minute},
	} {
		if got := keepAliveEvery(tc.keep); got != tc.want {
			t.Errorf("keepAliveEvery(%v) = %v, want %v", tc.keep, got, tc.want)
		}
	}
}
