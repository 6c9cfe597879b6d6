package consentstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// asRole is cfg connecting as role with password.
func asRole(cfg PostgresConfig, role, password string) PostgresConfig {
	cfg.User, cfg.Password = role, password
	return cfg
}

// execAs runs sql on cfg's database as cfg's user.
func execAs(t *testing.T, cfg PostgresConfig, sql string) {
	t.Helper()
	pc, err := cfg.poolConfig()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// The documented runtime grants (RuntimeGrants) are all a role needs to
// run on a store another role migrated, and they let it change no schema:
// an owner migrates, a runtime role that owns nothing gets the grants and
// goes through every store operation; migrating as it fails with
// ErrPostgresPermission, as does running without the grants.
func TestPostgresRuntimeGrants(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	db := srv.NewDatabase(t)
	owner, ownerPass := srv.NewRole(t)
	runtime, runtimePass := srv.NewRole(t)
	// The database's owner owns schema public (pg_database_owner), so it
	// may create the tables there.
	srv.Exec(t, "postgres", "ALTER DATABASE "+db+" OWNER TO "+owner)
	base := pgConfig(srv, db)
	ownerCfg, runtimeCfg := asRole(base, owner, ownerPass), asRole(base, runtime, runtimePass)

	if applied, err := MigratePostgres(ctx, ownerCfg); err != nil || len(applied) == 0 {
		t.Fatalf("migrating as the owner: %v, %v", applied, err)
	}
	t.Run("WithoutGrants", func(t *testing.T) {
		_, err := OpenPostgres(ctx, runtimeCfg, testKey, false)
		if !errors.Is(err, ErrPostgresPermission) {
			t.Fatalf("opening without the grants: %v; want ErrPostgresPermission", err)
		}
	})
	execAs(t, ownerCfg, RuntimeGrants(runtime))

	t.Run("PrivilegesAreExactlyTheDocumentedOnes", func(t *testing.T) {
		// Every table the migrations made is granted, schema_migrations
		// read-only; no sequence exists that would need a grant; the role
		// may not create anything in the schema.
		rows, err := pgxQuery(ctx, t, ownerCfg, `SELECT c.relname,
				has_table_privilege($1, c.oid, 'SELECT'), has_table_privilege($1, c.oid, 'INSERT'),
				has_table_privilege($1, c.oid, 'UPDATE'), has_table_privilege($1, c.oid, 'DELETE'),
				has_table_privilege($1, c.oid, 'TRUNCATE'), has_table_privilege($1, c.oid, 'REFERENCES'),
				has_table_privilege($1, c.oid, 'TRIGGER')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'p') ORDER BY 1`, runtime)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%v", r))
		}
		want := []string{
			// name, SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
			"[access_counts true true true true false false false]",
			"[consents true true true true false false false]",
			"[outbox true true true true false false false]",
			"[pending true true true true false false false]",
			"[schema_migrations true false false false false false false]",
			"[store_meta true true true true false false false]",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("the runtime role's privileges per relation:\n%s\nwant:\n%s\n(a migration added a table or sequence: add it to runtime_grants.sql)",
				strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		create, err := pgxQuery(ctx, t, ownerCfg, `SELECT has_schema_privilege($1, 'public', 'CREATE'), has_database_privilege($1, current_database(), 'CREATE')`, runtime)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%v", create[0]) != "[false false]" {
			t.Fatalf("the runtime role may create in the schema or database: %v", create[0])
		}
	})

	t.Run("EveryOperation", func(t *testing.T) {
		s, err := OpenPostgres(ctx, runtimeCfg, testKey, false)
		if err != nil {
			t.Fatalf("opening as the runtime role: %v", err)
		}
		defer s.Close()
		c := sample("marc")
		gen, err := s.Put(ctx, c, 0)
		if err != nil {
			t.Fatal(err)
		}
		if gen, err = s.Put(ctx, c, gen); err != nil || gen != 2 {
			t.Fatalf("update: %d, %v", gen, err)
		}
		if got, err := s.Get(ctx, c.Key()); err != nil || got.Generation != 2 {
			t.Fatalf("get: %+v, %v", got, err)
		}
		if l, err := s.List(ctx, Filter{AnyOwner: true}); err != nil || len(l) != 1 {
			t.Fatalf("list: %d, %v", len(l), err)
		}
		if err := s.Delete(ctx, c.Key()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, c.Key()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		pd := &Pending{State: "st", Route: "bpce", Owner: "app-a", Subject: "marc", Verifier: "v", Expires: time.Now().Add(time.Hour)}
		if err := s.PutPending(ctx, pd); err != nil {
			t.Fatal(err)
		}
		if got, err := s.TakePending(ctx, "st"); err != nil || got.Verifier != "v" {
			t.Fatalf("take pending: %+v, %v", got, err)
		}
		if n, ok, err := s.TakeAccess(ctx, c.Key(), "2025-06-10", 4, time.Now().Add(time.Hour)); err != nil || !ok || n != 1 {
			t.Fatalf("take access: %d, %v, %v", n, ok, err)
		}
		// The outbox of consent events.
		now := time.Now()
		if _, err := s.PutWithEvents(ctx, c, 0, []Event{NewEvent(EventActive, c, 1, "", now)}); err != nil {
			t.Fatalf("put with events: %v", err)
		}
		if err := s.DeleteWithEvents(ctx, c.Key(), []Event{NewEvent(EventDeleted, c, 1, "", now)}); err != nil {
			t.Fatalf("delete with events: %v", err)
		}
		if n, err := s.Append(ctx, NewExpiryEvent(EventExpiring, c, "", now)); err != nil || n != 1 {
			t.Fatalf("append: %d, %v", n, err)
		}
		items, err := s.Claim(ctx, "r1", now, time.Minute, 10)
		if err != nil || len(items) != 3 {
			t.Fatalf("claim: %d, %v", len(items), err)
		}
		for _, it := range items {
			if err := s.Settle(ctx, "r1", Settlement{ID: it.Event.ID, Delivered: []string{"https://app.example/h"}, Done: true}, now); err != nil {
				t.Fatalf("settle: %v", err)
			}
		}
		if n, _, err := s.Backlog(ctx); err != nil || n != 0 {
			t.Fatalf("backlog: %d, %v", n, err)
		}
		if n, err := s.Purge(ctx, now.Add(time.Second)); err != nil || n != 3 {
			t.Fatalf("purge: %d, %v", n, err)
		}
		if ran, err := s.RunExclusive(ctx, "job", func(context.Context) error { return nil }); err != nil || !ran {
			t.Fatalf("run exclusive: %v, %v", ran, err)
		}
	})

	t.Run("MayNotMigrate", func(t *testing.T) {
		_, err := MigratePostgres(ctx, runtimeCfg)
		if !errors.Is(err, ErrPostgresPermission) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("migrating as the runtime role: %v; want ErrPostgresPermission", err)
		}
		t.Log(err)
		if _, err := OpenPostgres(ctx, runtimeCfg, testKey, true); !errors.Is(err, ErrPostgresPermission) {
			t.Fatalf("opening with migrate_on_start as the runtime role: %v; want ErrPostgresPermission", err)
		}
	})
}

// pgxQuery returns the rows of sql on cfg's database as cfg's user.
func pgxQuery(ctx context.Context, t *testing.T, cfg PostgresConfig, sql string, args ...any) ([][]any, error) {
	t.Helper()
	pc, err := cfg.poolConfig()
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RuntimeGrants quotes the role as an identifier: a name with a quote in
// it stays one name.
func TestRuntimeGrantsQuotesTheRole(t *testing.T) {
	got := RuntimeGrants(`tp"x; DROP TABLE consents; --`)
	if strings.Contains(got, `:"role"`) || !strings.Contains(got, `TO "tp""x; DROP TABLE consents; --";`) {
		t.Fatalf("RuntimeGrants:\n%s", got)
	}
}

// docs/oauth.md quotes the grants as RuntimeGrants gives them, for the
// role tokenproxy_runtime.
func TestRuntimeGrantsAreTheDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/oauth.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(RuntimeGrants("tokenproxy_runtime"), "\n") {
		if strings.HasPrefix(line, "GRANT") && !strings.Contains(string(doc), "\n"+line+"\n") {
			t.Errorf("docs/oauth.md lacks the line %q", line)
		}
	}
}
