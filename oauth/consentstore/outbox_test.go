package consentstore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestOutbox, on bbolt and PostgreSQL: an event is appended with its
// consent write or not at all (a lost compare-and-set appends nothing),
// appending it again keeps one, a claim leases it (another claimer meets
// nothing until the lease ends), and a dispatcher that lost its lease
// still records the webhooks it delivered to but no longer settles it.
func TestOutbox(t *testing.T) {
	for name, open := range map[string]func(*testing.T) opener{"bolt": boltOpener, "postgres": postgresOpener} {
		t.Run(name, func(t *testing.T) {
			s := open(t)(t)
			defer s.Close()
			ctx := context.Background()
			ob, w := s.(Outbox), s.(EventWriter)
			c := sample("marc")
			now := time.Unix(1_800_000_000, 0).UTC()
			active := NewEvent(EventActive, c, 1, "", now)
			if _, err := w.PutWithEvents(ctx, c, 5, []Event{active}); !errors.Is(err, ErrConflict) {
				t.Fatalf("put at a wrong generation: %v", err)
			}
			if n, _, _ := ob.Backlog(ctx); n != 0 {
				t.Fatalf("a refused write appended %d events", n)
			}
			if _, err := w.PutWithEvents(ctx, c, 0, []Event{active}); err != nil {
				t.Fatal(err)
			}
			if n, err := ob.Append(ctx, active); err != nil || n != 0 {
				t.Fatalf("appending the event again: %d new, %v", n, err)
			}
			if n, oldest, _ := ob.Backlog(ctx); n != 1 || !oldest.Equal(now) {
				t.Fatalf("backlog %d, oldest %v", n, oldest)
			}
			got, err := ob.Claim(ctx, "r1", now, time.Minute, 10)
			if err != nil || len(got) != 1 || got[0].Event != active {
				t.Fatalf("claim: %+v, %v", got, err)
			}
			if again, _ := ob.Claim(ctx, "r2", now.Add(59*time.Second), time.Minute, 10); len(again) != 0 {
				t.Fatal("a leased event was claimed by another dispatcher")
			}
			got, err = ob.Claim(ctx, "r2", now.Add(time.Minute), time.Minute, 10)
			if err != nil || len(got) != 1 {
				t.Fatalf("claim after the lease: %d, %v", len(got), err)
			}
			// r1 comes back late: its delivery counts, its settlement does not.
			if err := ob.Settle(ctx, "r1", Settlement{ID: active.ID, Delivered: []string{"https://a.example/h"}, Done: true}, now); err != nil {
				t.Fatal(err)
			}
			if n, _, _ := ob.Backlog(ctx); n != 1 {
				t.Fatalf("a stale settlement settled the event (backlog %d)", n)
			}
			next := now.Add(2 * time.Minute)
			if err := ob.Settle(ctx, "r2", Settlement{ID: active.ID, Attempts: 1, NextAttempt: next}, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if early, _ := ob.Claim(ctx, "r3", next.Add(-time.Second), time.Minute, 10); len(early) != 0 {
				t.Fatal("claimed before its next attempt")
			}
			got, _ = ob.Claim(ctx, "r3", next, time.Minute, 10)
			if len(got) != 1 || got[0].Attempts != 1 || len(got[0].Delivered) != 1 || got[0].Delivered[0] != "https://a.example/h" {
				t.Fatalf("after a failed round: %+v", got)
			}
			if err := ob.Settle(ctx, "r3", Settlement{ID: active.ID, Done: true}, next); err != nil {
				t.Fatal(err)
			}
			if n, _, _ := ob.Backlog(ctx); n != 0 {
				t.Fatalf("backlog %d after settling", n)
			}
			if n, err := ob.Append(ctx, active); err != nil || n != 0 {
				t.Fatalf("a delivered event appended again: %d new, %v", n, err)
			}
			if n, err := ob.Purge(ctx, next.Add(time.Second)); err != nil || n != 1 {
				t.Fatalf("purge: %d, %v", n, err)
			}
		})
	}
}
