package route

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestBankDay(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	for _, tc := range []struct {
		name, zone, at string // at in RFC 3339
		day, reset     string
		hours          float64 // length of the day t falls on, when not 0
	}{
		{"ordinary day", "Europe/Berlin", "2025-06-10T12:00:00+02:00", "2025-06-10", "2025-06-11T00:00:00+02:00", 24},
		{"just before midnight", "Europe/Berlin", "2025-06-10T23:59:59.999+02:00", "2025-06-10", "2025-06-11T00:00:00+02:00", 24},
		{"at midnight", "Europe/Berlin", "2025-06-11T00:00:00+02:00", "2025-06-11", "2025-06-12T00:00:00+02:00", 24},
		{"UTC late evening is tomorrow in Berlin", "Europe/Berlin", "2025-06-10T22:30:00Z", "2025-06-11", "2025-06-12T00:00:00+02:00", 24},
		{"spring forward: 23 hours", "Europe/Berlin", "2025-03-30T01:30:00+01:00", "2025-03-30", "2025-03-31T00:00:00+02:00", 23},
		{"after the jump", "Europe/Berlin", "2025-03-30T03:30:00+02:00", "2025-03-30", "2025-03-31T00:00:00+02:00", 23},
		{"fall back: 25 hours", "Europe/Berlin", "2025-10-26T02:30:00+01:00", "2025-10-26", "2025-10-27T00:00:00+01:00", 25},
		{"eve of fall back", "Europe/Berlin", "2025-10-25T23:00:00+02:00", "2025-10-25", "2025-10-26T00:00:00+02:00", 24},
		{"new year", "Europe/Berlin", "2025-12-31T23:00:00+01:00", "2025-12-31", "2026-01-01T00:00:00+01:00", 24},
		{"leap day", "Europe/Berlin", "2028-02-29T08:00:00+01:00", "2028-02-29", "2028-03-01T00:00:00+01:00", 24},
		// Midnight skipped: Santiago's clocks went from 23:59:59 to 01:00 on 2023-09-03.
		{"midnight skipped", "America/Santiago", "2023-09-02T23:30:00-04:00", "2023-09-02", "2023-09-03T01:00:00-03:00", 24},
		// Midnight twice: Santiago's clocks went from 23:59:59 back to 23:00 on 2023-04-01.
		{"back before midnight", "America/Santiago", "2023-04-01T23:30:00-04:00", "2023-04-01", "2023-04-02T00:00:00-04:00", 25},
		// Midnight twice: Havana's clocks went from 00:59:59 back to 00:00 on 2023-11-05; the day starts at the first.
		{"midnight twice", "America/Havana", "2023-11-04T23:30:00-04:00", "2023-11-04", "2023-11-05T00:00:00-04:00", 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := mustZone(t, tc.zone)
			at, err := time.Parse(time.RFC3339Nano, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			day, reset := BankDay(at, loc)
			want, _ := time.Parse(time.RFC3339, tc.reset)
			if day != tc.day || !reset.Equal(want) {
				t.Fatalf("BankDay(%s) = %s, %s; want %s, %s", tc.at, day, reset.Format(time.RFC3339), tc.day, tc.reset)
			}
			if tc.hours != 0 && tc.zone == "Europe/Berlin" {
				y, m, d := at.In(berlin).Date()
				if got := reset.Sub(dayStart(y, m, d, berlin)).Hours(); got != tc.hours {
					t.Fatalf("the day lasts %v hours, want %v", got, tc.hours)
				}
			}
		})
	}
}

// zones with DST changes at or around midnight, and one that skipped a day.
var fuzzZones = []string{"Europe/Berlin", "UTC", "America/Santiago", "America/Havana", "Asia/Beirut",
	"America/Asuncion", "Pacific/Apia", "Australia/Lord_Howe", "America/Sao_Paulo", "Asia/Tehran"}

