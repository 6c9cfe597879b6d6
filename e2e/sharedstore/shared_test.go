package sharedstore

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// startReplicas runs n replicas sharing c.
func startReplicas(t *testing.T, n int, b *bank, rc replicaConfig) []*replica {
	t.Helper()
	out := make([]*replica, n)
	for i := range out {
		out[i] = startReplica(t, "replica-"+string(rune('a'+i)), b, rc)
	}
	return out
}

// warm sends one request through each replica, in turn, and checks it is served.
func warm(t *testing.T, replicas []*replica) {
	t.Helper()
	c := appClient()
	for i, r := range replicas {
		if res := call(context.Background(), c, i, r); res.status != http.StatusOK {
			t.Fatalf("%s: warm-up request answered %d %s", r.name, res.status, res.code)
		}
	}
}

// 3 replicas, 1,500 concurrent requests spread over them after the token
// expired: the bank sees exactly one token request.
func TestOneTokenRequestAfterExpiryAcrossReplicas(t *testing.T) {
	b := startBank(t, 8*time.Second, 0)
	replicas := startReplicas(t, 3, b, replicaConfig{perMinute: 10, burst: 2, maxWait: 10 * time.Second,
		maxReplicas: 3, cluster: startCluster(t)})
	warm(t, replicas)
	if n := b.emu.Stats().TokenRequests; n != 1 {
		t.Fatalf("warm-up: %d token requests at the bank; want 1 (the other replicas take the shared token)", n)
	}
	issued := b.emu.TokenRequestTimes()[0]
	time.Sleep(time.Until(issued.Add(b.ttl + 200*time.Millisecond))) // let the token expire
	b.emu.ResetStats()

	const total = 1500
	c := appClient()
	start := make(chan struct{})
	results := make([]result, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() {
			<-start
			results[i] = call(context.Background(), c, i%3, replicas[i%3])
		})
	}
	close(start)
	wg.Wait()
	failed := 0
	for _, r := range results {
		if r.status != http.StatusOK {
			failed++
			if failed <= 5 {
				t.Errorf("replica %d: %d %q", r.replica, r.status, r.code)
			}
		}
	}
	st := b.emu.Stats()
	t.Logf("%d requests over 3 replicas after expiry: %d failed; bank: %d token requests, %d API requests", total, failed, st.TokenRequests, st.APIRequests)
	// The new token is refreshed again from half its life (twice the skew,
	// capped at a quarter of the lifetime, before expiry): on a slow
	// machine the burst can outlast that, and that refresh is due, not a
	// duplicate. Within the new token's first half-life, one request.
	times := b.emu.TokenRequestTimes()
	if len(times) == 0 {
		t.Fatal("bank saw no token request after expiry")
	}
	inFirstHalf := 0
	for _, at := range times {
		if at.Before(times[0].Add(b.ttl / 2)) {
			inFirstHalf++
		}
	}
	if inFirstHalf != 1 {
		t.Errorf("bank saw %d token requests after expiry within %v of the first; want exactly 1 (all: %v)", inFirstHalf, b.ttl/2, times)
	}
	hits := 0
	for _, r := range replicas {
		if v := r.metric(`tokenproxy_store_shared_hits_total{route="bankingcircle"}`); v != "" && v != "0" {
			hits++
		}
	}
	if hits < 2 {
		t.Errorf("%d replicas report tokenproxy_store_shared_hits_total > 0; want at least 2", hits)
	}
	assertNoSecrets(t, b, replicas)
}

// soakDuration is TOKENPROXY_SHARED_SOAK, 3m under TOKENPROXY_SOAK=1 (CI),
// else 60s.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("TOKENPROXY_SHARED_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("TOKENPROXY_SHARED_SOAK: %v", err)
		}
		return d
	}
	if os.Getenv("TOKENPROXY_SOAK") == "1" {
		return 3 * time.Minute
	}
	return time.Minute
}

