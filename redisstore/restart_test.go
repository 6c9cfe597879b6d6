package redisstore

import (
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Redis restarted without its data: the generation counters start afresh,
// yet a replica holding a token from before the restart does not mistake the
// first token stored afterwards for its own and fetch again.
func TestRestartWithoutDataOneFetchPerExpiry(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Second, 20*time.Millisecond)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, bk, replicaOpts{}))
	}
	storm(t, rs, "", 30)
	if n := bk.n.Load(); n != 1 {
		t.Fatalf("%d token requests before the restart; want 1", n)
	}
	srv.Stop()
	srv.Restart()
	for _, r := range rs {
		eventually(t, 5*time.Second, "replica back on Redis", func() bool {
			return r.shared.Up() && r.shared.Healthy() == nil
		})
	}
	time.Sleep(1100 * time.Millisecond) // the token held by every replica expires
	before := bk.n.Load()
	storm(t, rs, "", 300)
	if n := bk.n.Load() - before; n != 1 {
		t.Fatalf("%d token requests for one expiry after Redis lost its data; want 1", n)
	}
}

// Redis restarted without its data forgets the shared budget window; the
// replicas write back the grants that may still count at the bank, so the
// window after the restart is as full as before and no extra token request
// can be sent within it.
func TestRestartWithoutDataKeepsTheBudgetWindow(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Hour, 5*time.Millisecond)
	budget := tokencache.Budget{PerMinute: 4, Burst: 4, Window: time.Minute, Margin: time.Second}
	var rs []*replica
	for range 2 {
		rs = append(rs, newReplica(t, srv, bk, replicaOpts{budget: budget, maxWait: 200 * time.Millisecond, fetchTimeout: time.Second}))
	}
	// Four subjects spend the whole budget: four token requests at the bank.
	for i, s := range []string{"a", "b", "c", "d"} {
		if _, _, err := rs[i%2].cache.Get(t.Context(), s); err != nil {
			t.Fatalf("subject %s: %v", s, err)
		}
	}
	if _, _, err := rs[0].cache.Get(t.Context(), "e"); err == nil {
		t.Fatal("a fifth token request within the window was granted")
	}
	srv.Stop()
	srv.Restart() // no persistence: the window is gone from Redis
	for _, r := range rs {
		eventually(t, 5*time.Second, "replica back on Redis", func() bool {
			return r.shared.Up() && r.shared.Healthy() == nil
		})
	}
	// Every replica notices the new epoch (its health tick) and the quiet
	// period that lets them write back their grants passes; only then is the
	// window asked again, so a refusal below is the written-back grants'.
	base := "tp-test:{budget:" + bk.Host() + "}:"
	eventually(t, 5*time.Second, "grants written back and the quiet period over", func() bool {
		e, err := rs[0].client.Get(t.Context(), base+"epoch").Result()
		if err != nil {
			return false
		}
		for _, r := range rs {
			p := r.shared.pacers[bk.Host()]
			p.mu.Lock()
			seen := p.epoch
			p.mu.Unlock()
			if seen != e {
				return false
			}
		}
		return rs[0].client.PTTL(t.Context(), base+"backoff").Val() <= 0
	})
	if n := rs[0].client.ZCard(t.Context(), base+"window").Val(); n != 4 {
		t.Fatalf("the window holds %d grants after the restart; want the 4 written back", n)
	}
	before := bk.n.Load()
	for i, s := range []string{"f", "g", "h"} {
		if _, _, err := rs[i%2].cache.Get(t.Context(), s); err == nil {
			t.Fatalf("subject %s got a token after the restart although the bank's minute is spent", s)
		}
	}
	if n := bk.n.Load() - before; n != 0 {
		t.Fatalf("%d token requests sent after Redis lost its data, within a spent window", n)
	}
}
