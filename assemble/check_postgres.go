package assemble

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
)

// CheckPostgresConsents checks the Postgres consent store of cfg for
// `tokenproxy check`, as a start-up would meet it and without changing
// it: the server answers, accepts the user and password, the connection's
// TLS is what tls.mode asks, the schema is this binary's version (or
// migrate_on_start will make it so) and the key is the store's. It returns
// the line's detail, or a *problem.FieldError naming the field to fix;
// ok is false when cfg has no Postgres consent store.
func CheckPostgresConsents(ctx context.Context, cfg *config.Config, o Options) (detail string, ok bool, err error) {
	if cfg.Consents == nil || cfg.Consents.Store.Postgres == nil {
		return "", false, nil
	}
	pg := cfg.Consents.Store.Postgres
	c, err := postgresConfig(ctx, pg, o)
	if err != nil {
		return "", true, err
	}
	st, err := consentstore.ProbePostgres(ctx, c)
	if err != nil {
		return "", true, postgresError(pg, err)
	}
	_, where := pgServerField(pg)
	detail = fmt.Sprintf("%s reachable, user %q authenticated, PostgreSQL %s, %s", where, pg.User, st.Server, tlsState(st))
	if pg.DSN != "" {
		detail = fmt.Sprintf("%s reachable, authenticated, PostgreSQL %s, %s", where, st.Server, tlsState(st))
	}
	switch {
	case st.Schema < st.Want && pg.MigrateOnStart:
		return detail + fmt.Sprintf(", schema version %d (this tokenproxy's: %d; migrate_on_start applies it, then records the key)", st.Schema, st.Want), true, nil
	case st.Schema < st.Want:
		return "", true, &problem.FieldError{Path: pgPath, Err: fmt.Errorf("%s; schema version %d, this tokenproxy needs %d", detail, st.Schema, st.Want),
			Fix: "run `tokenproxy store migrate --config FILE` as the role that owns the store's tables, or set " + pgPath + ".migrate_on_start: true"}
	}
	// The schema is current (or newer, which the opening reports): open
	// the store as the start-up does, without migrating, for the key check.
	noMigrate := *pg
	noMigrate.MigrateOnStart = false
	s, err := openPostgresConsents(ctx, &noMigrate, o)
	if err != nil {
		var fe *problem.FieldError
		if errors.As(err, &fe) {
			fe.Err = fmt.Errorf("%s; %w", detail, fe.Err)
		}
		return "", true, err
	}
	_ = s.Close()
	return detail + fmt.Sprintf(", schema version %d (this tokenproxy's), key matches", st.Schema), true, nil
}

// tlsState describes the connection's TLS for a check line.
func tlsState(st consentstore.PostgresStatus) string {
	switch {
	case st.TLS == "":
		return "not encrypted (tls.mode disable)"
	case st.Verified == "":
		return st.TLS + ", server certificate not verified (tls.mode require)"
	}
	return st.TLS + ", verified: " + st.Verified
}