// 30 req/s per replica, 2 s tokens, the bank's limit N equal to
// requests_per_minute: the bank never answers 429 and never sees more than N
// token requests in a rolling minute, and every request that could be
// served (a token was valid) was served.
func TestBudgetHoldsAtTheBankUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load run; skipped with -short")
	}
	const n = 30
	d := soakDuration(t)
	b := startBank(t, 2*time.Second, n)
	replicas := startReplicas(t, 3, b, replicaConfig{perMinute: n, burst: 2, maxWait: 3 * time.Second,
		maxReplicas: 3, cluster: startCluster(t)})
	results := load(context.Background(), replicas, 30, d)
	st := b.emu.Stats()
	peak := bankingcircle.MaxTokenRequestsInWindow(b.emu.TokenRequestTimes(), tokencache.BankWindow)
	served, codes := tally(results)
	t.Logf("%v at 30 req/s x 3 replicas: %d requests, %d served (%.2f%%), failures by code %v; bank: %d token requests, %d answered 429, max %d in a rolling minute (N = %d)",
		d, len(results), served, 100*float64(served)/float64(len(results)), codes, st.TokenRequests, st.TokenThrottled, peak, n)
	if st.TokenThrottled != 0 {
		t.Errorf("the bank answered 429 %d times", st.TokenThrottled)
	}
	if peak > n {
		t.Errorf("the bank saw %d token requests in a rolling minute; the budget is %d", peak, n)
	}
	assertServedWhileValid(t, b, results)
	assertNoSecrets(t, b, replicas)
}

// Redis killed and restarted under load: no request fails while a token is
// valid, the bank never sees more than N a minute, the replicas report the
// outage and rejoin the shared budget (one token request per refresh again).
func TestRedisOutageUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load run; skipped with -short")
	}
	const n = 20
	b := startBank(t, 10*time.Second, n)
	cl := startCluster(t)
	replicas := startReplicas(t, 3, b, replicaConfig{perMinute: n, burst: 2, maxWait: 3 * time.Second, maxReplicas: 3, cluster: cl})
	warm(t, replicas)

	var results []result
	done := make(chan struct{})
	go func() { defer close(done); results = load(context.Background(), replicas, 30, 30*time.Second) }()

	time.Sleep(4 * time.Second)
	cl.redis.Stop()
	killed := time.Now()
	for _, r := range replicas {
		waitFor(t, 5*time.Second, r.name+" reports Redis down", func() bool {
			return strings.Contains(r.readyz(), "degraded") &&
				r.metric(`tokenproxy_dependency_up{dependency="redis"}`) == "0"
		})
	}
	time.Sleep(time.Until(killed.Add(7 * time.Second)))
	cl.redis.Restart()
	restarted := time.Now()
	for _, r := range replicas {
		waitFor(t, 5*time.Second, r.name+" rejoins", func() bool {
			return strings.Contains(r.readyz(), `"status":"ok"`) &&
				r.metric(`tokenproxy_dependency_up{dependency="redis"}`) == "1"
		})
	}
	<-done
	for _, r := range replicas {
		if logs := r.logs(); !strings.Contains(logs, "redis store unreachable") || !strings.Contains(logs, "redis store reachable again") {
			t.Errorf("%s: no log line for the outage and its end", r.name)
		}
	}

	st := b.emu.Stats()
	times := b.emu.TokenRequestTimes()
	peak := bankingcircle.MaxTokenRequestsInWindow(times, tokencache.BankWindow)
	served, codes := tally(results)
	t.Logf("Redis down %v under 30 req/s x 3: %d requests, %d served, failures by code %v; bank: %d token requests at %v, %d answered 429, max %d in a rolling minute (N = %d)",
		restarted.Sub(killed).Round(time.Millisecond), len(results), served, codes, st.TokenRequests, offsets(times, killed), st.TokenThrottled, peak, n)
	if st.TokenThrottled != 0 || peak > n {
		t.Errorf("bank: %d answered 429, max %d in a rolling minute; want 0 and at most %d", st.TokenThrottled, peak, n)
	}
	assertServedWhileValid(t, b, results)
	// Rejoined: one token request per refresh, not one per replica, from the
	// moment Redis is back (it lost its data: no persistence).
	var after []time.Time
	for _, at := range times {
		if at.After(restarted) {
			after = append(after, at)
		}
	}
	if len(after) == 0 {
		t.Fatal("no token request after Redis came back")
	}
	for i := 1; i < len(after); i++ {
		if gap := after[i].Sub(after[i-1]); gap < b.ttl/2 {
			t.Errorf("token requests %v apart after rejoining; the replicas do not share the token again", gap)
		}
	}
	assertNoSecrets(t, b, replicas)
}

