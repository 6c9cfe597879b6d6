package proxy_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/proxy"
)

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// psu is the bank customer whose token the upstream request carried.
func psu(a answer) string { return a.header.Get("X-Test-Psu") }

// The whole flow through the real server built from YAML: consent start,
// scripted login at the bank, tokenproxy's callback, then app requests that
// name the customer get that customer's accounts; the app never sees a
// code or a token; two customers never share a token; an unknown customer
// and a missing subject get tokenproxy's own errors.
func TestOAuthConsentEndToEnd(t *testing.T) {
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	app.consent(b, "alice", "marc")
	app.consent(b, "bob", "sophie")

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			subject, want := "alice", "marc"
			if i%2 == 1 {
				subject, want = "bob", "sophie"
			}
			a := app.account(subject)
			if a.status != http.StatusOK || psu(a) != want || !strings.Contains(string(a.body), "accounts") {
				t.Errorf("%s: %d psu %q (want %q) %.200s", subject, a.status, psu(a), want, a.body)
			}
		})
	}
	wg.Wait()

	if a := app.account("carol"); a.status != http.StatusUnauthorized || errorCode(t, a) != proxy.CodeConsentRequired ||
		!strings.Contains(string(a.body), "carol") || !strings.Contains(string(a.body), "POST /v1/routes/bpce/consents/carol") {
		t.Fatalf("unknown subject: %d %s", a.status, a.body)
	}
	if a := app.account(""); a.status != http.StatusBadRequest || errorCode(t, a) != proxy.CodeSubjectRequired {
		t.Fatalf("no subject: %d %s", a.status, a.body)
	}
	if a := app.account("a/b"); a.status != http.StatusBadRequest || errorCode(t, a) != proxy.CodeBadSubject {
		t.Fatalf("bad subject: %d %s", a.status, a.body)
	}
	for _, r := range b.emu.Received() {
		if r.Header.Get("Tokenproxy-Subject") != "" {
			t.Fatal("the subject header reached the bank")
		}
	}
	// The consent API lists both, with expiries and never a token.
	ans := app.api("GET", "/v1/routes/bpce/consents", nil)
	var list struct {
		Consents []struct{ Subject, Status string } `json:"consents"`
	}
	if ans.status != http.StatusOK || json.Unmarshal(ans.body, &list) != nil || len(list.Consents) != 2 {
		t.Fatalf("list: %d %s", ans.status, ans.body)
	}
	// Deleting bob revokes at the bank and drops the cached token at once.
	if ans := app.api("DELETE", "/v1/routes/bpce/consents/bob", nil); ans.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", ans.status, ans.body)
	}
	if a := app.account("bob"); a.status != http.StatusUnauthorized || errorCode(t, a) != proxy.CodeConsentRequired {
		t.Fatalf("deleted subject: %d %s", a.status, a.body)
	}
	if a := app.account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("alice after bob's deletion: %d %s", a.status, a.body)
	}
	app.assertNoSecrets(b)
	if got := x.metric("tokenproxy_consents_stored_total"); got != 2 {
		t.Fatalf("consents stored: %v", got)
	}
}

// 500 concurrent requests for one customer whose access token expired make
// exactly one refresh at the bank; every request is served with the new token.
func TestOAuthExpiredTokenOneRefresh(t *testing.T) {
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	b.emu.SetTTL(time.Second, 90*24*time.Hour)
	app.consent(b, "alice", "marc")
	b.emu.SetTTL(time.Hour, 90*24*time.Hour)
	expired := time.Now().Add(1100 * time.Millisecond)
	time.Sleep(time.Until(expired)) // the consent's access token is now past its expiry
	before := b.emu.Refreshes()
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 500 {
		wg.Go(func() {
			a := app.account("alice")
			mu.Lock()
			statuses[a.status]++
			mu.Unlock()
			if a.status == http.StatusOK && psu(a) != "marc" {
				t.Errorf("psu %q", psu(a))
			}
		})
	}
	wg.Wait()
	if n := b.emu.Refreshes() - before; n != 1 || statuses[http.StatusOK] != 500 {
		t.Fatalf("refreshes at the bank: %d, statuses %v; want exactly 1 refresh and 500 × 200", n, statuses)
	}
	t.Logf("500 concurrent requests, expired token: %d refresh, statuses %v", b.emu.Refreshes()-before, statuses)
	if got := x.metric("tokenproxy_consent_refreshes_total"); got != 1 {
		t.Fatalf("refresh counter %v", got)
	}
	app.assertNoSecrets(b)
}

