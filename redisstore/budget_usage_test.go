package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// TestSharedBudgetUsage: two replicas' token requests both count in the
// usage either reports, and with the budget spent the next free slot is
// when the oldest stops counting at the provider.
func TestSharedBudgetUsage(t *testing.T) {
	srv := redistest.Start(t)
	b := newBank(time.Minute, 0)
	budget := tokencache.Budget{PerMinute: 2, Burst: 2, Window: 3 * time.Second, Margin: time.Millisecond}
	r1 := newReplica(t, srv, b, replicaOpts{route: "one", budget: budget})
	r2 := newReplica(t, srv, b, replicaOpts{route: "two", budget: budget})
	ctx := context.Background()
	u, ok, err := r1.cache.Budget(ctx)
	if err != nil || !ok || u.Used != 0 || u.Limit != 2 || !u.Shared || u.NextFree.After(time.Now()) {
		t.Fatalf("before any request: %+v %v %v", u, ok, err)
	}
	if _, _, err := r1.cache.Get(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r2.cache.Get(ctx, ""); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	u, _, err = r2.cache.Budget(ctx)
	if err != nil || u.Used != 2 || u.Window != budget.Hold() {
		t.Fatalf("after two requests: %+v %v", u, err)
	}
	if lo, hi := done.Add(budget.Hold()-time.Second), done.Add(budget.Hold()); u.NextFree.Before(lo) || u.NextFree.After(hi) {
		t.Errorf("next free %v, want between %v and %v", u.NextFree, lo, hi)
	}
}
