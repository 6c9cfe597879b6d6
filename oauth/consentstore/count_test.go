package consentstore

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"
)

// countCensus counts as a census of a store that cannot count does: by
// visiting every consent.
func countCensus(t *testing.T, s Store, expiringBy time.Time) *Counts {
	t.Helper()
	out := &Counts{ByState: map[string]map[State]int{}, Expiring: map[string]int{}}
	err := Visit(context.Background(), s, Filter{AnyOwner: true}, func(c *Consent) error {
		if out.ByState[c.Route] == nil {
			out.ByState[c.Route] = map[State]int{}
		}
		out.ByState[c.Route][c.State]++
		if c.State != Invalid && !c.RefreshExpiry.IsZero() && !c.RefreshExpiry.After(expiringBy) {
			out.Expiring[c.Route]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Postgres counts consents by route and state, and those expiring soon, in
// one aggregate over its clear columns: the same figures as a visit of every
// consent, kept up to date by every Put, and without opening a value.
func TestPostgresCountWithoutOpening(t *testing.T) {
	ctx := context.Background()
	s := postgresOpener(t)(t).(*Postgres)
	defer s.Close()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 30 {
		c := sample("psu-" + strconv.Itoa(i))
		c.Route = []string{"bpce", "ing"}[i%2]
		c.State = []State{Active, Active, Refreshing, Invalid, Active}[i%5]
		c.RefreshExpiry = base.Add(time.Duration(i) * 24 * time.Hour)
		if i%7 == 0 {
			c.RefreshExpiry = time.Time{} // the bank did not say
		}
		if _, err := s.Put(ctx, c, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A consent turns invalid: its row's state follows.
	c, err := s.Get(ctx, Key{"bpce", "app-a", "psu-2"})
	if err != nil {
		t.Fatal(err)
	}
	c.State = Invalid
	if _, err := s.Put(ctx, c, c.Generation); err != nil {
		t.Fatal(err)
	}
	by := base.Add(10 * 24 * time.Hour)
	want := countCensus(t, s, by)
	got, err := s.Count(ctx, by)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got.ByState, want.ByState, maps.Equal) || !maps.Equal(got.Expiring, want.Expiring) {
		t.Fatalf("Count %+v; a visit of every consent counts %+v", got, want)
	}
	if want.ByState["bpce"][Invalid] == 0 || want.Expiring["bpce"] == 0 {
		t.Fatalf("the fixture lacks invalid or expiring consents: %+v", want)
	}
	// No value is opened: with every value unreadable, Count still counts.
	if _, err := s.pool.Exec(ctx, `UPDATE consents SET value = '\x00'`); err != nil {
		t.Fatal(err)
	}
	if again, err := s.Count(ctx, by); err != nil || !maps.EqualFunc(again.ByState, want.ByState, maps.Equal) {
		t.Fatalf("Count over unreadable values: %+v %v", again, err)
	}
}
