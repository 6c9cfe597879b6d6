package assemble

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
)

const pgPath = "consents.store.postgres"

// readRef resolves a secret reference at path p.
func readRef(ctx context.Context, p string, ref secret.Ref, o Options) (secret.Value, error) {
	src, err := ref.Open(o.vault())
	if err != nil {
		return secret.Value{}, &problem.FieldError{Path: p, Err: err}
	}
	v, err := src.Get(ctx)
	if err != nil {
		return secret.Value{}, &problem.FieldError{Path: p, Err: err, Fix: "make the secret available (" + src.String() + ")"}
	}
	return v, nil
}

// postgresConfig is the store's connection settings, the password read.
func postgresConfig(ctx context.Context, pg *config.PostgresStore, o Options) (consentstore.PostgresConfig, error) {
	c := consentstore.PostgresConfig{DSN: pg.DSN, Host: pg.Host, Port: pg.Port, Database: pg.Database, User: pg.User,
		MaxConns: pg.MaxConnections}
	if pg.DSN == "" {
		c.TLSMode = pg.TLSMode()
	}
	if pg.TLS != nil {
		c.CAFile, c.ServerName = pg.TLS.CAFile, pg.TLS.ServerName
	}
	if !pg.Password.IsZero() {
		v, err := readRef(ctx, pgPath+".password", pg.Password, o)
		if err != nil {
			return c, err
		}
		c.Password = v.Reveal()
	}
	return c, nil
}

// pgServerField is the field naming the server: dsn or host.
func pgServerField(pg *config.PostgresStore) (path, where string) {
	if pg.DSN != "" {
		return pgPath + ".dsn", "the dsn's server"
	}
	return pgPath + ".host", pg.Host + ":" + strconv.Itoa(pg.Port)
}

// postgresError names the field to fix for a failure to open the store.
func postgresError(pg *config.PostgresStore, err error) error {
	server, where := pgServerField(pg)
	switch {
	case errors.Is(err, consentstore.ErrPostgresAuth):
		return &problem.FieldError{Path: pgPath + ".password", Err: err,
			Fix: fmt.Sprintf("give the password of database user %q (and check user and pg_hba.conf)", pg.User)}
	case errors.Is(err, consentstore.ErrPostgresUnreachable):
		return &problem.FieldError{Path: server, Err: err, Fix: "check that PostgreSQL runs and accepts connections at " + where}
	case keyError(pgPath, pg.Keys, err) != nil:
		return keyError(pgPath, pg.Keys, err)
	case errors.Is(err, consentstore.ErrNotMigrated):
		return &problem.FieldError{Path: pgPath, Err: err}
	case errors.Is(err, consentstore.ErrPostgresTLS):
		return postgresTLSError(pg, err)
	case errors.Is(err, consentstore.ErrPostgresPermission):
		return &problem.FieldError{Path: pgPath + ".user", Err: err, Fix: fmt.Sprintf(
			"give user %q the runtime grants (docs/oauth.md, Least privilege); changing the schema (`tokenproxy store migrate`, migrate_on_start) needs the role that owns the store's tables", pg.User)}
	}
	return &problem.FieldError{Path: server, Err: err}
}

// postgresTLSError names the TLS field to fix: tls.ca_file for a
// certificate no trusted CA signed, tls.server_name for one issued to
// another name, tls.mode for a server without TLS (dsn: its sslrootcert
// and sslmode).
func postgresTLSError(pg *config.PostgresStore, err error) error {
	field := func(f string) string {
		if pg.DSN != "" && f != "server_name" {
			return pgPath + ".dsn"
		}
		return pgPath + ".tls." + f
	}
	switch {
	case errors.Is(err, consentstore.ErrPostgresCertUntrusted), errors.Is(err, consentstore.ErrPostgresCAFile):
		return &problem.FieldError{Path: field("ca_file"), Err: err,
			Fix: "give the PEM file of the CA that issued the server's certificate (a managed database's provider publishes its CA bundle)"}
	case errors.Is(err, consentstore.ErrPostgresCertName):
		return &problem.FieldError{Path: field("server_name"), Err: err,
			Fix: "connect by a name the certificate is valid for, or set tls.server_name to one of them"}
	case errors.Is(err, consentstore.ErrPostgresTLSRefused):
		return &problem.FieldError{Path: field("mode"), Err: err,
			Fix: "turn TLS on at the server (ssl = on, with a certificate); tls.mode: disable only where the network is trusted"}
	}
	return &problem.FieldError{Path: pgPath + ".tls", Err: err, Fix: "check the server's TLS set-up against tls.mode and tls.ca_file"}
}

// openPostgresConsents opens the Postgres consent store of pg.
func openPostgresConsents(ctx context.Context, pg *config.PostgresStore, o Options) (*consentstore.Postgres, error) {
	ring, err := openKeyring(ctx, pgPath, pg.Key, pg.Keys, o)
	if err != nil {
		return nil, err
	}
	c, err := postgresConfig(ctx, pg, o)
	if err != nil {
		return nil, err
	}
	s, err := consentstore.OpenPostgres(ctx, c, ring, pg.MigrateOnStart)
	if err != nil {
		return nil, postgresError(pg, err)
	}
	return s, nil
}

// MigrateConsents applies the Postgres consent store's embedded schema
// migrations that its database lacks and returns their names; an error
// when cfg has no consents.store.postgres block.
func MigrateConsents(ctx context.Context, cfg *config.Config, o Options) ([]string, error) {
	if cfg.Consents == nil || cfg.Consents.Store.Postgres == nil {
		return nil, problem.Field(pgPath, "missing; only the postgres consent store has schema migrations (bbolt and vault_kv need none)")
	}
	pg := cfg.Consents.Store.Postgres
	c, err := postgresConfig(ctx, pg, o)
	if err != nil {
		return nil, err
	}
	applied, err := consentstore.MigratePostgres(ctx, c)
	if err != nil {
		return nil, postgresError(pg, err)
	}
	return applied, nil
}
