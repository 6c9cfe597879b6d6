package oauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// allEvents wants every consent event.
func allEvents() *Events {
	ev := &Events{Types: map[consentstore.EventType]bool{}}
	for _, t := range consentstore.EventTypes {
		ev.Types[t] = true
	}
	return ev
}

// eventReceiver is the app's webhook endpoint: it verifies each delivery's
// signature and keeps the events by id.
type eventReceiver struct {
	t      testing.TB
	secret string
	mu     sync.Mutex
	byID   map[string]consentstore.Event
	bodies []string
}

func newEventReceiver(t testing.TB, key string) (*eventReceiver, *httptest.Server) {
	r := &eventReceiver{t: t, secret: key, byID: map[string]consentstore.Event{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *eventReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := webhook.Verify([]byte(r.secret), req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		r.t.Errorf("delivery %s: %v", req.Header.Get(webhook.HeaderEventID), err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var e consentstore.Event
	if err := json.Unmarshal(body, &e); err != nil || e.ID != req.Header.Get(webhook.HeaderEventID) {
		r.t.Errorf("delivery body %q: %v", body, err)
	}
	r.mu.Lock()
	r.byID[e.ID] = e
	r.bodies = append(r.bodies, string(body))
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// summary lists the received events as "type subject cause", sorted.
func (r *eventReceiver) summary() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.byID {
		out = append(out, strings.TrimSpace(string(e.Type)+" "+e.Owner+"/"+e.Subject+" "+e.Cause))
	}
	sort.Strings(out)
	return out
}

// TestConsentEvents produces each consent event through the real flows
// against the STET emulator — a code exchange, a refresh, the expiry
// census within the lead time, invalid_grant after 90 days, a refresh token
// expired unseen, a revocation — on bbolt and PostgreSQL, and delivers them
// to a receiver over HTTP, signed, with no token in any body.
func TestConsentEvents(t *testing.T) {
	for _, kind := range []string{"bolt", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var pg *pgtest.Server
			if kind == "postgres" {
				pg = pgtest.Start(t)
			}
			store := storeOpener(t, nil, pg)()
			t.Cleanup(func() { _ = store.Close() })
			e := newEnv(t, false)
			a, err := NewAuthCode(AuthCodeConfig{Endpoint: e.endpoint("bpce", e.stetAuth()), AuthorizeURL: e.url("authorize"),
				RevocationURL: e.url("revoke"), Scopes: []string{"aisp"}, RefreshTTL: 90 * 24 * time.Hour,
				Store: store, Events: allEvents()})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			e.consent(t, a, "app-a", "marc") // consent.active
			e.consent(t, a, "app-a", "paul") // consent.active
			e.consent(t, a, "app-b", "lena") // consent.active
			if err := a.Revoke(ctx, "app-b", "lena"); err != nil {
				t.Fatal(err) // consent.deleted, revoked
			}
			e.clk.Add(61 * time.Minute)
			if _, err := a.Fetch(ctx, SubjectKey("app-a", "marc")); err != nil {
				t.Fatal(err) // consent.refreshed
			}
			within := 7 * 24 * time.Hour
			e.clk.Add(84 * 24 * time.Hour)
			for range 2 { // a second census adds nothing
				if _, _, err := AppendExpiryEvents(ctx, store, a.cfg.Events, e.clk.Now(), within); err != nil {
					t.Fatal(err) // consent.expiring for marc and paul
				}
			}
			e.clk.Add(7 * 24 * time.Hour)
			_, err = a.Fetch(ctx, SubjectKey("app-a", "marc")) // consent.invalid, invalid_grant
			_ = asConsentRequired(t, err)
			if n, _, err := AppendExpiryEvents(ctx, store, a.cfg.Events, e.clk.Now(), within); err != nil || n != 1 {
				t.Fatalf("census after paul's expiry: %d new events, %v; want 1", n, err) // consent.invalid, expired, for paul
			}

			rcv, srv := newEventReceiver(t, "whsec-test")
			d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(store), Poll: 10 * time.Millisecond,
				Hooks: []webhook.Hook{{URL: srv.URL, Secret: secret.Static(secret.New("whsec-test"), "test"), Events: a.cfg.Events.Types}}})
			if err != nil {
				t.Fatal(err)
			}
			for {
				n, err := d.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			want := []string{
				"consent.active app-a/marc", "consent.active app-a/paul", "consent.active app-b/lena",
				"consent.deleted app-b/lena revoked",
				"consent.expiring app-a/marc", "consent.expiring app-a/paul",
				"consent.invalid app-a/marc invalid_grant", "consent.invalid app-a/paul expired",
				"consent.refreshed app-a/marc",
			}
			if got := rcv.summary(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("received events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for _, b := range rcv.bodies {
				e.noSecrets(t, "an event body", b)
			}
			if n, _, err := consentstore.OutboxOf(store).Backlog(ctx); err != nil || n != 0 {
				t.Fatalf("backlog after delivery: %d, %v", n, err)
			}
		})
	}
}

// TestExpiryCensusOnceAcrossReplicas: three replicas (three stores over
// one PostgreSQL database; three goroutines over one bbolt store) take the
// expiry census at once, twice: one consent.expiring per consent.
func TestExpiryCensusOnceAcrossReplicas(t *testing.T) {
	for _, kind := range []string{"bolt", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var pg *pgtest.Server
			if kind == "postgres" {
				pg = pgtest.Start(t)
			}
			open := storeOpener(t, nil, pg)
			first := open()
			t.Cleanup(func() { _ = first.Close() })
			replicas := []consentstore.Store{first, first, first}
			if kind == "postgres" {
				for i := 1; i < 3; i++ {
					s := open()
					t.Cleanup(func() { _ = s.Close() })
					replicas[i] = s
				}
			}
			e := newEnv(t, false)
			a := e.authCode(t, first, nil, nil)
			const consents = 12
			for i := range consents {
				e.consent(t, a, "app", "c"+string(rune('a'+i)))
			}
			e.clk.Add(85 * 24 * time.Hour)
			ctx := context.Background()
			ev := &Events{Types: map[consentstore.EventType]bool{consentstore.EventExpiring: true}}
			var wg sync.WaitGroup
			var mu sync.Mutex
			total, ran := 0, 0
			for round := range 2 {
				for _, s := range replicas {
					wg.Go(func() {
						n, r, err := AppendExpiryEvents(ctx, s, ev, e.clk.Now(), 7*24*time.Hour)
						if err != nil {
							t.Errorf("round %d: %v", round, err)
						}
						mu.Lock()
						total += n
						if r {
							ran++
						}
						mu.Unlock()
					})
				}
				wg.Wait()
			}
			if total != consents {
				t.Fatalf("%d consent.expiring events appended across 3 replicas and 2 rounds; want %d (one per consent)", total, consents)
			}
			items, err := consentstore.OutboxOf(first).Claim(ctx, "check", e.clk.Now(), time.Minute, 100)
			if err != nil || len(items) != consents {
				t.Fatalf("outbox holds %d events, %v; want %d", len(items), err, consents)
			}
			t.Logf("census runs that held the lock: %d of 6", ran)
		})
	}
}
