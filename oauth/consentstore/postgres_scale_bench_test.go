package consentstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// The scale benchmark runs only when asked, since it fills a table:
//
//	TOKENPROXY_BENCH_CONSENTS=1000000 go test -run '^$' -bench PostgresScale -benchtime 20s -timeout 2h -v ./oauth/consentstore/
//
// Environment:
//
//	TOKENPROXY_BENCH_CONSENTS  how many consents the store holds (required)
//	TOKENPROXY_BENCH_PG_DSN    a database to use instead of a private server:
//	                           filled when empty, reused when it holds that many
//	TOKENPROXY_BENCH_WRITERS   the refresh runs' concurrent writers (default 1,8,16,32)
const (
	envConsents = "TOKENPROXY_BENCH_CONSENTS"
	envDSN      = "TOKENPROXY_BENCH_PG_DSN"
	envWriters  = "TOKENPROXY_BENCH_WRITERS"
)

// scaleKey is the store key of the benchmark's consents (hex: 07 × 32),
// for a tokenproxy pointed at a database the benchmark filled.
var scaleKey = bytes.Repeat([]byte{7}, consentstore.KeySize)

// scaleRoutes: an owner's consents go round these routes.
var scaleRoutes = []string{"bpce", "bnpp", "socgen", "lcl"}

// scaleLayout places n consents: owner o holds rows starts[o] …
// starts[o+1]-1, between 1 and 50 of them (uniform, from a hash of o), its
// j-th on route scaleRoutes[j mod 4]; row i is subject psu-i.
type scaleLayout struct{ starts []int }

