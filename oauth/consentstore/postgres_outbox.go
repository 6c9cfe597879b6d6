package consentstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// appendEvents inserts evs absent from the outbox (by id).
func pgAppendEvents(ctx context.Context, db pgExec, evs []Event) (int, error) {
	n := 0
	for _, e := range evs {
		body, err := e.Body()
		if err != nil {
			return n, err
		}
		tag, err := db.Exec(ctx, `INSERT INTO outbox (id, type, created, body, next_attempt) VALUES ($1, $2, $3, $4, $3)
			ON CONFLICT (id) DO NOTHING`, e.ID, string(e.Type), e.Created, string(body))
		if err != nil {
			return n, fmt.Errorf("appending consent event %s: %w", e.ID, err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

// Append implements Outbox.
func (p *Postgres) Append(ctx context.Context, evs ...Event) (int, error) {
	if len(evs) == 1 {
		return pgAppendEvents(ctx, p.pool, evs)
	}
	var n int
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		n, err = pgAppendEvents(ctx, tx, evs)
		return err
	})
	return n, err
}

// PutWithEvents implements EventWriter: the consent row and the outbox
// rows in one transaction.
func (p *Postgres) PutWithEvents(ctx context.Context, c *Consent, expect uint64, evs []Event) (uint64, error) {
	var gen uint64
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		if gen, err = p.put(ctx, tx, c, expect); err != nil {
			return err
		}
		_, err = pgAppendEvents(ctx, tx, evs)
		return err
	})
	if err != nil {
		return 0, err
	}
	return gen, nil
}

// DeleteWithEvents implements EventWriter.
func (p *Postgres) DeleteWithEvents(ctx context.Context, k Key, evs []Event) error {
	return pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM consents WHERE route = $1 AND owner = $2 AND subject = $3`, k.Route, k.Owner, k.Subject); err != nil {
			return fmt.Errorf("deleting consent for subject %q on route %s: %w", k.Subject, k.Route, err)
		}
		_, err := pgAppendEvents(ctx, tx, evs)
		return err
	})
}

// Claim implements Outbox: one statement picks due events that no live
// lease holds, skipping rows another replica is claiming at that moment
// (FOR UPDATE SKIP LOCKED), and leases them to by.
func (p *Postgres) Claim(ctx context.Context, by string, now time.Time, lease time.Duration, n int) ([]*OutboxItem, error) {
	rows, err := p.pool.Query(ctx, `UPDATE outbox o SET lease_by = $1, lease_until = $3
		FROM (SELECT id FROM outbox
			WHERE done_at IS NULL AND next_attempt <= $2 AND (lease_until IS NULL OR lease_until <= $2)
			ORDER BY next_attempt LIMIT $4 FOR UPDATE SKIP LOCKED) due
		WHERE o.id = due.id
		RETURNING o.body, o.attempts, o.next_attempt, o.delivered`, by, now, now.Add(lease), n)
	if err != nil {
		return nil, fmt.Errorf("claiming consent events: %w", err)
	}
	var out []*OutboxItem
	var body string
	var it OutboxItem
	_, err = pgx.ForEachRow(rows, []any{&body, &it.Attempts, &it.NextAttempt, &it.Delivered}, func() error {
		x := it
		if err := jsonUnmarshal([]byte(body), &x.Event); err != nil {
			return err
		}
		out = append(out, &x)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming consent events: %w", err)
	}
	return out, nil
}

// Settle implements Outbox. The delivered webhooks are merged whoever
// holds the lease; the schedule changes only under by's lease.
func (p *Postgres) Settle(ctx context.Context, by string, s Settlement, now time.Time) error {
	var done any
	if s.Done {
		done = now
	}
	_, err := p.pool.Exec(ctx, `UPDATE outbox SET
			delivered = ARRAY(SELECT DISTINCT u FROM unnest(delivered || $2::text[]) u ORDER BY u),
			attempts = CASE WHEN lease_by = $3 AND done_at IS NULL THEN $4 ELSE attempts END,
			next_attempt = CASE WHEN lease_by = $3 AND done_at IS NULL THEN $5 ELSE next_attempt END,
			gave_up = CASE WHEN lease_by = $3 AND done_at IS NULL THEN $7 ELSE gave_up END,
			done_at = CASE WHEN lease_by = $3 AND done_at IS NULL THEN $6 ELSE done_at END,
			lease_by = CASE WHEN lease_by = $3 THEN NULL ELSE lease_by END,
			lease_until = CASE WHEN lease_by = $3 THEN NULL ELSE lease_until END
		WHERE id = $1`, s.ID, s.Delivered, by, s.Attempts, s.NextAttempt, done, s.GaveUp)
	if err != nil {
		return fmt.Errorf("settling consent event %s: %w", s.ID, err)
	}
	return nil
}

// Backlog implements Outbox.
func (p *Postgres) Backlog(ctx context.Context) (int, time.Time, error) {
	var n int
	var oldest *time.Time
	if err := p.pool.QueryRow(ctx, `SELECT count(*), min(created) FROM outbox WHERE done_at IS NULL`).Scan(&n, &oldest); err != nil {
		return 0, time.Time{}, fmt.Errorf("counting undelivered consent events: %w", err)
	}
	if oldest == nil {
		return n, time.Time{}, nil
	}
	return n, *oldest, nil
}

// Purge implements Outbox.
func (p *Postgres) Purge(ctx context.Context, before time.Time) (int, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM outbox WHERE done_at IS NOT NULL AND done_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("purging delivered consent events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// RunExclusive implements Exclusive with a session advisory lock taken
// without waiting (pg_try_advisory_lock) on a connection held for the job:
// of the replicas sharing the database one runs it, the others skip.
func (p *Postgres) RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error) {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("running %s once across replicas: %w", name, err)
	}
	defer conn.Release()
	h := fnv.New64a()
	h.Write([]byte("tokenproxy job " + name))
	key := int64(h.Sum64()) //nolint:gosec // G115: any 64 bits name the lock
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		return false, fmt.Errorf("running %s once across replicas: %w", name, err)
	}
	if !got {
		return false, nil
	}
	defer func() {
		// A connection whose unlock failed is closed, which releases the lock.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(context.Background())
		}
	}()
	return true, fn(ctx)
}

var errBadEvent = errors.New("an outbox event does not decode")
