package consentstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// DefaultRekeyBatch is how many values a rekey re-seals per transaction.
const DefaultRekeyBatch = 500

// Stale implements Rekeyer.
func (b *Bolt) Stale(_ context.Context) (int, error) {
	n := 0
	err := b.db.View(func(tx *bolt.Tx) error {
		b.eachSealed(tx, func(_, _ []byte, id string) {
			if id != b.ring.Newest() {
				n++
			}
		})
		return nil
	})
	return n, err
}

// Rekey implements Rekeyer. Each batch is one write transaction; the
// process that holds the file is the only writer, so no value changes
// under it.
func (b *Bolt) Rekey(ctx context.Context, batch int, progress func(RekeyStats)) (RekeyStats, error) {
	batch = max(batch, 1)
	var st RekeyStats
	for _, name := range [][]byte{bucketConsents, bucketPending} {
		var after []byte // the last key looked at
		for done := false; !done; {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			n := 0
			err := b.db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket(name)
				if bk == nil {
					done = true
					return nil
				}
				type update struct{ k, v []byte }
				var ups []update
				c := bk.Cursor()
				k, v := c.First()
				if after != nil {
					if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
						k, v = c.Next()
					}
				}
				for ; k != nil && len(ups) < batch; k, v = c.Next() {
					after = bytes.Clone(k)
					if valueKeyID(name, v) == b.ring.Newest() {
						continue
					}
					nv, err := b.reseal(name, k, v)
					if err != nil {
						return err
					}
					ups = append(ups, update{bytes.Clone(k), nv})
				}
				done = k == nil
				for _, u := range ups { // not while the cursor walks
					if err := bk.Put(u.k, u.v); err != nil {
						return err
					}
				}
				n = len(ups)
				return nil
			})
			if err != nil {
				return st, fmt.Errorf("re-sealing consent store %s: %w", b.path, err)
			}
			st.Resealed += n
			if progress != nil && n > 0 {
				progress(st)
			}
		}
	}
	var err error
	st.Remaining, err = b.Stale(ctx)
	return st, err
}

// reseal opens a stored value of bucket and seals it again under the
// newest key, its generation (or expiry) unchanged.
func (b *Bolt) reseal(bucket, k, v []byte) ([]byte, error) {
	if bytes.Equal(bucket, bucketPending) {
		if len(v) < 8 {
			return nil, errOpen
		}
		plain, err := b.ring.open(v[8:], pendingAD(k, v[:8]))
		if err != nil {
			return nil, fmt.Errorf("a started consent: %w", err)
		}
		return append(bytes.Clone(v[:8]), b.ring.seal(plain, pendingAD(k, v[:8]))...), nil
	}
	key, ok := splitKey(k)
	if !ok {
		return nil, errOpen
	}
	plain, gen, err := b.openValue(key, v)
	if err != nil {
		return nil, fmt.Errorf("consent for subject %q on route %s: %w", key.Subject, key.Route, err)
	}
	return b.sealValue(key, gen, plain), nil
}

