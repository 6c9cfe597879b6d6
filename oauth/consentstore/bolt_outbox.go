package consentstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	// bucketOutbox holds every event by id, delivered ones until purged
	// (so that a census appending an event again keeps one).
	bucketOutbox = []byte("outbox")
	// bucketOutboxDue names the undelivered events (id -> nothing).
	bucketOutboxDue = []byte("outbox_due")
)

// boltOutboxRecord is an event in the bbolt outbox.
type boltOutboxRecord struct {
	Event     Event     `json:"event"`
	Attempts  int       `json:"attempts"`
	Next      time.Time `json:"next"`
	Delivered []string  `json:"delivered,omitempty"`
	DoneAt    time.Time `json:"done_at,omitzero"`
	GaveUp    bool      `json:"gave_up,omitempty"`
}

// boltLeases are the in-process leases of a bbolt outbox: the file
// belongs to one process, so its dispatchers share this table.
type boltLeases struct {
	mu     sync.Mutex
	leases map[string]boltLease
	// running names the exclusive jobs in progress (RunExclusive).
	running map[string]bool
}

type boltLease struct {
	by    string
	until time.Time
}

func (b *Bolt) leaseTable() *boltLeases {
	b.leasesOnce.Do(func() { b.leases = &boltLeases{leases: map[string]boltLease{}, running: map[string]bool{}} })
	return b.leases
}

// appendEvents adds evs absent from the outbox within tx.
func appendEvents(tx *bolt.Tx, evs []Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	ob, err := tx.CreateBucketIfNotExists(bucketOutbox)
	if err != nil {
		return 0, err
	}
	due, err := tx.CreateBucketIfNotExists(bucketOutboxDue)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range evs {
		if ob.Get([]byte(e.ID)) != nil {
			continue
		}
		v, err := json.Marshal(boltOutboxRecord{Event: e, Next: e.Created})
		if err != nil {
			return n, err
		}
		if err := ob.Put([]byte(e.ID), v); err != nil {
			return n, err
		}
		if err := due.Put([]byte(e.ID), nil); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Append implements Outbox.
func (b *Bolt) Append(_ context.Context, evs ...Event) (int, error) {
	var n int
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = appendEvents(tx, evs)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("appending consent events to %s: %w", b.path, err)
	}
	return n, nil
}

// PutWithEvents implements EventWriter: the consent and its events in one
// bbolt transaction.
func (b *Bolt) PutWithEvents(_ context.Context, c *Consent, expect uint64, evs []Event) (uint64, error) {
	return b.put(c, expect, func(tx *bolt.Tx) error {
		_, err := appendEvents(tx, evs)
		return err
	})
}

// DeleteWithEvents implements EventWriter.
func (b *Bolt) DeleteWithEvents(_ context.Context, k Key, evs []Event) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketConsents).Delete(dbKey(k)); err != nil {
			return err
		}
		_, err := appendEvents(tx, evs)
		return err
	})
}

// Claim implements Outbox: the leases are held in this process.
func (b *Bolt) Claim(_ context.Context, by string, now time.Time, lease time.Duration, n int) ([]*OutboxItem, error) {
	lt := b.leaseTable()
	var out []*OutboxItem
	err := b.db.View(func(tx *bolt.Tx) error {
		due, ob := tx.Bucket(bucketOutboxDue), tx.Bucket(bucketOutbox)
		if due == nil || ob == nil {
			return nil
		}
		lt.mu.Lock()
		defer lt.mu.Unlock()
		c := due.Cursor()
		for k, _ := c.First(); k != nil && len(out) < n; k, _ = c.Next() {
			if l, ok := lt.leases[string(k)]; ok && l.until.After(now) {
				continue
			}
			var r boltOutboxRecord
			if err := json.Unmarshal(ob.Get(k), &r); err != nil {
				return fmt.Errorf("outbox event %s: %w", k, err)
			}
			if r.Next.After(now) {
				continue
			}
			lt.leases[string(k)] = boltLease{by: by, until: now.Add(lease)}
			out = append(out, &OutboxItem{Event: r.Event, Attempts: r.Attempts, NextAttempt: r.Next, Delivered: r.Delivered})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming consent events in %s: %w", b.path, err)
	}
	return out, nil
}

// Settle implements Outbox.
func (b *Bolt) Settle(_ context.Context, by string, s Settlement, now time.Time) error {
	lt := b.leaseTable()
	lt.mu.Lock()
	held := lt.leases[s.ID].by == by
	lt.mu.Unlock()
	err := b.db.Update(func(tx *bolt.Tx) error {
		ob, due := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutboxDue)
		if ob == nil || due == nil {
			return nil
		}
		v := ob.Get([]byte(s.ID))
		if v == nil {
			return nil
		}
		var r boltOutboxRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		for _, u := range s.Delivered {
			if !slices.Contains(r.Delivered, u) {
				r.Delivered = append(r.Delivered, u)
			}
		}
		if held && r.DoneAt.IsZero() {
			r.Attempts, r.Next = s.Attempts, s.NextAttempt
			if s.Done {
				r.DoneAt, r.GaveUp = now, s.GaveUp
				if err := due.Delete([]byte(s.ID)); err != nil {
					return err
				}
			}
		}
		nv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return ob.Put([]byte(s.ID), nv)
	})
	if err != nil {
		return fmt.Errorf("settling consent event %s in %s: %w", s.ID, b.path, err)
	}
	if held {
		lt.mu.Lock()
		delete(lt.leases, s.ID)
		lt.mu.Unlock()
	}
	return nil
}

// Backlog implements Outbox.
func (b *Bolt) Backlog(context.Context) (int, time.Time, error) {
	var n int
	var oldest time.Time
	err := b.db.View(func(tx *bolt.Tx) error {
		due, ob := tx.Bucket(bucketOutboxDue), tx.Bucket(bucketOutbox)
		if due == nil || ob == nil {
			return nil
		}
		return due.ForEach(func(k, _ []byte) error {
			var r boltOutboxRecord
			if err := json.Unmarshal(ob.Get(k), &r); err != nil {
				return err
			}
			n++
			if oldest.IsZero() || r.Event.Created.Before(oldest) {
				oldest = r.Event.Created
			}
			return nil
		})
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("counting undelivered consent events in %s: %w", b.path, err)
	}
	return n, oldest, nil
}

// Purge implements Outbox.
func (b *Bolt) Purge(_ context.Context, before time.Time) (int, error) {
	n := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bucketOutbox)
		if ob == nil {
			return nil
		}
		var gone [][]byte
		err := ob.ForEach(func(k, v []byte) error {
			var r boltOutboxRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if !r.DoneAt.IsZero() && r.DoneAt.Before(before) {
				gone = append(gone, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := ob.Delete(k); err != nil {
				return err
			}
		}
		n = len(gone)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging delivered consent events in %s: %w", b.path, err)
	}
	return n, nil
}

// RunExclusive implements Exclusive: a bbolt file belongs to one process,
// so an in-process flag makes the job run once at a time.
func (b *Bolt) RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	lt := b.leaseTable()
	lt.mu.Lock()
	if lt.running[name] {
		lt.mu.Unlock()
		return false, nil
	}
	lt.running[name] = true
	lt.mu.Unlock()
	defer func() {
		lt.mu.Lock()
		delete(lt.running, name)
		lt.mu.Unlock()
	}()
	return true, fn(ctx)
}
