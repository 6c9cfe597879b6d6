package consents

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/proxy"
)

const consentCount = 20

func subject(i int) string { return fmt.Sprint("cust-", i) }
func psuOf(i int) string   { return fmt.Sprint("psu-", i) }

// Three tokenproxy processes, started at once on one empty PostgreSQL
// consent store (migrate_on_start on each) and one redis-server, behind a
// round-robin front that carries the one callback_url:
//
//  1. 20 consents, each started on one replica and completed by the
//     browser's callback on another, are all active on every replica, and
//     every replica serves every subject with the customer's token;
//  2. a consent deleted through replica 3 is answered consent_required by
//     replicas 1 and 2 within a second, and the bank receives no request
//     with its token after the DELETE returned;
//  3. after SIGTERM to all three and a restart on the same Postgres and
//     Redis, the deleted consent is still refused everywhere, its token
//     never reaches the bank, and the 19 others are served.
func TestPostgresGatewayReplicasShareAndDeleteConsents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three tokenproxy processes, PostgreSQL and redis-server; skipped with -short")
	}
	b := startBank(t)
	c := startCluster(t)
	rs := make([]*replica, 3)
	for i := range rs {
		rs[i] = newReplica(t, "replica "+strconv.Itoa(i+1))
	}
	f := startFront(t, rs)
	for _, r := range rs {
		r.configure(b, c, f.srv.URL)
	}
	t.Cleanup(func() {
		stopAll(t, rs)
		if t.Failed() {
			for _, r := range rs {
				t.Logf("%s log (tail):\n%s", r.name, tail(r.logs(), 30))
			}
		}
	})

	began := time.Now()
	startAll(t, rs)
	t.Logf("3 replicas started at once on an empty database, ready in %v", time.Since(began).Round(time.Millisecond))
	// Each migration applied once, by whichever replica took the advisory
	// lock first; the others found the schema up to date.
	rows := c.query(t, `SELECT count(*), count(DISTINCT version), coalesce(max(version), 0) FROM schema_migrations`)
	if n, distinct, top := string(rows[0][0]), string(rows[0][1]), string(rows[0][2]); n != distinct || n != top || n == "0" {
		t.Fatalf("schema_migrations after 3 concurrent starts: %s rows, %s versions, highest %s; want each version 1..N once", n, distinct, top)
	}

	const deleted = 7 // the consent deleted in step 2
	if !t.Run("consents started and completed on different replicas", func(t *testing.T) {
		for i := range consentCount {
			leg := f.consent(t, b, subject(i), psuOf(i))
			if leg.start == "" || leg.callback == "" || leg.start == leg.callback {
				t.Fatalf("consent %d: started on replica %q, callback on replica %q; want two different replicas", i, leg.start, leg.callback)
			}
		}
		for _, r := range rs {
			got := r.listed(t)
			if len(got) != consentCount {
				t.Fatalf("%s lists %d consents; want %d: %v", r.name, len(got), consentCount, got)
			}
			for i := range consentCount {
				if got[subject(i)] != "active" {
					t.Fatalf("%s: %s is %q; want active", r.name, subject(i), got[subject(i)])
				}
			}
		}
		for _, r := range rs {
			for i := range consentCount {
				if ans := r.account(t, subject(i)); ans.status != http.StatusOK || ans.header.Get(psuHeader) != psuOf(i) {
					t.Fatalf("%s, %s's accounts: %d, the bank saw the token of %q; want 200 with %s's token: %s",
						r.name, subject(i), ans.status, ans.header.Get(psuHeader), psuOf(i), ans.body)
				}
			}
		}
	}) {
		return
	}

	// The deleted consent's tokens, as the bank saw them before the delete:
	// every replica used one.
	tokens := b.tokensOf(psuOf(deleted))
	if len(tokens) == 0 || b.sawSince(tokens, time.Time{}) < len(rs) {
		t.Fatalf("before the delete the bank saw %d requests with %d tokens of %s; want one from each replica at least",
			b.sawSince(tokens, time.Time{}), len(tokens), psuOf(deleted))
	}
	var deletedAt time.Time
	if !t.Run("a consent deleted on replica 3 stops on every replica", func(t *testing.T) {
		if ans := rs[2].api(t, http.MethodDelete, "/v1/routes/bpce/consents/"+subject(deleted)); ans.status != http.StatusNoContent {
			t.Fatalf("DELETE on replica 3: %d %s", ans.status, ans.body)
		}
		deletedAt = time.Now()
		// Every replica is asked at once, from the moment the DELETE returned.
		polls := make([]poll, len(rs))
		var wg sync.WaitGroup
		for i, r := range rs {
			wg.Go(func() { polls[i] = untilConsentRequired(r, subject(deleted), deletedAt, time.Second) })
		}
		wg.Wait()
		for i, p := range polls {
			if p.err != nil {
				t.Errorf("%s: %v", rs[i].name, p.err)
				continue
			}
			t.Logf("%s: consent_required %v after the DELETE on replica 3 returned (first answer after %v, %d requests, %d served)",
				rs[i].name, p.after.Round(time.Microsecond), p.first.Round(time.Microsecond), p.requests, p.served)
			if p.served != 0 {
				t.Errorf("%s served %s's deleted consent %d times after the DELETE returned", rs[i].name, subject(deleted), p.served)
			}
		}
		for _, r := range rs {
			if ans := r.account(t, subject(deleted+1)); ans.status != http.StatusOK || ans.header.Get(psuHeader) != psuOf(deleted+1) {
				t.Fatalf("%s, %s after the delete of %s: %d %s", r.name, subject(deleted+1), subject(deleted), ans.status, ans.body)
			}
		}
		if n := b.sawSince(tokens, deletedAt); n != 0 {
			t.Fatalf("the bank received %d requests with the deleted consent's token after the DELETE returned", n)
		}
	}) {
		return
	}

	t.Run("after every replica restarts", func(t *testing.T) {
		stopAll(t, rs)
		if t.Failed() {
			return
		}
		tokenRequests := len(b.emu.TokenRequests())
		startAll(t, rs)
		for _, r := range rs {
			got := r.listed(t)
			if _, ok := got[subject(deleted)]; ok || len(got) != consentCount-1 {
				t.Fatalf("%s after the restart lists %d consents (%v); want the %d others", r.name, len(got), got, consentCount-1)
			}
			if ans := r.api(t, http.MethodGet, "/v1/routes/bpce/consents/"+subject(deleted)); ans.status != http.StatusNotFound {
				t.Fatalf("%s: GET of the deleted consent after the restart: %d %s; want 404", r.name, ans.status, ans.body)
			}
		}
		for _, r := range rs {
			if ans := r.account(t, subject(deleted)); !consentRequired(ans) {
				t.Fatalf("%s after the restart, %s: %d %s %s; want 401 consent_required", r.name, subject(deleted),
					ans.status, ans.header.Get(proxy.HeaderError), ans.body)
			}
			for i := range consentCount {
				if i == deleted {
					continue
				}
				if ans := r.account(t, subject(i)); ans.status != http.StatusOK || ans.header.Get(psuHeader) != psuOf(i) {
					t.Fatalf("%s after the restart, %s: %d (token of %q) %s", r.name, subject(i), ans.status, ans.header.Get(psuHeader), ans.body)
				}
			}
		}
		if n := b.sawSince(tokens, deletedAt); n != 0 {
			t.Fatalf("the bank received %d requests with the deleted consent's token after the DELETE returned", n)
		}
		t.Logf("after the restart: %s refused on 3 replicas, %d others served on each; %d token requests at the bank (shared tokens read back from Redis)",
			subject(deleted), consentCount-1, len(b.emu.TokenRequests())-tokenRequests)
	})

	for _, r := range rs {
		logs := string(r.logs())
		for _, s := range b.emu.Issued() {
			if strings.Contains(logs, s) {
				t.Fatalf("%s logged a code or token the bank issued", r.name)
			}
		}
	}
}