func newScaleLayout(n int) scaleLayout {
	var l scaleLayout
	for i, o := 0, uint64(0); i < n; o++ {
		l.starts = append(l.starts, i)
		i += 1 + int(splitmix(o)%50)
	}
	l.starts = append(l.starts, n)
	return l
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func (l scaleLayout) owners() int { return len(l.starts) - 1 }

func (l scaleLayout) ownerOf(i int) int {
	return sort.Search(l.owners(), func(o int) bool { return l.starts[o+1] > i })
}

func (l scaleLayout) key(i int) consentstore.Key {
	o := l.ownerOf(i)
	return consentstore.Key{Route: scaleRoutes[(i-l.starts[o])%len(scaleRoutes)], Owner: "app-" + strconv.Itoa(o), Subject: "psu-" + strconv.Itoa(i)}
}

// scaleConsent is row i as a code exchange would have stored it, with
// tokens of the length banks issue.
func scaleConsent(l scaleLayout, i int, now time.Time) *consentstore.Consent {
	k := l.key(i)
	u := uint64(i) //nolint:gosec // G115: a row number, never negative
	tok := fmt.Sprintf("%016x%016x%016x%016x", splitmix(u), splitmix(u+1), splitmix(u+2), splitmix(u+3))
	return &consentstore.Consent{Route: k.Route, Owner: k.Owner, Subject: k.Subject, State: consentstore.Active,
		RefreshToken: secret.New("rt." + tok), AccessToken: secret.New("at." + tok), TokenType: "Bearer",
		AccessExpiry: now.Add(time.Hour), RefreshExpiry: now.Add(time.Duration(i%90) * 24 * time.Hour),
		Scopes: []string{"aisp", "extended_transaction_history"}, Created: now.Add(-time.Duration(i%1000) * time.Hour)}
}

// openScaleStore is the one place the benchmark opens the store.
func openScaleStore(ctx context.Context, cfg consentstore.PostgresConfig) (*consentstore.Postgres, error) {
	ring, err := consentstore.SingleKey(scaleKey)
	if err != nil {
		return nil, err
	}
	return consentstore.OpenPostgres(ctx, cfg, ring, true)
}

// scaleFixture is a Postgres store holding n consents laid out by layout.
type scaleFixture struct {
	cfg    consentstore.PostgresConfig
	layout scaleLayout
	n      int
}

func (f *scaleFixture) open(b *testing.B, maxConns int) *consentstore.Postgres {
	b.Helper()
	cfg := f.cfg
	cfg.MaxConns = maxConns
	s, err := openScaleStore(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func newScaleFixture(b *testing.B) *scaleFixture {
	b.Helper()
	n, _ := strconv.Atoi(os.Getenv(envConsents))
	if n <= 0 {
		b.Skip("set " + envConsents + "=N (e.g. 1000000) to fill a Postgres store with N consents and measure it")
	}
	ctx := context.Background()
	f := &scaleFixture{n: n, layout: newScaleLayout(n)}
	if dsn := os.Getenv(envDSN); dsn != "" {
		f.cfg = consentstore.PostgresConfig{DSN: dsn}
	} else {
		srv := pgtest.Start(b)
		f.cfg = consentstore.PostgresConfig{Host: srv.Host(), Port: srv.Port(), Database: srv.NewDatabase(b),
			User: pgtest.User, Password: srv.Password(), TLSMode: "disable"}
	}
	s := f.open(b, 2)
	defer s.Close()
	pool := consentstore.PostgresPool(s)
	var have int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM consents`).Scan(&have); err != nil {
		b.Fatal(err)
	}
	switch have {
	case n:
		b.Logf("reusing the %d consents in the database", n)
	case 0:
		f.fill(b, s)
	default:
		b.Fatalf("the database holds %d consents; want 0 (to fill) or %d", have, n)
	}
	var settings []string
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_sync_method"} {
		var v string
		if err := pool.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
			b.Fatal(err)
		}
		settings = append(settings, name+"="+v)
	}
	var size string
	if err := pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_total_relation_size('consents'))`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d consents, %d owners, table and indexes %s; %s", n, f.layout.owners(), size, strings.Join(settings, " "))
	return f
}

// fill copies the n consents in chunks of 100,000, then vacuums, analyses
// and checkpoints so that the measurements do not pay for the load.
func (f *scaleFixture) fill(b *testing.B, s *consentstore.Postgres) {
	b.Helper()
	ctx := context.Background()
	start, now := time.Now(), time.Now().UTC().Truncate(time.Second)
	for from := 0; from < f.n; from += 100_000 {
		i, to := from, min(f.n, from+100_000)
		if _, err := consentstore.PostgresCopy(ctx, s, func() *consentstore.Consent {
			if i == to {
				return nil
			}
			i++
			return scaleConsent(f.layout, i-1, now)
		}); err != nil {
			b.Fatal(err)
		}
	}
	copied := time.Since(start)
	for _, q := range []string{"VACUUM ANALYZE consents", "CHECKPOINT"} {
		if _, err := consentstore.PostgresPool(s).Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	b.Logf("filled %d consents in %s (COPY %s)", f.n, time.Since(start).Round(time.Millisecond), copied.Round(time.Millisecond))
}

// latencies collects per-operation durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, unit string) {
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	q := func(p float64) float64 {
		return float64(l.d[min(len(l.d)-1, int(p*float64(len(l.d))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms/"+unit)
	b.ReportMetric(q(0.99), "p99-ms/"+unit)
}

// BenchmarkPostgresScale measures a store of TOKENPROXY_BENCH_CONSENTS
// consents: refreshes by 1 to 32 concurrent writers on random subjects,
// each the store side of oauth's refresh (Get, then two durable
// compare-and-set Puts: the intent and the bank's answer); a caller's
// listing by owner and by owner and route; and oauth.TakeCensus.
func BenchmarkPostgresScale(b *testing.B) {
	f := newScaleFixture(b)
	writers := []int{1, 8, 16, 32}
	if w := os.Getenv(envWriters); w != "" {
		writers = nil
		for _, s := range strings.Split(w, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				b.Fatalf("%s: %q is not a number of writers", envWriters, s)
			}
			writers = append(writers, n)
		}
	}
	for _, w := range writers {
		b.Run("refresh/writers="+strconv.Itoa(w), func(b *testing.B) { benchScaleRefresh(b, f, w) })
	}
	b.Run("list/owner", func(b *testing.B) { benchScaleList(b, f, false) })
	b.Run("list/owner+route", func(b *testing.B) { benchScaleList(b, f, true) })
	b.Run("census", func(b *testing.B) {
		s := f.open(b, 2)
		ctx := context.Background()
		b.ReportAllocs()
		start := time.Now()
		for range b.N {
			c, err := oauth.TakeCensus(ctx, s, time.Now(), 7*24*time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			total := 0
			for _, m := range c.ByState {
				for _, k := range m {
					total += k
				}
			}
			if total != f.n {
				b.Fatalf("census counted %d consents, want %d", total, f.n)
			}
		}
		b.ReportMetric(float64(b.N*f.n)/time.Since(start).Seconds(), "consents/s")
	})
}

func benchScaleRefresh(b *testing.B, f *scaleFixture, writers int) {
	s := f.open(b, writers)
	ctx := context.Background()
	var next, conflicts atomic.Int64
	var lat latencies
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			var d []time.Duration
			defer func() { lat.add(d) }()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				err := scaleRefresh(ctx, s, f.layout.key(rnd.IntN(f.n)), "bench-"+strconv.Itoa(w))
				if errors.Is(err, consentstore.ErrConflict) { // two writers drew one subject: one wins, as in oauth
					conflicts.Add(1)
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				d = append(d, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errc:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(int64(b.N)-conflicts.Load())/elapsed.Seconds(), "refreshes/s")
	lat.report(b, "refresh")
	if c := conflicts.Load(); c > 0 {
		b.ReportMetric(float64(c), "conflicts")
	}
}

// scaleRefresh is what oauth's refresh asks of the store: read the
// consent, record the intent (compare-and-set), store the answer
// (compare-and-set on the intent's generation).
func scaleRefresh(ctx context.Context, s *consentstore.Postgres, k consentstore.Key, by string) error {
	c, err := s.Get(ctx, k)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	intent := c.Clone()
	intent.State, intent.IntentAt, intent.IntentBy = consentstore.Refreshing, now, by
	gen, err := s.Put(ctx, intent, c.Generation)
	if err != nil {
		return err
	}
	answer := intent.Clone()
	answer.State, answer.IntentAt, answer.IntentBy = consentstore.Active, time.Time{}, ""
	answer.AccessToken = secret.New(fmt.Sprintf("at.%x.%d", gen, now.UnixNano()))
	answer.AccessExpiry, answer.Refreshed, answer.Refreshes = now.Add(time.Hour), now, c.Refreshes+1
	_, err = s.Put(ctx, answer, gen)
	return err
}

// benchScaleList lists random owners' consents, on every route (the
// owner's 1 to 50) or on one route (a quarter of them), one caller at a time.
func benchScaleList(b *testing.B, f *scaleFixture, byRoute bool) {
	s := f.open(b, 2)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	d := make([]time.Duration, 0, b.N)
	rows := 0
	b.ResetTimer()
	for range b.N {
		o := rnd.IntN(f.layout.owners())
		flt := consentstore.Filter{Owner: "app-" + strconv.Itoa(o)}
		want := f.layout.starts[o+1] - f.layout.starts[o]
		if byRoute {
			flt.Route = scaleRoutes[0]
			want = (want + len(scaleRoutes) - 1) / len(scaleRoutes)
		}
		t0 := time.Now()
		l, err := s.List(ctx, flt)
		d = append(d, time.Since(t0))
		if err != nil || len(l) != want {
			b.Fatalf("owner %d: %d consents, want %d (%v)", o, len(l), want, err)
		}
		rows += len(l)
	}
	b.StopTimer()
	lat := latencies{d: d}
	lat.report(b, "list")
	b.ReportMetric(float64(rows)/float64(b.N), "consents/list")
}
