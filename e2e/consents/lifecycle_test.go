package consents

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// Receiver modes: the app's webhook endpoint up, answering 503, or closing
// each connection without an answer.
const (
	receiverUp int32 = iota
	receiverRefusing
	receiverClosing
	// receiverHolding answers nothing until the sender gives up (its
	// timeout) or dies: a delivery in flight, its event leased.
	receiverHolding
)

// receivedEvent is what the receiver keeps of an event body.
type receivedEvent struct {
	ID, Type, Route, Subject, Cause string
}

// receiver stands for the app's webhook endpoint: it checks every
// delivery's signature twice (webhook.Verify and an HMAC of its own),
// processes each event id once and counts the rest.
type receiver struct {
	srv    *httptest.Server
	secret []byte
	mode   atomic.Int32

	mu        sync.Mutex
	signed    int            // deliveries whose signature both checks accepted
	invalid   []string       // why a delivery's signature or headers were refused
	refused   map[int32]int  // deliveries answered 503 or closed, by mode
	taken     map[string]int // 2xx answers per event id
	processed map[string]receivedEvent
	bodies    [][]byte
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{secret: []byte(hex.EncodeToString(randomKey(t))), refused: map[int32]int{},
		taken: map[string]int{}, processed: map[string]receivedEvent{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body", http.StatusBadRequest)
		return
	}
	sig, id := r.Header.Get("Tokenproxy-Signature"), r.Header.Get("Tokenproxy-Event-Id")
	var ev receivedEvent
	var why string
	switch {
	case webhook.Verify(rc.secret, sig, body, time.Now(), 5*time.Minute) != nil:
		why = "webhook.Verify refused " + id
	case !hmacValid(rc.secret, sig, body):
		why = "the independent HMAC check refused " + id
	case json.Unmarshal(body, &ev) != nil || ev.ID == "" || ev.ID != id || ev.Type != r.Header.Get("Tokenproxy-Event-Type"):
		why = fmt.Sprintf("body %s does not match the headers (id %q)", body, id)
	}
	if why == "" && rc.mode.Load() == receiverHolding {
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, body)
		rc.signed++
		rc.refused[receiverHolding]++
		rc.mu.Unlock()
		<-r.Context().Done()
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.bodies = append(rc.bodies, body)
	if why != "" {
		rc.invalid = append(rc.invalid, why)
		http.Error(w, why, http.StatusBadRequest)
		return
	}
	rc.signed++
	switch m := rc.mode.Load(); m {
	case receiverRefusing:
		rc.refused[m]++
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case receiverClosing:
		rc.refused[m]++
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	rc.taken[id]++
	if _, seen := rc.processed[id]; !seen {
		rc.processed[id] = ev // processed once: the app's deduplication
	}
	w.WriteHeader(http.StatusNoContent)
}

// hmacValid checks header t=…,v1=… against body as docs/webhooks.md
// describes it, independently of the webhook package.
func hmacValid(secret []byte, header string, body []byte) bool {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// byKey returns the processed events' ids by "type subject".
func (rc *receiver) byKey() map[string][]string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]string{}
	for id, ev := range rc.processed {
		k := ev.Type + " " + ev.Subject
		out[k] = append(out[k], id)
	}
	return out
}

// takenCopy returns the 2xx answers per event id so far.
func (rc *receiver) takenCopy() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]int, len(rc.taken))
	for id, n := range rc.taken {
		out[id] = n
	}
	return out
}