// poll is what untilConsentRequired saw on one replica.
type poll struct {
	after, first     time.Duration // until consent_required; until the first answer
	requests, served int
	err              error
}

// untilConsentRequired asks r for subject until it answers 401
// consent_required and says how long after deleted that answer came and
// how many requests were served (200) before it. Any other answer, or no
// consent_required within within, is an error.
func untilConsentRequired(r *replica, subject string, deleted time.Time, within time.Duration) poll {
	var p poll
	req, err := http.NewRequest(http.MethodGet, bpceAccountsURL, nil)
	if err != nil {
		return poll{err: err}
	}
	req.Header.Set("Tokenproxy-Subject", subject)
	for {
		resp, err := r.app.Do(req)
		if err != nil {
			p.err = err
			return p
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			p.err = err
			return p
		}
		ans := answer{resp.StatusCode, resp.Header, body}
		p.requests++
		if p.requests == 1 {
			p.first = time.Since(deleted)
		}
		switch {
		case consentRequired(ans):
			p.after = time.Since(deleted)
			return p
		case ans.status == http.StatusOK:
			p.served++
		default:
			p.err = fmt.Errorf("%s after the delete: %d %s %s; want 401 consent_required", subject, ans.status, ans.header.Get(proxy.HeaderError), ans.body)
			return p
		}
		if time.Since(deleted) > within {
			p.err = fmt.Errorf("%s's deleted consent still served %v after the DELETE returned (%d requests served)", subject, within, p.served)
			return p
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}
