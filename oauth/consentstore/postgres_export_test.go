package consentstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresCopy writes the consents next returns (until it returns nil)
// into p's table in one COPY, each sealed as Put seals a new consent
// (generation 1), so Get, List and Put open them as any other. For
// benchmark fixtures: a store fills one durable Put at a time.
func PostgresCopy(ctx context.Context, p *Postgres, next func() *Consent) (int64, error) {
	n, err := p.pool.CopyFrom(ctx, pgx.Identifier{"consents"}, []string{"route", "owner", "subject", "generation", "value", "key_id", "state", "refresh_expiry"},
		pgx.CopyFromFunc(func() ([]any, error) {
			c := next()
			if c == nil {
				return nil, nil
			}
			plain, err := encodeRecord(c)
			if err != nil {
				return nil, err
			}
			return []any{c.Route, c.Owner, c.Subject, int64(1), p.ring.seal(plain, aad(c.Key(), 1)), p.ring.Newest(), string(c.State), c.RefreshExpiry}, nil
		}))
	if err != nil {
		return n, fmt.Errorf("copying consents: %w", err)
	}
	return n, nil
}

// PostgresPool is p's connection pool, for benchmarks that look at the
// server (row counts, settings, VACUUM).
func PostgresPool(p *Postgres) *pgxpool.Pool { return p.pool }