// waitFor waits up to within until the receiver has processed an event for
// every key of want ("type subject"); it fails the test naming the missing.
func (rc *receiver) waitFor(t *testing.T, want map[string]bool, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		got := rc.byKey()
		var missing []string
		for k := range want {
			if len(got[k]) == 0 {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return time.Since(began)
		}
		if time.Since(began) > within {
			rc.mu.Lock()
			invalid := rc.invalid
			rc.mu.Unlock()
			t.Fatalf("after %v the receiver still lacks %v (has %v; %d deliveries refused: %v)", within, missing, got, len(invalid), invalid)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// kill stops the replica's process with SIGKILL.
func (r *replica) kill() {
	r.proc.Kill()
	r.past = append(r.past, r.proc.Logs()...)
	r.proc = nil
}

// webhookOutage is how long the receiver is down in the webhook test: the
// first half answering 503, the second closing connections.
const webhookOutage = 30 * time.Second

// Three tokenproxy processes on one PostgreSQL consent store (and Redis),
// with a webhook to a receiver that verifies every signature and
// deduplicates by event id:
//
//  1. consents created through the front and one deleted are delivered,
//     consent.active and consent.deleted, once each;
//  2. the receiver goes down (503, then closed connections) for 30 s;
//     meanwhile more consents are completed and one deleted through
//     replica 2, which is killed with SIGKILL right after; the two others
//     retry during the outage;
//  3. the receiver back, every event in the outbox reaches it, each id at
//     least once and processed once, none given up, every signature
//     valid, no token in any body;
//  4. replica 2 restarted alone (the others stopped) delivers a new event
//     and sends no settled event again.
func TestPostgresGatewayReplicasDeliverWebhooksThroughOutageAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three tokenproxy processes, PostgreSQL and redis-server; skipped with -short")
	}
	b := startBank(t)
	c := startCluster(t)
	rc := startReceiver(t)
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, append(rc.secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	rs := make([]*replica, 3)
	for i := range rs {
		rs[i] = newReplica(t, "replica "+strconv.Itoa(i+1))
		rs[i].consentsExtra = fmt.Sprintf(`  webhooks:
    - url: %s/hooks/consents
      secret: {file: %s}
  webhook_delivery: {timeout: 2s, poll_interval: 200ms, lease: 8s, batch: 1, backoff: 500ms, max_backoff: 4s}
`, rc.srv.URL, secretFile)
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

	sub := func(i int) string { return fmt.Sprint("hook-", i) }
	want := map[string]bool{}
	if !t.Run("delivered while the receiver is up", func(t *testing.T) {
		for i := range 3 {
			f.consent(t, b, sub(i), psuOf(i))
			want["consent.active "+sub(i)] = true
		}
		if ans := rs[0].api(t, http.MethodDelete, "/v1/routes/bpce/consents/"+sub(0)); ans.status != http.StatusNoContent {
			t.Fatalf("DELETE of %s: %d %s", sub(0), ans.status, ans.body)
		}
		want["consent.deleted "+sub(0)] = true
		t.Logf("4 events delivered %v after the last was produced", rc.waitFor(t, want, 15*time.Second).Round(time.Millisecond))
	}) {
		return
	}

	killed := rs[1]
	var killedAt time.Time
	if !t.Run("receiver down, replica 2 killed after producing events", func(t *testing.T) {
		rc.mode.Store(receiverRefusing)
		down := time.Now()
		onKilled := 0
		for i := 3; i < 9; i++ {
			leg := f.consent(t, b, sub(i), psuOf(i))
			want["consent.active "+sub(i)] = true
			if leg.callback == "2" {
				onKilled++
			}
		}
		if onKilled == 0 {
			t.Fatal("no consent's callback was served by replica 2")
		}
		if ans := killed.api(t, http.MethodDelete, "/v1/routes/bpce/consents/"+sub(1)); ans.status != http.StatusNoContent {
			t.Fatalf("DELETE of %s on replica 2: %d %s", sub(1), ans.status, ans.body)
		}
		want["consent.deleted "+sub(1)] = true
		// Each replica claims one event at a time (batch: 1) and its
		// delivery hangs: replica 2 dies holding a live lease.
		rc.mode.Store(receiverHolding)
		type lease struct{ by, until string }
		var held map[string]lease // event id: its live lease
		for deadline := time.Now().Add(10 * time.Second); ; {
			held = map[string]lease{}
			holders := map[string]bool{}
			for _, row := range c.query(t, `SELECT id, lease_by, lease_until::text FROM outbox WHERE done_at IS NULL AND lease_until > now()`) {
				held[string(row[0])] = lease{string(row[1]), string(row[2])}
				holders[string(row[1])] = true
			}
			if len(holders) == len(rs) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("live leases %v; want one held by each of the %d replicas", held, len(rs))
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		killed.kill()
		killedAt = time.Now()
		// The live replicas' deliveries time out (2 s) and release their
		// leases; the killed replica's lease stays until it ends (8 s).
		var kept []string
		for deadline := time.Now().Add(6 * time.Second); ; {
			now := map[string]lease{}
			for _, row := range c.query(t, `SELECT id, coalesce(lease_by, ''), coalesce(lease_until::text, '') FROM outbox`) {
				now[string(row[0])] = lease{string(row[1]), string(row[2])}
			}
			unchanged := map[string]bool{}
			for _, l := range held {
				unchanged[l.by] = true
			}
			for id, l := range held {
				if now[id] != l {
					unchanged[l.by] = false
				}
			}
			kept = kept[:0]
			for by, ok := range unchanged {
				if ok {
					kept = append(kept, by)
				}
			}
			if len(kept) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("leases held at the SIGKILL %v, now %v: %d holders kept theirs; want only the killed replica's", held, now, len(kept))
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		for id, l := range held {
			if l.by == kept[0] {
				t.Logf("replica 2 killed %v after the 503s began, holding the lease of %s until %s; the two others released theirs %v after the SIGKILL",
					killedAt.Sub(down).Round(time.Millisecond), id, l.until, time.Since(killedAt).Round(time.Millisecond))
			}
		}
		t.Logf("7 events produced in the outage (%d callbacks and a DELETE on replica 2)", onKilled)
		rc.mode.Store(receiverRefusing)
		time.Sleep(time.Until(down.Add(webhookOutage / 2))) // the outage's first half: 503
		rc.mode.Store(receiverClosing)
		time.Sleep(time.Until(down.Add(webhookOutage))) // its second half: connections closed
		rc.mu.Lock()
		refusing, closing, holding := rc.refused[receiverRefusing], rc.refused[receiverClosing], rc.refused[receiverHolding]
		rc.mu.Unlock()
		rows := c.query(t, `SELECT count(*), coalesce(min(attempts), 0), coalesce(max(attempts), 0) FROM outbox WHERE done_at IS NULL`)
		pending, minAttempts := string(rows[0][0]), string(rows[0][1])
		t.Logf("outage of %v: %d deliveries answered 503, %d held unanswered, %d connections closed; %s events pending, attempts %s..%s",
			webhookOutage, refusing, holding, closing, pending, minAttempts, rows[0][2])
		if refusing == 0 || closing == 0 || holding < len(rs) {
			t.Fatalf("during the outage %d deliveries met a 503, %d no answer and %d a closed connection; want retries in each part", refusing, holding, closing)
		}
		if pending != "7" {
			t.Fatalf("%s events pending at the end of the outage; want the 7 produced during it", pending)
		}
		if n, _ := strconv.Atoi(minAttempts); n < 2 {
			t.Fatalf("an event pending at the end of the outage was attempted %d times; want retries", n)
		}
	}) {
		return
	}

	if !t.Run("every event arrives once the receiver is back", func(t *testing.T) {
		rc.mode.Store(receiverUp)
		t.Logf("every event delivered %v after the receiver came back (%v after the SIGKILL)",
			rc.waitFor(t, want, 30*time.Second).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))
		got := rc.byKey()
		for k, ids := range got {
			if !want[k] || len(ids) != 1 {
				t.Errorf("the receiver processed %d events %q (ids %v); want one, of %d expected kinds", len(ids), k, ids, len(want))
			}
		}
		// The outbox holds exactly the events the receiver processed, all settled.
		rows := c.query(t, `SELECT id, done_at IS NOT NULL, gave_up FROM outbox`)
		taken := rc.takenCopy()
		if len(rows) != len(want) {
			t.Errorf("the outbox holds %d events; want %d", len(rows), len(want))
		}
		for _, row := range rows {
			if id := string(row[0]); taken[id] < 1 || string(row[1]) != "t" || string(row[2]) != "f" {
				t.Errorf("event %s: taken %d times, settled %s, given up %s", id, taken[id], row[1], row[2])
			}
		}
		dups := 0
		for id, n := range taken {
			if n > 1 {
				dups += n - 1
				t.Logf("event %s taken %d times (at least once: a repeat the app deduplicates)", id, n)
			}
		}
		rc.mu.Lock()
		signed, invalid, bodies := rc.signed, rc.invalid, rc.bodies
		rc.mu.Unlock()
		t.Logf("%d events, %d deliveries with valid signatures in all, %d repeats of a taken event on the wire", len(want), signed, dups)
		if signed < len(want) || len(invalid) != 0 {
			t.Errorf("%d deliveries signed, %d refused: %v", signed, len(invalid), invalid)
		}
		issued := b.emu.Issued()
		if len(issued) == 0 {
			t.Fatal("the bank issued no code or token")
		}
		for _, body := range bodies {
			for _, s := range issued {
				if bytes.Contains(body, []byte(s)) {
					t.Fatalf("a webhook body holds a code or token the bank issued: %s", body)
				}
			}
		}
	}) {
		return
	}

	t.Run("the killed replica rejoins alone and resends nothing settled", func(t *testing.T) {
		startAll(t, rs[1:2]) // killed
		stopAll(t, []*replica{rs[0], rs[2]})
		before := rc.takenCopy()
		if got := killed.listed(t); got[sub(2)] != "active" || got[sub(8)] != "active" {
			t.Fatalf("replica 2 after its restart lists %v", got)
		}
		if ans := killed.api(t, http.MethodDelete, "/v1/routes/bpce/consents/"+sub(2)); ans.status != http.StatusNoContent {
			t.Fatalf("DELETE of %s on the restarted replica 2: %d %s", sub(2), ans.status, ans.body)
		}
		want["consent.deleted "+sub(2)] = true
		rc.waitFor(t, want, 15*time.Second)
		after := rc.takenCopy()
		for id, n := range before {
			if after[id] != n {
				t.Errorf("event %s sent again after replica 2 restarted: taken %d times, %d before", id, after[id], n)
			}
		}
		if len(after) != len(before)+1 {
			t.Errorf("after the restart %d events were taken; want the %d before and the new one", len(after), len(before))
		}
	})
	for _, r := range rs {
		logs := string(r.logs())
		if strings.Contains(logs, string(rc.secret)) {
			t.Errorf("%s logged the webhook secret", r.name)
		}
		for _, s := range b.emu.Issued() {
			if strings.Contains(logs, s) {
				t.Errorf("%s logged a code or token the bank issued", r.name)
			}
		}
	}
	t.Logf("webhook test: %v", time.Since(began).Round(time.Millisecond))
}

// call asks the bank's accounts endpoint through the replica's proxy for
// subject; psuIP, when set, marks the call attended. Safe in goroutines.
func (r *replica) call(subject, psuIP string) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, bpceAccountsURL, nil)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Tokenproxy-Subject", subject)
	if psuIP != "" {
		req.Header.Set("PSU-IP-Address", psuIP)
	}
	resp, err := r.app.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s, %s's accounts: %w", r.name, subject, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s, %s's accounts: reading the body: %w", r.name, subject, err)
	}
	return answer{resp.StatusCode, resp.Header, body}, nil
}

// accountCalls counts the account requests the bank received with an
// access token of psu, without and with PSU-IP-Address.
func (b *bank) accountCalls(psu string) (unattended, attended int) {
	for _, r := range b.emu.Received() {
		if !strings.HasPrefix(r.Path, "/stet/psd2/v1/accounts") {
			continue
		}
		if who, ok := b.emu.CustomerOf(r.Header.Get("Authorization")); !ok || who != psu {
			continue
		}
		if r.Header.Get("PSU-IP-Address") != "" {
			attended++
		} else {
			unattended++
		}
	}
	return unattended, attended
}

// frequencyExceeded says why ans is not tokenproxy's 429
// access_frequency_exceeded with Retry-After ("" when it is).
func frequencyExceeded(ans answer) string {
	var e struct{ Error, Message, Route, Reset string }
	retry, err := strconv.Atoi(ans.header.Get("Retry-After"))
	switch {
	case ans.status != http.StatusTooManyRequests:
		return fmt.Sprintf("status %d", ans.status)
	case !strings.HasPrefix(ans.header.Get("Content-Type"), "application/json") || json.Unmarshal(ans.body, &e) != nil:
		return "not a JSON body: " + string(ans.body)
	case e.Error != proxy.CodeAccessFrequencyExceeded || e.Route != "bpce" || e.Reset == "" || e.Message == "":
		return "body " + string(ans.body)
	case ans.header.Get(proxy.HeaderError) != proxy.CodeAccessFrequencyExceeded:
		return "X-Tokenproxy-Error " + ans.header.Get(proxy.HeaderError)
	case err != nil || retry <= 0 || retry > 25*3600:
		return "Retry-After " + ans.header.Get("Retry-After")
	}
	return ""
}

// Three tokenproxy processes on one PostgreSQL consent store and one
// redis-server, the route with frequency_per_day {limit: 4}: 20 concurrent
// unattended calls for one customer spread over them, exactly 4 reach the
// bank, 16 get 429 access_frequency_exceeded with Retry-After; an
// attended call passes; after every replica restarts the count is kept.
func TestPostgresGatewayReplicasShareFrequencyPerDay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three tokenproxy processes, PostgreSQL and redis-server; skipped with -short")
	}
	b := startBank(t)
	c := startCluster(t)
	rs := make([]*replica, 3)
	for i := range rs {
		rs[i] = newReplica(t, "replica "+strconv.Itoa(i+1))
		rs[i].routeExtra = "    frequency_per_day: {limit: 4}\n"
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
	const who, psu = "freq-1", "psu-f1"
	f.consent(t, b, who, psu)
	if un, at := b.accountCalls(psu); un != 0 || at != 0 {
		t.Fatalf("before any call the bank saw %d unattended and %d attended account calls", un, at)
	}

	answers := make([]answer, 20)
	errs := make([]error, len(answers))
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i], errs[i] = rs[i%3].call(who, "") })
	}
	wg.Wait()
	served := map[string]int{}
	var refused int
	for i, ans := range answers {
		switch {
		case errs[i] != nil:
			t.Fatal(errs[i])
		case ans.status == http.StatusOK && ans.header.Get(psuHeader) == psu:
			served[rs[i%3].name]++
		case frequencyExceeded(ans) == "":
			refused++
		default:
			t.Fatalf("call %d on %s: %s; want 200 or 429 access_frequency_exceeded", i, rs[i%3].name, frequencyExceeded(ans))
		}
	}
	t.Logf("20 concurrent unattended calls: served %v, %d refused", served, refused)
	total := 0
	for _, n := range served {
		total += n
	}
	if total != 4 || refused != 16 {
		t.Fatalf("%d served and %d refused; want 4 and 16", total, refused)
	}
	if un, _ := b.accountCalls(psu); un != 4 {
		t.Fatalf("the bank received %d unattended calls; want 4", un)
	}
	if ans, err := rs[1].call(who, "203.0.113.9"); err != nil || ans.status != http.StatusOK || ans.header.Get(psuHeader) != psu {
		t.Fatalf("attended call: %v %d %s", err, ans.status, ans.body)
	}
	if un, at := b.accountCalls(psu); un != 4 || at != 1 {
		t.Fatalf("the bank received %d unattended and %d attended calls; want 4 and 1", un, at)
	}

	stopAll(t, rs)
	startAll(t, rs)
	for _, r := range rs {
		if ans, err := r.call(who, "203.0.113.9"); err != nil || ans.status != http.StatusOK || ans.header.Get(psuHeader) != psu {
			t.Fatalf("%s after the restart, attended: %v %d %s", r.name, err, ans.status, ans.body)
		}
		ans, err := r.call(who, "")
		if err != nil {
			t.Fatal(err)
		}
		if why := frequencyExceeded(ans); why != "" {
			t.Fatalf("%s after the restart, unattended: %s; want 429 access_frequency_exceeded", r.name, why)
		}
	}
	if un, at := b.accountCalls(psu); un != 4 || at != 4 {
		t.Fatalf("after the restart the bank received %d unattended and %d attended calls; want 4 and 4", un, at)
	}
	t.Logf("frequency test: %v", time.Since(began).Round(time.Millisecond))
}
