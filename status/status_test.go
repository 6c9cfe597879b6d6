package status_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/status"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// source hands out tokens with a known value, or err.
type source struct {
	value string
	err   error
}

func (s *source) Fetch(context.Context, string) (*tokencache.Token, error) {
	if s.err != nil {
		return nil, s.err
	}
	return &tokencache.Token{Value: s.value, Type: "Bearer", Header: "Bearer " + s.value, Expiry: time.Now().Add(10 * time.Minute)}, nil
}
func (s *source) Host() string { return "auth.bank.example" }

type fixture struct {
	m      *metrics.Metrics
	r      *route.Route
	holder *certs.Holder
	ca     *pki.CA
	src    *source
	p      *status.Provider
	keyPEM []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := pki.NewCA("status test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient("status client")
	if err != nil {
		t.Fatal(err)
	}
	_, keyPEM, err := pki.EncodePEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	src := &source{value: "tok-" + strings.Repeat("s3cr3t", 4)}
	lim := tokencache.NewLimiter(tokencache.Budget{PerMinute: 6, Burst: 2})
	cache, err := tokencache.New(src, lim, tokencache.Options{Route: "bank", Skew: 30 * time.Second, MaxWait: time.Second,
		FetchTimeout: time.Second, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("https://user:pw@api.bank.example/v1?key=x")
	h := certs.NewHolder(cert)
	r := &route.Route{Name: "bank", Hosts: []string{"api.bank.example"}, Upstream: up, ClientCert: h, Tokens: cache, TokenKind: route.TokenBasicGet}
	r.AddCertificate("client", h, nil)
	p := &status.Provider{Routes: []*route.Route{r}, Gatherer: m.Registry(),
		CertSource: func(rt, kind string) string {
			if rt == "bank" && kind == "client" {
				return "pkcs12"
			}
			return ""
		},
		Ready: func() (bool, string) { return true, "degraded: vault degraded: vault kv secret/x failing" },
	}
	return &fixture{m: m, r: r, holder: h, ca: ca, src: src, p: p, keyPEM: keyPEM}
}

// TestCollect: the snapshot reports the certificate, the token, the budget
// as the provider counts it and the request counts /metrics has.
func TestCollect(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 3 {
		if _, _, err := f.r.Tokens.Get(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}
	f.m.Request("bank", 200, "", time.Millisecond)
	f.m.Request("bank", 200, "", time.Millisecond)
	f.m.Request("bank", 503, "token_throttled", 0)
	f.m.Request("other", 200, "", time.Millisecond)

	s := f.p.Collect(ctx)
	if len(s.Routes) != 1 {
		t.Fatalf("routes: %+v", s.Routes)
	}
	r := s.Routes[0]
	if r.Upstream != "https://api.bank.example/v1" {
		t.Errorf("upstream %q: user info or query shown", r.Upstream)
	}
	if s.Readiness != "degraded" || !s.Ready {
		t.Errorf("readiness %v %q", s.Ready, s.Readiness)
	}
	if !s.LastReload.Never || s.LastReload.Message != "never" {
		t.Errorf("last reload without a reloader: %+v", s.LastReload)
	}
	if len(r.Certificates) != 1 {
		t.Fatalf("certificates: %+v", r.Certificates)
	}
	c := r.Certificates[0]
	leaf := f.holder.Load().Leaf
	if c.Kind != "client" || c.Source != "pkcs12" || !c.Loaded || c.Subject != leaf.Subject.String() ||
		c.Issuer != leaf.Issuer.String() || !c.NotAfter.Equal(leaf.NotAfter) || c.Rotations != 0 || c.StoredAt == nil {
		t.Errorf("certificate: %+v", c)
	}
	if d := time.Until(leaf.NotAfter).Seconds() - c.ExpiresInSeconds; d < -5 || d > 5 {
		t.Errorf("expires in %v s, want %v", c.ExpiresInSeconds, time.Until(leaf.NotAfter).Seconds())
	}
	tk := r.Token
	if tk == nil || tk.Kind != "basic_get" || !tk.Cached || tk.ExpiresAt == nil || tk.LastFetch == nil ||
		tk.LastResult != "ok" || tk.LastError != "" || tk.Hits != 2 || tk.Fetches["ok"] != 1 {
		t.Errorf("token: %+v", tk)
	}
	b := r.Budget
	if b == nil || b.AuthHost != "auth.bank.example" || b.Used != 1 || b.Limit != 6 || !b.FreeNow || b.Shared || b.WindowSeconds != 62 {
		t.Errorf("budget: %+v", b)
	}
	rq := r.Requests
	if rq.Total != 3 || rq.Errors != 1 || rq.ByStatus["200"] != 2 || rq.ByStatus["503"] != 1 || rq.ByError["token_throttled"] != 1 {
		t.Errorf("requests: %+v", rq)
	}

	// A rotation shows.
	next, err := f.ca.IssueClient("status client 2")
	if err != nil {
		t.Fatal(err)
	}
	f.holder.Store(next)
	if c := f.p.Collect(ctx).Routes[0].Certificates[0]; c.Rotations != 1 || !strings.Contains(c.Subject, "status client 2") {
		t.Errorf("after a rotation: %+v", c)
	}
}

// TestCollectBudgetSpent: with the budget spent, the next free slot is when
// the oldest request stops counting at the provider.
func TestCollectBudgetSpent(t *testing.T) {
	f := newFixture(t)
	lim := tokencache.NewLimiter(tokencache.Budget{PerMinute: 1, Burst: 1})
	cache, err := tokencache.New(f.src, lim, tokencache.Options{Route: "bank", Skew: 30 * time.Second, MaxWait: time.Second, FetchTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.r.Tokens = cache
	if _, _, err := cache.Get(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	b := f.p.Collect(context.Background()).Routes[0].Budget
	if b.Used != 1 || b.Limit != 1 || b.FreeNow || b.NextFree == nil {
		t.Fatalf("budget: %+v", b)
	}
	if want := done.Add(62 * time.Second); b.NextFree.Before(want.Add(-5*time.Second)) || b.NextFree.After(want.Add(time.Second)) {
		t.Errorf("next free %v, want about %v", b.NextFree, want)
	}
}

// TestCollectLastError: a failed fetch shows its result and message; a
// customer's name never shows.
func TestCollectLastError(t *testing.T) {
	f := newFixture(t)
	f.src.err = &tokencache.FetchError{Status: 401, Reason: "credentials rejected"}
	_, _, _ = f.r.Tokens.Get(context.Background(), "")
	tk := f.p.Collect(context.Background()).Routes[0].Token
	if tk.Cached || tk.LastResult != "rejected" || !strings.Contains(tk.LastError, "HTTP 401") || tk.Fetches["rejected"] != 1 {
		t.Errorf("token after a rejected fetch: %+v", tk)
	}

	f.src.err = &tokencache.ConsentRequiredError{Subject: "customer-4711", Cause: "the bank rejected the refresh token"}
	_, _, _ = f.r.Tokens.Get(context.Background(), "customer-4711")
	tk = f.p.Collect(context.Background()).Routes[0].Token
	if tk.LastResult != "consent_required" || strings.Contains(tk.LastError, "4711") || !strings.Contains(tk.LastError, "rejected the refresh token") {
		t.Errorf("token after a consent error: %+v", tk)
	}
}

// TestCollectSources: the consent census, the dependencies and the last
// reload as their accessors report them.
func TestCollectSources(t *testing.T) {
	f := newFixture(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.p.LastReload = func() (time.Time, bool, string) { return at, false, "routes[0].token.url: not a URL" }
	f.p.Consents = true
	f.p.Census = func() (status.Census, bool) {
		return status.Census{At: at, Routes: []string{"psd2", "quiet"},
			ByState:  map[string]map[string]int{"psd2": {"active": 4, "refreshing": 1, "invalid": 2}},
			Expiring: map[string]int{"psd2": 3}, Err: errors.New("census timed out")}, true
	}
	f.p.Dependencies = []status.NamedHealth{{Name: "redis", Health: func() status.Health {
		return status.Health{Since: at, Error: "dial tcp 127.0.0.1:6379: connection refused"}
	}}}
	s := f.p.Collect(context.Background())
	if s.LastReload.Never || s.LastReload.OK || !s.LastReload.At.Equal(at) || s.LastReload.Message == "" {
		t.Errorf("last reload: %+v", s.LastReload)
	}
	want := []status.ConsentCounts{{Route: "psd2", Active: 4, Refreshing: 1, Invalid: 2, Expiring: 3}, {Route: "quiet"}}
	if s.Consents == nil || s.Consents.Error != "census timed out" || len(s.Consents.Routes) != 2 ||
		s.Consents.Routes[0] != want[0] || s.Consents.Routes[1] != want[1] {
		t.Errorf("consents: %+v", s.Consents)
	}
	if len(s.Dependencies) != 1 || s.Dependencies[0].Up || !s.Dependencies[0].Since.Equal(at) {
		t.Errorf("dependencies: %+v", s.Dependencies)
	}
}

// TestHandler: /status.json is the snapshot and /status renders it; neither
// holds the token, the key or the upstream's user info.
func TestHandler(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.r.Tokens.Get(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	f.m.Request("bank", 200, "", time.Millisecond)
	srv := httptest.NewServer(status.Handler(f.p))
	defer srv.Close()
	get := func(path string) (string, http.Header) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		return string(body), resp.Header
	}
	js, h := get("/status.json")
	if h.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", h.Get("Content-Type"))
	}
	var s status.Snapshot
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Routes) != 1 || s.Routes[0].Requests.Total != 1 || !s.Routes[0].Token.Cached {
		t.Errorf("json: %s", js)
	}
	html, h := get("/status")
	if !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("headers %v", h)
	}
	for _, want := range []string{`data-route="bank"`, `data-field="requests-total">1<`, `data-field="token-cached">yes<`, "1 / 6", "pkcs12", "never"} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	keyBody := strings.Join(strings.Split(string(f.keyPEM), "\n")[1:3], "")
	for _, secret := range []string{f.src.value, keyBody, "user:pw", "key=x", "vault kv secret"} {
		for name, body := range map[string]string{"json": js, "html": html} {
			if strings.Contains(body, secret) {
				t.Errorf("%s holds %q", name, secret)
			}
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {12 * time.Second, "12s"}, {5*time.Minute + 2*time.Second, "5m 2s"},
		{3*24*time.Hour + 4*time.Hour + 5*time.Minute, "3d 4h"}, {-90 * time.Second, "-1m 30s"}, {2 * time.Hour, "2h 0m"},
	} {
		if got := status.Duration(tc.d); got != tc.want {
			t.Errorf("Duration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
