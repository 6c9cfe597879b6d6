package oauth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

func TestIsIdle(t *testing.T) {
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	const keep = 24 * time.Hour
	for _, tc := range []struct {
		name string
		c    consentstore.Consent
		want bool
	}{
		{"created long ago, never refreshed", consentstore.Consent{State: consentstore.Active, Created: now.Add(-25 * time.Hour), AccessExpiry: now.Add(-24 * time.Hour)}, true},
		{"refreshed long ago", consentstore.Consent{State: consentstore.Active, Created: now.Add(-99 * time.Hour), Refreshed: now.Add(-24 * time.Hour), AccessExpiry: now.Add(-23 * time.Hour)}, true},
		{"refreshed lately", consentstore.Consent{State: consentstore.Active, Created: now.Add(-99 * time.Hour), Refreshed: now.Add(-23 * time.Hour), AccessExpiry: now.Add(-22 * time.Hour)}, false},
		{"created lately", consentstore.Consent{State: consentstore.Active, Created: now.Add(-time.Hour)}, false},
		{"token still valid", consentstore.Consent{State: consentstore.Active, Created: now.Add(-99 * time.Hour), AccessExpiry: now.Add(time.Minute)}, false},
		{"invalid", consentstore.Consent{State: consentstore.Invalid, Created: now.Add(-99 * time.Hour)}, false},
		{"being refreshed", consentstore.Consent{State: consentstore.Refreshing, Created: now.Add(-99 * time.Hour)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsIdle(&tc.c, keep, now); got != tc.want {
				t.Fatalf("IsIdle = %v, want %v", got, tc.want)
			}
		})
	}
}

// Three replicas sharing one Postgres store run a keep-alive pass at once
// over consents that went unused for keep_alive: each consent is refreshed
// once at the bank, and the consents used meanwhile are left alone.
func TestKeepAliveOnceAcrossReplicas(t *testing.T) {
	e := newEnv(t, true)
	pg := pgtest.Start(t)
	cfg := consentstore.PostgresConfig{Host: pg.Host(), Port: pg.Port(), Database: pg.NewDatabase(t),
		User: pgtest.User, Password: pg.Password(), TLSMode: "disable", MaxConns: 8}
	var replicas []*AuthCode
	for range 3 {
		s, err := consentstore.OpenPostgres(context.Background(), cfg, testRing(t), true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		a, err := NewAuthCode(AuthCodeConfig{Endpoint: e.endpoint("bpce", e.stetAuth()), AuthorizeURL: e.url("authorize"),
			Scopes: []string{"aisp"}, PKCE: true, RefreshTTL: 90 * 24 * time.Hour, KeepAlive: 24 * time.Hour, Store: s})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, a)
	}
	subjects := []string{"anna", "marc", "lena", "ugo"}
	for _, s := range subjects {
		e.consent(t, replicas[0], "app-a", s)
	}
	ctx := context.Background()
	if idle, err := replicas[1].Idle(ctx); err != nil || len(idle) != 0 {
		t.Fatalf("fresh consents: idle %v %v; want none", idle, err)
	}
	e.clk.Add(20 * time.Hour)
	if _, err := replicas[2].Fetch(ctx, SubjectKey("app-a", "ugo")); err != nil { // ugo is used at 20 h
		t.Fatal(err)
	}
	e.clk.Add(5 * time.Hour)
	before := e.h.Refreshes()
	var wg sync.WaitGroup
	for _, a := range replicas {
		wg.Go(func() {
			idle, err := a.Idle(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			for _, k := range idle { // anna, marc and lena, those another replica did not refresh yet; never ugo
				if k.Subject == "ugo" {
					t.Errorf("idle %v holds ugo, used 5 h ago", idle)
				}
				if _, err := a.Fetch(ctx, SubjectKey(k.Owner, k.Subject)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if got := e.h.Refreshes() - before; got != 3 {
		t.Fatalf("the bank saw %d refreshes from 3 replicas' keep-alive passes; want 3 (one per idle consent)", got)
	}
	for _, s := range subjects[:3] {
		c, err := replicas[0].cfg.Store.Get(ctx, consentstore.Key{Route: "bpce", Owner: "app-a", Subject: s})
		if err != nil || c.Refreshes != 1 || !c.Refreshed.Equal(e.clk.Now()) {
			t.Fatalf("%s after the keep-alive: %+v %v", s, c, err)
		}
	}
	if idle, err := replicas[0].Idle(ctx); err != nil || len(idle) != 0 {
		t.Fatalf("after the pass: idle %v %v; want none", idle, err)
	}
}

// The record of tokens handed out keeps only tokens that have not expired:
// memory follows the customers served within a token's lifetime.
func TestHandedOutForgetsExpiredTokens(t *testing.T) {
	e := newEnv(t, false)
	store, _ := tempBolt(t)
	a := e.authCode(t, store, nil, nil)
	ctx := context.Background()
	for _, s := range []string{"anna", "marc", "lena"} {
		e.consent(t, a, "app-a", s)
		e.clk.Add(61 * time.Minute)
		if _, err := a.Fetch(ctx, SubjectKey("app-a", s)); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.handedCount(); n != 1 { // each fetch an hour after the last swept the expired ones
		t.Fatalf("%d subjects recorded after three fetches an hour apart; want 1 (the others' tokens expired)", n)
	}
	if _, err := a.Fetch(ctx, SubjectKey("app-a", "lena")); err != nil || e.h.Refreshes() != 3 {
		t.Fatalf("lena's valid token again: %v, %d refreshes; want no new refresh", err, e.h.Refreshes())
	}
}
