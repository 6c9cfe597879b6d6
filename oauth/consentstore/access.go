package consentstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// Access counts: how many unattended calls a consent made in one bank day
// (a route's frequency_per_day), for deployments without Redis. A count is
// a plain number next to the consent's name, not sealed (it holds no
// secret); it is durable as the consents are (fsync, WAL flush), so a
// restart keeps it.

var bucketAccess = []byte("access_counts")

// accessSweeper remembers the last day expired counts were deleted, so the
// sweep runs once per day and store, not on every call.
type accessSweeper struct {
	mu   sync.Mutex
	last string
}

// due reports whether the counts of days before day should be swept now.
func (s *accessSweeper) due(day string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == day {
		return false
	}
	s.last = day
	return true
}

// TakeAccess counts one unattended call of k's consent in the bank day day
// when fewer than limit are counted and returns the count with it; at limit
// it counts nothing (taken false). The count is committed (fsync) before it
// returns. Counts of days that ended before expires' day are deleted, once
// a day. The file belongs to one process, which serialises the counts.
func (b *Bolt) TakeAccess(_ context.Context, k Key, day string, limit int, expires time.Time) (count int, taken bool, err error) {
	key := append(dbKey(k), append([]byte{0}, day...)...)
	now := b.clock()
	sweep := b.sweeper.due(day)
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketAccess)
		if err != nil {
			return err
		}
		if sweep {
			if err := sweepAccess(bk, now); err != nil {
				return err
			}
		}
		n := 0
		if v := bk.Get(key); len(v) == 12 {
			n = int(binary.BigEndian.Uint32(v[8:]))
		}
		if n >= limit {
			count = n
			return nil
		}
		v := make([]byte, 12)
		binary.BigEndian.PutUint64(v, uint64(expires.UnixNano()))
		binary.BigEndian.PutUint32(v[8:], uint32(n+1))
		count, taken = n+1, true
		return bk.Put(key, v)
	})
	if err != nil {
		return 0, false, fmt.Errorf("counting a consent's access in %s: %w", b.path, err)
	}
	return count, taken, nil
}

// sweepAccess deletes the counts whose day ended an hour or more before now.
func sweepAccess(bk *bolt.Bucket, now time.Time) error {
	var old [][]byte
	c := bk.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) != 12 || time.Unix(0, int64(binary.BigEndian.Uint64(v))).Add(time.Hour).Before(now) { //nolint:gosec // G115: a Unix time in nanoseconds
			old = append(old, k)
		}
	}
	for _, k := range old {
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// TakeAccess counts one unattended call of k's consent in the bank day day
// when fewer than limit are counted and returns the count with it; at limit
// it counts nothing (taken false). One statement decides, so replicas
// sharing the database never take more than limit between them. Rows of
// days that ended are deleted once a day per replica.
func (p *Postgres) TakeAccess(ctx context.Context, k Key, day string, limit int, expires time.Time) (count int, taken bool, err error) {
	if p.sweeper.due(day) {
		if _, err := p.pool.Exec(ctx, `DELETE FROM access_counts WHERE expires < now() - interval '1 hour'`); err != nil {
			return 0, false, fmt.Errorf("deleting past access counts: %w", permission(err))
		}
	}
	err = p.pool.QueryRow(ctx, `INSERT INTO access_counts AS a (route, owner, subject, day, count, expires)
		VALUES ($1, $2, $3, $4::date, 1, $6)
		ON CONFLICT (route, owner, subject, day) DO UPDATE SET count = a.count + 1 WHERE a.count < $5
		RETURNING count`, k.Route, k.Owner, k.Subject, day, limit, expires).Scan(&count)
	if errors.Is(err, pgx.ErrNoRows) {
		return limit, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("counting a consent's access in postgres: %w", permission(err))
	}
	return count, true, nil
}
