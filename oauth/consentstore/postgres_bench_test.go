package consentstore

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

func benchPostgres(b *testing.B, maxConns int) *Postgres {
	b.Helper()
	srv := pgtest.Start(b)
	cfg := pgConfig(srv, srv.NewDatabase(b))
	cfg.MaxConns = maxConns
	s, err := OpenPostgres(context.Background(), cfg, testKey, true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkPostgresRefresh is the store side of a refresh, as
// BenchmarkBoltRefreshFsync: two sealed compare-and-set Puts (the intent,
// then the answer), each committed durably (synchronous_commit on, fsync
// on), by one writer and by 16 concurrent writers on distinct subjects.
func BenchmarkPostgresRefresh(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run("writers="+strconv.Itoa(writers), func(b *testing.B) {
			s := benchPostgres(b, writers)
			ctx := context.Background()
			cs := make([]*Consent, writers)
			gens := make([]uint64, writers)
			for i := range cs {
				cs[i] = sample("bench-" + strconv.Itoa(i))
				g, err := s.Put(ctx, cs[i], 0)
				if err != nil {
					b.Fatal(err)
				}
				gens[i] = g
			}
			var next atomic.Int64
			start := time.Now()
			b.ResetTimer()
			if writers == 1 {
				for range b.N {
					for range 2 {
						g, err := s.Put(ctx, cs[0], gens[0])
						if err != nil {
							b.Fatal(err)
						}
						gens[0] = g
					}
				}
			} else {
				b.SetParallelism((writers + 1) / 2) // GOMAXPROCS(2) × 8 = 16 goroutines
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1)-1) % writers
					c, gen := cs[i].Clone(), gens[i]
					for pb.Next() {
						for range 2 {
							g, err := s.Put(ctx, c, gen)
							if err != nil {
								b.Error(err)
								return
							}
							gen = g
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "refreshes/s")
		})
	}
}

// pgBulkLoad copies n sealed consents, owners app-0 … app-(owners-1), in one COPY.
func pgBulkLoad(b *testing.B, s *Postgres, n, owners int) {
	b.Helper()
	cs := make([]*Consent, n)
	for i := range cs {
		cs[i] = sample("psu-" + strconv.Itoa(i))
		cs[i].Owner = "app-" + strconv.Itoa(i%owners)
	}
	pgBulkLoadConsents(b, s, cs)
	if _, err := s.pool.Exec(context.Background(), "ANALYZE consents"); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPostgresList lists one owner's 100 consents on a route among
// 100,000, and visits all 100,000 (the census), decrypting each.
func BenchmarkPostgresList(b *testing.B) {
	s := benchPostgres(b, 4)
	pgBulkLoad(b, s, benchSubjects, 1000)
	ctx := context.Background()
	b.Run("owner=100of100000", func(b *testing.B) {
		for range b.N {
			l, err := s.List(ctx, Filter{Route: "bpce", Owner: "app-7"})
			if err != nil || len(l) != benchSubjects/1000 {
				b.Fatalf("%d consents, %v", len(l), err)
			}
		}
	})
	b.Run("census=100000", func(b *testing.B) {
		for range b.N {
			n := 0
			if err := s.Scan(ctx, Filter{AnyOwner: true}, func(*Consent) error { n++; return nil }); err != nil || n != benchSubjects {
				b.Fatalf("%d consents, %v", n, err)
			}
		}
	})
}
