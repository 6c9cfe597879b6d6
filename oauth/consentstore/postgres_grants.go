package consentstore

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// runtimeGrantsSQL is runtime_grants.sql: the runtime role's privileges,
// the role written as the psql variable :"role".
//
//go:embed runtime_grants.sql
var runtimeGrantsSQL string

// RuntimeGrants returns the SQL that gives role (a login role that owns
// nothing) what tokenproxy needs to run on a store another role migrated:
// USAGE on schema public, SELECT, INSERT, UPDATE and DELETE on the tables
// consents, pending, store_meta and access_counts, and SELECT on schema_migrations, which
// the start-up reads for the schema version. Nothing else: that role cannot
// change the schema, so `tokenproxy store migrate` (or migrate_on_start)
// fails for it with ErrPostgresPermission. The owner runs it after each
// migration; it is the file runtime_grants.sql, which psql also runs:
// psql -v role=NAME -f runtime_grants.sql.
func RuntimeGrants(role string) string {
	return strings.ReplaceAll(runtimeGrantsSQL, `:"role"`, pgx.Identifier{role}.Sanitize())
}

// ErrPostgresPermission is the database user lacking a privilege the store
// needs (SQLSTATE 42501): migrating as a role that may not change the
// schema, or running as one without the runtime grants (RuntimeGrants).
var ErrPostgresPermission = errors.New("the database user lacks a privilege the consent store needs")

// permission marks a refused privilege with ErrPostgresPermission.
func permission(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" { // insufficient_privilege
		return fmt.Errorf("%w: %w", ErrPostgresPermission, err)
	}
	return err
}
