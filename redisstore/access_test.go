package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

// TestTakeAccessAcrossReplicas: 20 concurrent calls of one consent over
// three replicas take exactly the limit; the key expires after the day.
func TestTakeAccessAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Minute, 0)
	rs := []*replica{newReplica(t, srv, bk, replicaOpts{}), newReplica(t, srv, bk, replicaOpts{}), newReplica(t, srv, bk, replicaOpts{})}
	ctx := context.Background()
	reset := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	var taken, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, ok, err := rs[i%3].shared.TakeAccess(ctx, "bg", "app", "alice", "2025-06-10", 4, reset)
			switch {
			case err != nil:
				t.Error(err)
			case ok:
				taken.Add(1)
			default:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if taken.Load() != 4 || refused.Load() != 16 {
		t.Fatalf("taken %d, refused %d; want 4 and 16", taken.Load(), refused.Load())
	}
	key := rs[0].shared.accessKey("bg", "app", "alice", "2025-06-10")
	if v, _ := rs[0].client.Get(ctx, key).Int(); v != 4 {
		t.Fatalf("the count is %d after refusals; want 4 (refused calls count nothing)", v)
	}
	if at, err := rs[0].client.ExpireTime(ctx, key).Result(); err != nil || at != time.Duration(reset.Add(accessMargin).Unix())*time.Second {
		t.Fatalf("expires at %v (%v); want %d", at, err, reset.Add(accessMargin).Unix())
	}
	// Owners, subjects and days each have their own count; a ':' in a name cannot make two keys meet.
	for _, k := range [][4]string{{"bg", "", "alice", "2025-06-10"}, {"bg", "app", "bob", "2025-06-10"},
		{"bg", "app", "alice", "2025-06-11"}, {"bg", "app:alice", "x", "2025-06-10"}, {"bg", "app", "alice:x", "2025-06-10"}} {
		if n, ok, err := rs[1].shared.TakeAccess(ctx, k[0], k[1], k[2], k[3], 4, reset); err != nil || !ok || n != 1 {
			t.Fatalf("%v: %d, %v, %v; want a first count", k, n, ok, err)
		}
	}
	// Redis down: an error, never a count taken for granted.
	srv.Stop()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, ok, err := rs[2].shared.TakeAccess(cctx, "bg", "app", "carol", "2025-06-10", 4, reset); err == nil || ok {
		t.Fatalf("redis down: %v, %v; want an error", ok, err)
	}
}