// Rotating refresh tokens (each refresh burns the old one) under
// concurrency, with 1-second access tokens so refreshes keep happening:
// the bank never answers invalid_grant and no request needs a new consent.
func TestOAuthRotatingUnderConcurrency(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 3 s")
	}
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	b.emu.SetRotate(true)
	b.emu.SetTTL(time.Second, 90*24*time.Hour)
	app.consent(b, "alice", "marc")
	app.consent(b, "bob", "sophie")
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	for i := range 16 {
		wg.Go(func() {
			subject := []string{"alice", "bob"}[i%2]
			for n := 0; n < 10000 && time.Now().Before(deadline); n++ {
				a := app.account(subject)
				code := fmt.Sprint(a.status)
				if a.status != http.StatusOK {
					code += " " + a.header.Get(proxy.HeaderError)
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	refreshGrants := 0
	for _, f := range b.emu.TokenRequests() {
		if f.Get("grant_type") == "refresh_token" {
			refreshGrants++
		}
	}
	t.Logf("rotating: %d refreshes, %d refresh requests, statuses %v", b.emu.Refreshes(), refreshGrants, statuses)
	if b.emu.Refreshes() < 4 || refreshGrants != b.emu.Refreshes() {
		t.Fatalf("%d refresh requests, %d answered with a token: a refresh was refused (invalid_grant)", refreshGrants, b.emu.Refreshes())
	}
	if statuses["401 "+proxy.CodeConsentRequired] > 0 || x.metric("tokenproxy_consent_invalid_grants_total") != 0 {
		t.Fatalf("consent lost under rotation: %v", statuses)
	}
	app.assertNoSecrets(b)
}

// A refresh token the bank rejects (invalid_grant, here: expired) turns into
// consent_required with the cause, counted; the bank's bare 401 never reaches the app.
func TestOAuthInvalidGrant(t *testing.T) {
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	b.emu.SetTTL(time.Millisecond, time.Millisecond)
	app.consent(b, "alice", "marc")
	time.Sleep(5 * time.Millisecond) // past both expiries
	b.emu.SetTTL(time.Hour, time.Hour)
	for range 2 {
		a := app.account("alice")
		if a.status != http.StatusUnauthorized || errorCode(t, a) != proxy.CodeConsentRequired || !strings.Contains(string(a.body), "invalid_grant") {
			t.Fatalf("%d %s", a.status, a.body)
		}
	}
	if got := x.metric("tokenproxy_consent_invalid_grants_total"); got != 1 {
		t.Fatalf("invalid_grant counter %v, want 1 (the second request does not ask the bank again)", got)
	}
	// The census (every 50 ms here) shows the consent invalid.
	for i := 0; x.metric("tokenproxy_consents") == 0 || x.metricWith("tokenproxy_consents", "invalid") != 1; i++ {
		if i > 200 {
			t.Fatalf("consent gauge: invalid = %v", x.metricWith("tokenproxy_consents", "invalid"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A new consent puts the customer back.
	app.consent(b, "alice", "marc")
	if a := app.account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("after a new consent: %d %s", a.status, a.body)
	}
	app.assertNoSecrets(b)
}

// metric sums the samples of a counter or gauge family.
func (x *tp) metric(name string) float64 {
	mfs, _ := x.metrics.Registry().Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// metricWith sums the samples of a family that have a label valued value.
func (x *tp) metricWith(name, value string) float64 {
	mfs, _ := x.metrics.Registry().Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// When the bank says a customer's token expired (its clock an hour on),
// the 401 drops that customer's token only, one refresh follows and the app
// gets the answer; the other customer's refresh is its own.
func TestOAuthUpstream401RefreshesThatSubject(t *testing.T) {
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	app.consent(b, "alice", "marc")
	app.consent(b, "bob", "sophie")
	for _, s := range []string{"alice", "bob"} {
		if a := app.account(s); a.status != http.StatusOK {
			t.Fatalf("%s: %d %s", s, a.status, a.body)
		}
	}
	b.clock.add(time.Hour)
	for i, s := range []string{"alice", "alice", "bob"} {
		a := app.account(s)
		if a.status != http.StatusOK || psu(a) != map[string]string{"alice": "marc", "bob": "sophie"}[s] {
			t.Fatalf("%s after the bank's expiry: %d %s", s, a.status, a.body)
		}
		if want := []int{1, 1, 2}[i]; b.emu.Refreshes() != want {
			t.Fatalf("after request %d (%s): %d refreshes, want %d", i, s, b.emu.Refreshes(), want)
		}
	}
	if acc, rej, _ := b.emu.Counts(); rej != 2 {
		t.Fatalf("the bank rejected %d requests (accepted %d); want one per customer", rej, acc)
	}
	app.assertNoSecrets(b)
}

// On a per-customer route the token budget is spent per request sent to the
// bank, not per fetch: with the default budget (6 per minute, burst 2),
// twenty requests for customers without a consent all get consent_required
// (no bank call, no token_throttled), and a customer whose stored token is
// valid is served from the store after a restart without waiting.
func TestOAuthBudgetSpentOnBankCallsOnly(t *testing.T) {
	b := newBank(t)
	yaml := strings.Replace(b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))),
		"      rate_limit: {requests_per_minute: 6000, burst: 100}\n", "", 1)
	x := startTP(t, b, yaml, nil)
	app := x.app(t, "")
	app.consent(b, "alice", "marc") // one code exchange: one request from the budget
	for i := range 20 {
		a := app.account(fmt.Sprintf("unknown-%d", i))
		if a.status != http.StatusUnauthorized || errorCode(t, a) != proxy.CodeConsentRequired {
			t.Fatalf("unknown subject %d: %d %s", i, a.status, a.body)
		}
	}
	if a := app.account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("alice: %d %s", a.status, a.body)
	}
	if n := len(b.emu.TokenRequests()); n != 1 {
		t.Fatalf("%d token requests at the bank, want the 1 code exchange", n)
	}
}

// subjects.required: false: a request naming no customer goes upstream with
// no token (the app's Authorization still dropped); one naming a customer
// gets that customer's token.
func TestOAuthSubjectOptional(t *testing.T) {
	b := newBank(t)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), "", "    subjects: {required: false}", boltStore(t, t.TempDir(), newKey(t))), nil)
	app := x.app(t, "")
	app.consent(b, "alice", "marc")
	req, _ := http.NewRequest("GET", bpceAccountsURL, nil)
	req.Header.Set("Authorization", "Bearer app-own-token")
	if a := app.do(app.c, req); a.status != http.StatusUnauthorized || a.header.Get(proxy.HeaderError) != "" {
		t.Fatalf("no subject: %d %s; want the bank's own 401", a.status, a.body)
	}
	rec := b.emu.Received()
	if got := rec[len(rec)-1].Header.Get("Authorization"); got != "" {
		t.Fatalf("the request without a subject went up with Authorization %q", got)
	}
	if a := app.account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("alice: %d %s", a.status, a.body)
	}
}
