package oauth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

func asConsentRequired(t *testing.T, err error) *tokencache.ConsentRequiredError {
	t.Helper()
	var cr *tokencache.ConsentRequiredError
	if !errors.As(err, &cr) {
		t.Fatalf("err = %v, want ConsentRequiredError", err)
	}
	return cr
}

func TestAuthCodeRefresh(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		t.Run(map[bool]string{false: "BPCE", true: "rotating"}[rotate], func(t *testing.T) {
			e := newEnv(t, rotate)
			store, _ := tempBolt(t)
			obs := &countObserver{}
			a := e.authCode(t, store, obs, nil)
			e.consent(t, a, "app-a", "marc")
			ctx := context.Background()
			for i := 1; i <= 3; i++ {
				e.clk.Add(61 * time.Minute)
				tok, err := a.Fetch(ctx, SubjectKey("app-a", "marc"))
				if err != nil {
					t.Fatalf("refresh %d: %v", i, err)
				}
				if psu, ok := e.h.CustomerOf(tok.Header); !ok || psu != "marc" {
					t.Fatalf("refresh %d: token is not marc's valid token", i)
				}
				if e.h.Refreshes() != i || obs.refreshed.Load() != int64(i) {
					t.Fatalf("refreshes at the bank %d, observed %d; want %d", e.h.Refreshes(), obs.refreshed.Load(), i)
				}
			}
			c, err := store.Get(ctx, consentstore.Key{Route: "bpce", Owner: "app-a", Subject: "marc"})
			if err != nil || c.State != consentstore.Active || c.Refreshes != 3 || c.Scopes[0] != "aisp" {
				t.Fatalf("stored consent %+v, %v", c, err)
			}
			for _, f := range e.h.TokenRequests()[1:] {
				if f.Get("grant_type") != "refresh_token" || f.Get("client_id") != stetClientID || f.Has("client_secret") {
					t.Fatalf("refresh request form has keys %v", keys(f))
				}
			}
		})
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestAuthCodeConsentRequired(t *testing.T) {
	e := newEnv(t, true)
	store, _ := tempBolt(t)
	obs := &countObserver{}
	a := e.authCode(t, store, obs, nil)
	ctx := context.Background()

	cr := asConsentRequired(t, func() error { _, err := a.Fetch(ctx, "nobody"); return err }())
	if cr.Subject != "nobody" || !strings.Contains(cr.Cause, "no consent") {
		t.Fatalf("unknown subject: %+v", cr)
	}
	e.consent(t, a, "app-a", "marc")
	if _, err := a.Fetch(ctx, SubjectKey("app-b", "marc")); err == nil {
		t.Fatal("caller app-b got app-a's subject's token")
	}
	e.clk.Add(91 * 24 * time.Hour)
	_, err := a.Fetch(ctx, SubjectKey("app-a", "marc"))
	cr = asConsentRequired(t, err)
	if !strings.Contains(cr.Cause, "invalid_grant") || obs.invalid.Load() != 1 {
		t.Fatalf("after 90 days: %+v, invalid grants observed %d", cr, obs.invalid.Load())
	}
	e.noSecrets(t, "the error", err.Error())
	before := len(e.h.TokenRequests())
	_, err = a.Fetch(ctx, SubjectKey("app-a", "marc"))
	_ = asConsentRequired(t, err)
	if len(e.h.TokenRequests()) != before {
		t.Fatal("an invalid consent was sent to the bank again")
	}
	// A new consent replaces the invalid one.
	e.consent(t, a, "app-a", "marc")
	e.clk.Add(2 * time.Hour)
	if _, err := a.Fetch(ctx, SubjectKey("app-a", "marc")); err != nil {
		t.Fatalf("after a new consent: %v", err)
	}
}

func TestAuthCodeConcurrentRefreshOneSubject(t *testing.T) {
	for _, tc := range []struct {
		name      string
		instances int
		store     func(t *testing.T) consentstore.Store
	}{
		{"bolt/one process", 1, boltStore},
		{"bolt/two processes sharing the store", 2, boltStore},
		{"vault/two processes sharing the store", 2, vaultStore},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := tc.store(t)
			e := newEnv(t, true)
			srcs := []*AuthCode{e.authCode(t, store, nil, nil)}
			if tc.instances == 2 {
				srcs = append(srcs, e.authCode(t, store, nil, nil))
			}
			e.consent(t, srcs[0], "", "marc")
			e.clk.Add(2 * time.Hour)
			var wg sync.WaitGroup
			toks := make([]*tokencache.Token, 2)
			errs := make([]error, 2)
			for i := range 2 {
				wg.Go(func() { toks[i], errs[i] = srcs[i%len(srcs)].Fetch(context.Background(), "marc") })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("fetch %d: %v", i, err)
				}
			}
			if e.h.Refreshes() != 1 || toks[0].Value != toks[1].Value {
				t.Fatalf("%d refreshes at the bank, same token %v; want 1 refresh shared", e.h.Refreshes(), toks[0].Value == toks[1].Value)
			}
			if _, ok := e.h.CustomerOf(toks[0].Header); !ok {
				t.Fatal("the shared token is not valid at the bank")
			}
		})
	}
}