// expires_in 5 with the default 30 s skew: the skew is capped at a quarter of
// the lifetime, every request is served, at most one token per half lifetime.
func TestShortLivedTokensServeEveryRequest(t *testing.T) {
	const d = 12 * time.Second
	b := startBank(t, 5*time.Second, 0)
	r := startReplica(t, "single", b, replicaConfig{perMinute: 6, burst: 2, maxWait: 10 * time.Second})
	results := load(context.Background(), []*replica{r}, 20, d)
	served, codes := tally(results)
	fetches := b.emu.Stats().TokenRequests
	t.Logf("%v at 20 req/s, 5 s tokens, default skew: %d/%d served, failures %v, %d token requests", d, served, len(results), codes, fetches)
	if served != len(results) {
		t.Errorf("%d of %d requests failed", len(results)-served, len(results))
	}
	// A token is refreshed from 2.5 s before its expiry (twice the capped
	// skew): at most one per 2.5 s.
	if most := int(d/(5*time.Second-2*5*time.Second/4)) + 1; fetches > most {
		t.Errorf("%d token requests in %v; want at most %d (one per lifetime)", fetches, d, most)
	}
	if got := strings.Count(r.logs(), "token lifetime is short for the configured skew"); got != 1 {
		t.Errorf("the skew cap was logged %d times; want once", got)
	}
}

// tally counts the served requests and the others by status and code.
func tally(results []result) (served int, codes map[string]int) {
	codes = map[string]int{}
	for _, r := range results {
		if r.status == http.StatusOK {
			served++
			continue
		}
		codes[http.StatusText(r.status)+" "+r.code]++
	}
	return served, codes
}

// assertServedWhileValid fails for any request that failed although a token
// the bank issued had been out for 250 ms and was usable for more than
// 250 ms when the request started. A token is handed out only until the
// skew before its expiry (the default 30 s, capped at a quarter of its
// lifetime), so that it never expires on its way to the bank.
func assertServedWhileValid(t *testing.T, b *bank, results []result) {
	t.Helper()
	var issued []time.Time
	for _, tr := range b.emu.TokenRequests() {
		if tr.Status == http.StatusOK {
			issued = append(issued, tr.Time)
		}
	}
	const tol = 250 * time.Millisecond
	usable := b.ttl - min(30*time.Second, b.ttl/4)
	bad := 0
	for _, r := range results {
		if r.status == http.StatusOK {
			continue
		}
		for _, at := range issued {
			if !at.Add(tol).After(r.start) && at.Add(usable-tol).After(r.start) {
				bad++
				if bad <= 5 {
					t.Errorf("replica %d: request at %s failed (%d %s) while a token issued at %s was valid",
						r.replica, r.start.Format("15:04:05.000"), r.status, r.code, at.Format("15:04:05.000"))
				}
				break
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d such requests in all", bad)
	}
}

// assertNoSecrets checks that no log holds the password, the passcode or a token.
func assertNoSecrets(t *testing.T, b *bank, replicas []*replica) {
	t.Helper()
	for _, r := range replicas {
		logs := r.logs()
		for _, s := range append([]string{bcPassword, bcPasscode}, b.emu.IssuedTokens()...) {
			if strings.Contains(logs, s) {
				t.Errorf("%s logged a secret", r.name)
				break
			}
		}
	}
}

// offsets renders times relative to ref, sorted, for the log.
func offsets(times []time.Time, ref time.Time) []string {
	sorted := slices.Clone(times)
	slices.SortFunc(sorted, func(a, b time.Time) int { return a.Compare(b) })
	out := make([]string, len(sorted))
	for i, at := range sorted {
		out[i] = at.Sub(ref).Round(10 * time.Millisecond).String()
	}
	return out
}