// FuzzBankDay checks that reset is the first instant of the day after t's:
// later than t, the instant before it still on t's day, itself on a later day.
func FuzzBankDay(f *testing.F) {
	for _, s := range []int64{1743294600, 1761438600, 1693711800, 1680406200, 1325239200, 0, -1} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(2))
		f.Add(s, uint8(6))
	}
	locs := make([]*time.Location, len(fuzzZones))
	for i, z := range fuzzZones {
		locs[i] = mustZone(f, z)
	}
	f.Fuzz(func(t *testing.T, unix int64, zone uint8) {
		const span = 200 * 365 * 24 * 3600 // 1900 to 2100, about
		at := time.Unix(unix%span, 0)
		loc := locs[int(zone)%len(locs)]
		day, reset := BankDay(at, loc)
		if day != at.In(loc).Format(time.DateOnly) {
			t.Fatalf("%s: day %s, want %s", at, day, at.In(loc).Format(time.DateOnly))
		}
		if !reset.After(at) {
			t.Fatalf("%s in %s: reset %s is not after it", at, loc, reset)
		}
		if got := reset.Add(-time.Nanosecond).In(loc).Format(time.DateOnly); got != day {
			t.Fatalf("%s in %s: the instant before the reset %s is on %s, not %s", at, loc, reset.In(loc), got, day)
		}
		if got := reset.In(loc).Format(time.DateOnly); got <= day {
			t.Fatalf("%s in %s: the reset %s is on %s, not after %s", at, loc, reset.In(loc), got, day)
		}
		if reset.Sub(at) > 26*time.Hour+time.Second && loc.String() != "Pacific/Apia" {
			t.Fatalf("%s in %s: reset %s is more than a day away", at, loc, reset.In(loc))
		}
	})
}

// memCounter is an AccessCounter in memory, as the stores behave.
type memCounter struct {
	mu     sync.Mutex
	counts map[AccessKey]int
	err    error
}

func (c *memCounter) TakeAccess(_ context.Context, k AccessKey, limit int, _ time.Time) (int, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, false, c.err
	}
	if c.counts[k] >= limit {
		return c.counts[k], false, nil
	}
	c.counts[k]++
	return c.counts[k], true, nil
}

type countObserver struct {
	mu      sync.Mutex
	counted int
	refused map[string]int
}

func (o *countObserver) AccessCounted(string) { o.mu.Lock(); o.counted++; o.mu.Unlock() }
func (o *countObserver) AccessRefused(_, reason string) {
	o.mu.Lock()
	o.refused[reason]++
	o.mu.Unlock()
}

func TestCountAccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		berlin := mustZone(t, "Europe/Berlin")
		// synctest's clock starts at 2000-01-01 00:00 UTC (01:00 in Berlin).
		c := &memCounter{counts: map[AccessKey]int{}}
		obs := &countObserver{refused: map[string]int{}}
		r := &Route{Name: "bank"}
		r.SetSubjects(Subjects{Header: "Tokenproxy-Subject", Required: true, Key: func(caller, s string) (string, error) { return s, nil }})
		r.SetFrequency(Frequency{Limit: 4, Location: berlin, Methods: []string{"GET"}, Paths: []string{"/v1/accounts"},
			AttendedHeader: "psu-ip-address", Counter: c, Observer: obs})
		req := func(method, path, subject string, attended bool) *http.Request {
			q := httptest.NewRequest(method, "http://bank.example"+path, nil)
			q.Header.Set("Tokenproxy-Subject", subject)
			if attended {
				q.Header.Set("PSU-IP-Address", "192.0.2.7")
			}
			return q
		}
		for i := range 4 {
			if err := r.CountAccess(req("GET", "/v1/accounts/a1/balances", "alice", false), ""); err != nil {
				t.Fatalf("call %d: %v", i+1, err)
			}
		}
		err := r.CountAccess(req("GET", "/v1/accounts", "alice", false), "")
		var fe *FrequencyExceededError
		if !errors.As(err, &fe) || fe.Limit != 4 || fe.Subject != "alice" {
			t.Fatalf("5th call: %v", err)
		}
		if want := time.Date(2000, 1, 2, 0, 0, 0, 0, berlin); !fe.Reset.Equal(want) {
			t.Fatalf("reset %s, want %s", fe.Reset, want)
		}
		// Attended, other methods, other paths and other customers pass.
		for _, q := range []*http.Request{req("GET", "/v1/accounts", "alice", true), req("POST", "/v1/accounts", "alice", false),
			req("GET", "/v1/consents/c1/status", "alice", false), req("GET", "/v1/accounts", "bob", false)} {
			if err := r.CountAccess(q, ""); err != nil {
				t.Fatalf("%s %s: %v", q.Method, q.URL.Path, err)
			}
		}
		// Another owner's customer of the same name has a budget of its own.
		if err := r.CountAccess(req("GET", "/v1/accounts", "alice", false), "app2"); err != nil {
			t.Fatalf("owner app2: %v", err)
		}
		// The bank day ends at midnight in Berlin: 23:00 UTC.
		time.Sleep(time.Until(fe.Reset) - time.Nanosecond)
		if err := r.CountAccess(req("GET", "/v1/accounts", "alice", false), ""); !errors.As(err, &fe) {
			t.Fatalf("a nanosecond before midnight: %v", err)
		}
		time.Sleep(time.Nanosecond)
		if err := r.CountAccess(req("GET", "/v1/accounts", "alice", false), ""); err != nil {
			t.Fatalf("at midnight: %v", err)
		}
		// An unreachable counter refuses: never sent uncounted.
		c.err = errors.New("connection refused")
		var ce *AccessCountError
		if err := r.CountAccess(req("GET", "/v1/accounts", "carol", false), ""); !errors.As(err, &ce) {
			t.Fatalf("counter down: %v", err)
		}
		if obs.counted != 7 || obs.refused["exceeded"] != 2 || obs.refused["unavailable"] != 1 {
			t.Fatalf("observed %d counted, refused %v", obs.counted, obs.refused)
		}
	})
}

// TestCountAccessDSTDay walks the spring-forward day in Berlin (23 hours):
// the budget spent at 01:30 is back at the next midnight, 21.5 hours later.
func TestCountAccessDSTDay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		berlin := mustZone(t, "Europe/Berlin")
		start := time.Date(2025, 3, 30, 1, 30, 0, 0, berlin)
		var offset time.Duration
		base := time.Now()
		now := func() time.Time { return start.Add(time.Since(base) + offset) }
		c := &memCounter{counts: map[AccessKey]int{}}
		r := &Route{Name: "bank"}
		r.SetSubjects(Subjects{Header: "Tokenproxy-Subject", Key: func(caller, s string) (string, error) { return s, nil }})
		r.SetFrequency(Frequency{Limit: 1, Location: berlin, Methods: []string{"GET"}, AttendedHeader: "PSU-IP-Address", Counter: c, Now: now})
		q := httptest.NewRequest("GET", "http://bank.example/v1/accounts", nil)
		q.Header.Set("Tokenproxy-Subject", "alice")
		if err := r.CountAccess(q, ""); err != nil {
			t.Fatal(err)
		}
		var fe *FrequencyExceededError
		if err := r.CountAccess(q, ""); !errors.As(err, &fe) {
			t.Fatalf("2nd: %v", err)
		}
		if got := fe.Reset.Sub(now()); got != 21*time.Hour+30*time.Minute {
			t.Fatalf("reset in %s, want 21h30m (a 23-hour day)", got)
		}
		time.Sleep(21*time.Hour + 30*time.Minute)
		if err := r.CountAccess(q, ""); err != nil {
			t.Fatalf("next day: %v", err)
		}
	})
}