func TestAuthCodeRevoke(t *testing.T) {
	e := newEnv(t, false)
	store, _ := tempBolt(t)
	a := e.authCode(t, store, nil, nil)
	e.consent(t, a, "", "marc")
	ctx := context.Background()
	c, err := store.Get(ctx, consentstore.Key{Route: "bpce", Subject: "marc"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, "", "marc"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.h.CustomerOf("Bearer " + c.AccessToken.Reveal()); ok {
		t.Fatal("the bank still accepts the access token after revocation")
	}
	_, err = a.Fetch(ctx, "marc")
	_ = asConsentRequired(t, err)
}

func TestAuthCodeProbe(t *testing.T) {
	e := newEnv(t, false)
	store, _ := tempBolt(t)
	if err := e.authCode(t, store, nil, nil).Probe(context.Background()); err != nil {
		t.Fatalf("probe of a good route: %v", err)
	}
	bad, err := NewAuthCode(AuthCodeConfig{Endpoint: e.endpoint("bpce-bad", ClientAuth{Method: TLSClientAuth, ClientID: "someone-else"}),
		AuthorizeURL: e.url("authorize"), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), "route bpce-bad") || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("probe with a wrong client: %v", err)
	}
}

// TestAuthCodeRestartReusesStoredToken: a restarted process uses the stored,
// still valid access token instead of refreshing (at BPCE a refresh revokes
// it); asked again for the same token (the cache invalidated it), it refreshes.
func TestAuthCodeRestartReusesStoredToken(t *testing.T) {
	e := newEnv(t, true)
	store, _ := tempBolt(t)
	ctx := context.Background()
	a := e.authCode(t, store, nil, nil)
	e.consent(t, a, "", "marc")
	e.clk.Add(2 * time.Hour)
	first, err := a.Fetch(ctx, "marc")
	if err != nil || e.h.Refreshes() != 1 {
		t.Fatalf("first fetch: %v, %d refreshes", err, e.h.Refreshes())
	}
	e.clk.Add(10 * time.Minute)
	restarted := e.authCode(t, store, nil, nil)
	again, err := restarted.Fetch(ctx, "marc")
	if err != nil || again.Value != first.Value || e.h.Refreshes() != 1 {
		t.Fatalf("after restart: %v, same token %v, %d refreshes; want the stored token and no refresh", err, again.Value == first.Value, e.h.Refreshes())
	}
	fresh, err := restarted.Fetch(ctx, "marc")
	if err != nil || fresh.Value == first.Value || e.h.Refreshes() != 2 {
		t.Fatalf("asked again: %v, %d refreshes; want a refresh", err, e.h.Refreshes())
	}
	if _, ok := e.h.CustomerOf(fresh.Header); !ok {
		t.Fatal("the refreshed token is not valid at the bank")
	}
}

// A token that lives under 30 s is not refreshed by the first request after
// the consent (or after a restart) while three quarters of its life are
// left: the 30 s margin is capped at a quarter of the lifetime, as the
// cache's skew is.
func TestAuthCodeShortLivedTokenNotRefreshedWhileFresh(t *testing.T) {
	for _, tc := range []struct {
		name    string
		age     time.Duration
		refresh bool
	}{
		{"first request after the consent", 0, false},
		{"within three quarters of its life", 14 * time.Second, false},
		{"within a quarter of its expiry", 16 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, true)
			e.h.SetTTL(20*time.Second, 90*24*time.Hour)
			store, _ := tempBolt(t)
			e.consent(t, e.authCode(t, store, nil, nil), "", "marc")
			c, err := store.Get(context.Background(), consentstore.Key{Route: "bpce", Subject: "marc"})
			if err != nil {
				t.Fatal(err)
			}
			e.clk.Add(tc.age)
			tok, err := e.authCode(t, store, nil, nil).Fetch(context.Background(), "marc") // a new instance: nothing handed out yet
			if err != nil {
				t.Fatal(err)
			}
			refreshed := e.h.Refreshes() == 1
			if refreshed != tc.refresh || (tok.Value == c.AccessToken.Reveal()) == tc.refresh {
				t.Fatalf("a 20 s token %v old: refreshed %v (bank refreshes %d), want %v", tc.age, refreshed, e.h.Refreshes(), tc.refresh)
			}
			if !tc.refresh && !tok.Issued.Equal(c.Refreshed) {
				t.Fatalf("token issued %v, want the consent's refresh time %v", tok.Issued, c.Refreshed)
			}
		})
	}
}
