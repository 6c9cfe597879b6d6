package consentstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// accessTaker is a store that keeps access counts.
type accessTaker interface {
	Store
	TakeAccess(ctx context.Context, k Key, day string, limit int, expires time.Time) (int, bool, error)
}

// TestTakeAccess: on bbolt and PostgreSQL, concurrent calls take exactly
// the limit, refusals count nothing, each consent and day has its own
// count, and a re-opened store (a restart) keeps it.
func TestTakeAccess(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) opener
	}{{"bbolt", boltOpener}, {"postgres", postgresOpener}} {
		t.Run(tc.name, func(t *testing.T) {
			open := tc.open(t)
			ctx := context.Background()
			s := open(t).(accessTaker)
			k := Key{Route: "bg", Owner: "app", Subject: "alice"}
			end := time.Now().Add(5 * time.Hour)
			var taken, refused atomic.Int64
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					_, ok, err := s.TakeAccess(ctx, k, "2025-06-10", 4, end)
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
				t.Fatalf("taken %d, refused %d; want 4, 16", taken.Load(), refused.Load())
			}
			for _, other := range []struct {
				k   Key
				day string
			}{{Key{Route: "bg", Owner: "", Subject: "alice"}, "2025-06-10"}, {Key{Route: "bg", Owner: "app", Subject: "bob"}, "2025-06-10"},
				{k, "2025-06-11"}} {
				if n, ok, err := s.TakeAccess(ctx, other.k, other.day, 4, end); err != nil || !ok || n != 1 {
					t.Fatalf("%+v %s: %d, %v, %v; want a first count", other.k, other.day, n, ok, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t).(accessTaker)
			defer s.Close()
			if n, ok, err := s.TakeAccess(ctx, k, "2025-06-10", 4, end); err != nil || ok || n != 4 {
				t.Fatalf("after a restart: %d, %v, %v; want 4 counted, refused", n, ok, err)
			}
			if n, ok, err := s.TakeAccess(ctx, Key{Route: "bg", Owner: "app", Subject: "bob"}, "2025-06-10", 4, end); err != nil || !ok || n != 2 {
				t.Fatalf("bob after a restart: %d, %v, %v; want the 2nd count", n, ok, err)
			}
		})
	}
}

// TestTakeAccessSweepsPastDays: a new day deletes the counts of days that
// ended an hour or more ago, so the table does not grow with the days.
func TestTakeAccessSweepsPastDays(t *testing.T) {
	srv := pgtest.Start(t)
	cfg := pgConfig(srv, srv.NewDatabase(t))
	ctx := context.Background()
	s, err := OpenPostgres(ctx, cfg, testKey, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := Key{Route: "bg", Owner: "app", Subject: "alice"}
	if _, _, err := s.TakeAccess(ctx, k, "2025-06-09", 4, time.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TakeAccess(ctx, k, "2025-06-10", 4, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM access_counts`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows (%v); want 1: the past day's row deleted", n, err)
	}

	b := boltOpener(t)(t).(*Bolt)
	defer b.Close()
	if _, _, err := b.TakeAccess(ctx, k, "2025-06-09", 4, time.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.TakeAccess(ctx, k, "2025-06-10", 4, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := b.TakeAccess(ctx, k, "2025-06-09", 4, time.Now().Add(-2*time.Hour)); err != nil || !ok || n != 1 {
		t.Fatalf("the past day after the sweep: %d, %v, %v; want it deleted (a first count)", n, ok, err)
	}
}
