package redisstore

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// The cached-token hit path costs the same with the Redis store as with the
// memory store: no Redis call, no allocation.
func BenchmarkHit(b *testing.B) {
	srv := redistest.Start(b)
	bk := newBank(time.Hour, 0)
	mem, err := tokencache.New(bk, tokencache.NewLimiter(tokencache.DefaultBudget),
		tokencache.Options{Route: "bc", Skew: 30 * time.Second, MaxWait: time.Second, FetchTimeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	r := newReplica(b, srv, bk, replicaOpts{skew: 30 * time.Second})
	for _, bc := range []struct {
		name string
		c    *tokencache.Cache
	}{{"memory", mem}, {"redis", r.cache}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			if _, _, err := bc.c.Get(ctx, ""); err != nil {
				b.Fatal(err)
			}
			before := r.ops.n.Load()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := bc.c.Get(ctx, ""); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(r.ops.n.Load()-before)/float64(b.N), "redis-ops/op")
		})
	}
}

func TestHitMakesNoRedisCall(t *testing.T) {
	srv := redistest.Start(t)
	r := newReplica(t, srv, newBank(time.Hour, 0), replicaOpts{skew: 30 * time.Second})
	ctx := context.Background()
	if _, _, err := r.cache.Get(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	before := r.ops.n.Load()
	if n := testing.AllocsPerRun(1000, func() { _, _, _ = r.cache.Get(ctx, "alice") }); n != 0 {
		t.Fatalf("hit allocates %v times", n)
	}
	if n := r.ops.n.Load() - before; n != 0 {
		t.Fatalf("1000 hits made %d Redis calls", n)
	}
}

// Redis operations per token expiry, per replica, with 3 replicas and
// requests on all of them.
func TestRedisOpsPerExpiry(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Second, 30*time.Millisecond)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, bk, replicaOpts{skew: 0}))
	}
	storm(t, rs, "", 30)
	const expiries = 3
	before := make([]int64, len(rs))
	for i, r := range rs {
		before[i] = r.ops.n.Load()
	}
	for range expiries {
		time.Sleep(1050 * time.Millisecond)
		storm(t, rs, "", 300)
	}
	if n := bk.n.Load(); n != 1+expiries {
		t.Fatalf("%d token requests, want %d", n, 1+expiries)
	}
	var total int64
	per := make([]float64, len(rs))
	for i, r := range rs {
		d := r.ops.n.Load() - before[i]
		total += d
		per[i] = float64(d) / expiries
	}
	t.Logf("Redis commands per expiry per replica: %v (all replicas: %.1f per expiry)", per, float64(total)/expiries)
	if avg := float64(total) / expiries / float64(len(rs)); avg > 10 {
		t.Fatalf("%.1f Redis commands per expiry per replica", avg)
	}
}

// Propagation: from the moment one replica's fetch returns to the moment a
// replica waiting for it has the new token (pub/sub notification path).
func BenchmarkPropagation(b *testing.B) {
	srv := redistest.Start(b)
	bk := newBank(time.Hour, 0)
	a := newReplica(b, srv, bk, replicaOpts{})
	c := newReplica(b, srv, bk, replicaOpts{})
	ra := a.shared.Route("prop", 5*time.Second)
	rc := c.shared.Route("prop", 5*time.Second)
	fresh := func(*tokencache.Token) bool { return true }
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		subject := "s" + strconv.Itoa(i)
		fetching := make(chan struct{})
		release := make(chan struct{})
		var fetched time.Time
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _, err := ra.Refresh(context.Background(), subject, 0, fresh, func(context.Context) (*tokencache.Token, error) {
				close(fetching)
				<-release
				fetched = time.Now()
				return &tokencache.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
			})
			if err != nil {
				b.Error(err)
			}
		})
		<-fetching
		wg.Go(func() {
			time.Sleep(5 * time.Millisecond) // let the waiter subscribe before the token lands
			close(release)
		})
		if _, _, err := rc.Refresh(context.Background(), subject, 0, fresh, func(context.Context) (*tokencache.Token, error) {
			b.Error("the waiting replica fetched")
			return nil, context.Canceled
		}); err != nil {
			b.Fatal(err)
		}
		got := time.Now()
		wg.Wait()
		lat = append(lat, got.Sub(fetched))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