// Stale implements Rekeyer.
func (p *Postgres) Stale(ctx context.Context) (int, error) {
	var n int
	err := p.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM consents WHERE key_id <> $1)
		+ (SELECT count(*) FROM pending WHERE key_id <> $1 AND expires > now())`, p.ring.Newest()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting values under older keys: %w", err)
	}
	return n, nil
}

// errRekeyRace means values kept being sealed under an older key while a
// rekey ran.
var errRekeyRace = errors.New("values keep being sealed under an older key: a replica still lists it first; give every replica the new key first, then rekey")

// Rekey implements Rekeyer, online: each batch is one transaction that
// locks the rows it re-seals (skipping rows a replica is writing at that
// moment, which that replica seals under its newest key) and keeps their
// generation, so a replica's compare-and-set is not disturbed.
func (p *Postgres) Rekey(ctx context.Context, batch int, progress func(RekeyStats)) (RekeyStats, error) {
	batch = max(batch, 1)
	var st RekeyStats
	stale, err := p.Stale(ctx)
	if err != nil {
		return st, err
	}
	budget := 2*stale + batch // a rekey that keeps finding work is racing a writer
	if _, err := p.pool.Exec(ctx, `DELETE FROM pending WHERE expires <= now()`); err != nil {
		return st, fmt.Errorf("removing expired pending consents: %w", err)
	}
	ids, err := p.keyIDs(ctx)
	if err != nil {
		return st, err
	}
	var older []string // read through the key_id index
	for id := range ids {
		if id != p.ring.Newest() {
			older = append(older, id)
		}
	}
	for _, step := range []func(context.Context, pgx.Tx, []string, int) (int, error){p.rekeyConsents, p.rekeyPending} {
		for {
			var n int
			err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
				var err error
				n, err = step(ctx, tx, older, batch)
				return err
			})
			if err != nil {
				return st, fmt.Errorf("re-sealing the consent store: %w", err)
			}
			if n == 0 {
				break
			}
			st.Resealed += n
			if progress != nil {
				progress(st)
			}
			if st.Resealed > budget {
				st.Remaining, _ = p.Stale(ctx)
				return st, errRekeyRace
			}
		}
	}
	st.Remaining, err = p.Stale(ctx)
	return st, err
}

// rekeyConsents re-seals up to batch consents sealed under the older keys.
func (p *Postgres) rekeyConsents(ctx context.Context, tx pgx.Tx, older []string, batch int) (int, error) {
	if len(older) == 0 {
		return 0, nil
	}
	rows, err := tx.Query(ctx, `SELECT route, owner, subject, generation, value FROM consents
		WHERE key_id = ANY($1) LIMIT $2 FOR UPDATE SKIP LOCKED`, older, batch)
	if err != nil {
		return 0, err
	}
	var b pgx.Batch
	var k Key
	var gen int64
	var v []byte
	if _, err := pgx.ForEachRow(rows, []any{&k.Route, &k.Owner, &k.Subject, &gen, &v}, func() error {
		plain, err := p.ring.open(v, aad(k, uint64(gen))) //nolint:gosec // G115: generations are positive (CHECK)
		if err != nil {
			return fmt.Errorf("consent for subject %q on route %s: %w", k.Subject, k.Route, err)
		}
		b.Queue(`UPDATE consents SET value = $4, key_id = $5 WHERE route = $1 AND owner = $2 AND subject = $3`,
			k.Route, k.Owner, k.Subject, p.ring.seal(plain, aad(k, uint64(gen))), p.ring.Newest()) //nolint:gosec // G115: as above
		return nil
	}); err != nil {
		return 0, err
	}
	if b.Len() == 0 {
		return 0, nil
	}
	return b.Len(), tx.SendBatch(ctx, &b).Close()
}

// rekeyPending re-seals up to batch live started consents not under the
// newest key.
func (p *Postgres) rekeyPending(ctx context.Context, tx pgx.Tx, _ []string, batch int) (int, error) {
	rows, err := tx.Query(ctx, `SELECT state, value FROM pending
		WHERE key_id <> $1 AND expires > now() LIMIT $2 FOR UPDATE SKIP LOCKED`, p.ring.Newest(), batch)
	if err != nil {
		return 0, err
	}
	var b pgx.Batch
	var state string
	var v []byte
	if _, err := pgx.ForEachRow(rows, []any{&state, &v}, func() error {
		plain, err := p.ring.open(v, pgPendingAAD(state))
		if err != nil {
			return fmt.Errorf("a started consent: %w", err)
		}
		b.Queue(`UPDATE pending SET value = $2, key_id = $3 WHERE state = $1`, state, p.ring.seal(plain, pgPendingAAD(state)), p.ring.Newest())
		return nil
	}); err != nil {
		return 0, err
	}
	if b.Len() == 0 {
		return 0, nil
	}
	return b.Len(), tx.SendBatch(ctx, &b).Close()
}
