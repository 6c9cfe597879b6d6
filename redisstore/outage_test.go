package redisstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// load runs workers on every replica for d: each Get is followed by an
// Invalidate (as an upstream 401 would), forcing refreshes. It returns how
// many Gets failed for another reason than the budget.
func load(t *testing.T, rs []*replica, workers int, d time.Duration) (served, throttled int64) {
	t.Helper()
	var wg sync.WaitGroup
	var ok, thr atomic.Int64
	end := time.Now().Add(d)
	for _, r := range rs {
		for range workers {
			wg.Go(func() {
				for time.Now().Before(end) {
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					tok, _, err := r.cache.Get(ctx, "")
					cancel()
					var te *tokencache.ThrottledError
					switch {
					case err == nil:
						ok.Add(1)
						r.cache.Invalidate("", tok)
					case errors.As(err, &te):
						thr.Add(1)
					default:
						t.Errorf("Get: %v", err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	}
	wg.Wait()
	return ok.Load(), thr.Load()
}

// Three replicas forcing refreshes as fast as they can: the bank never sees
// more than N arrivals in any window, counted by arrival time.
func TestSharedBudgetByArrival(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Hour, 40*time.Millisecond)
	b.setup = 30 * time.Millisecond
	budget := tokencache.Budget{PerMinute: 5, Burst: 5, Window: 2 * time.Second, Margin: 100 * time.Millisecond}
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, b, replicaOpts{budget: budget, maxWait: 200 * time.Millisecond, fetchTimeout: time.Second}))
	}
	served, throttled := load(t, rs, 4, 7*time.Second)
	arr := b.arrivalTimes()
	if got := maxInWindow(arr, budget.Window); got > budget.PerMinute {
		t.Fatalf("%d arrivals within one window; budget %d", got, budget.PerMinute)
	}
	if len(arr) < 3*budget.PerMinute || throttled == 0 {
		t.Fatalf("%d arrivals, %d throttled in 7 s; the budget allows at least %d", len(arr), throttled, 3*budget.PerMinute)
	}
	t.Logf("%d token requests, %d served, %d throttled", len(arr), served, throttled)
}

// Redis killed mid-load: cached tokens keep serving, health reports it,
// new fetches use the local budget floor(N/3) after the shared window has
// passed, and after Redis is back the replicas share again.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(1500*time.Millisecond, 20*time.Millisecond)
	budget := tokencache.Budget{PerMinute: 6, Burst: 6, Window: time.Second, Margin: 100 * time.Millisecond}
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, b, replicaOpts{budget: budget, maxWait: 3 * time.Second, fetchTimeout: 300 * time.Millisecond}))
	}
	if seen := storm(t, rs, "", 300); len(seen) != 1 || b.n.Load() != 1 {
		t.Fatalf("prime: %v, %d requests", seen, b.n.Load())
	}
	srv.Stop()
	for i, r := range rs {
		select {
		case up := <-r.deps:
			if up {
				t.Fatalf("replica %d reported up", i)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("replica %d did not report Redis down", i)
		}
		if r.shared.Healthy() == nil {
			t.Fatalf("replica %d healthy without Redis", i)
		}
	}
	// The valid token keeps serving: no request fails, none is sent.
	if seen := storm(t, rs, "", 600); seen["tok-1"] != 600 || b.n.Load() != 1 {
		t.Fatalf("during the outage with a valid token: %v, %d requests", seen, b.n.Load())
	}
	// Expired: each replica fetches on its own budget of 2 per window.
	load(t, rs, 3, 3*time.Second)
	outage := b.arrivalTimes()[1:]
	if len(outage) == 0 {
		t.Fatal("no token request during the outage")
	}
	if got := maxInWindow(outage, budget.Window); got > budget.PerMinute {
		t.Fatalf("%d arrivals within one window during the outage; budget %d", got, budget.PerMinute)
	}

	srv.Restart()
	for i, r := range rs {
		eventually(t, 3*time.Second, "replica rejoins", func() bool { return r.shared.Healthy() == nil })
		select {
		case up := <-r.deps:
			if !up {
				t.Fatalf("replica %d: dependency callback said down after restart", i)
			}
		case <-time.After(time.Second):
			t.Fatalf("replica %d did not report Redis up", i)
		}
	}
	// Shared again: once every replica's token has expired, one fetch serves all.
	time.Sleep(3 * time.Second)
	before := b.n.Load()
	if seen := storm(t, rs, "", 900); len(seen) != 1 || b.n.Load() != before+1 {
		t.Fatalf("after rejoining: %v, %d requests; want one shared token", seen, b.n.Load()-before)
	}
	if got := maxInWindow(b.arrivalTimes(), budget.Window); got > budget.PerMinute {
		t.Fatalf("%d arrivals within one window over the whole run; budget %d", got, budget.PerMinute)
	}
}
