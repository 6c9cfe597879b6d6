package consentstore

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// pgConfig is the configuration of database on srv.
func pgConfig(srv *pgtest.Server, database string) PostgresConfig {
	return PostgresConfig{Host: srv.Host(), Port: srv.Port(), Database: database, User: pgtest.User,
		Password: srv.Password(), TLSMode: "disable", MaxConns: 4}
}

func postgresOpener(t *testing.T) opener {
	srv := pgtest.Start(t)
	cfg := pgConfig(srv, srv.NewDatabase(t))
	return func(t *testing.T) Store {
		s, err := OpenPostgres(context.Background(), cfg, testKey, true)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestPostgresStartupErrors(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	cfg := pgConfig(srv, srv.NewDatabase(t))

	t.Run("NotMigrated", func(t *testing.T) {
		_, err := OpenPostgres(ctx, cfg, testKey, false)
		if !errors.Is(err, ErrNotMigrated) || !strings.Contains(err.Error(), "tokenproxy store migrate") {
			t.Fatalf("unmigrated database: %v; want ErrNotMigrated naming tokenproxy store migrate", err)
		}
	})
	t.Run("MigrateThenOpen", func(t *testing.T) {
		applied, err := MigratePostgres(ctx, cfg)
		if err != nil || len(applied) != len(migrations()) {
			t.Fatalf("migrate: %v, %v", applied, err)
		}
		if again, err := MigratePostgres(ctx, cfg); err != nil || len(again) != 0 {
			t.Fatalf("second migrate applied %v, %v; want nothing", again, err)
		}
		s, err := OpenPostgres(ctx, cfg, testKey, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, sample("k"), 0); err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
	t.Run("WrongKey", func(t *testing.T) {
		_, err := OpenPostgres(ctx, cfg, ring(bytes.Repeat([]byte{9}, KeySize)), false)
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong key: %v; want ErrWrongKey", err)
		}
	})
	t.Run("WrongPassword", func(t *testing.T) {
		bad := cfg
		bad.Password = "not-the-password"
		_, err := OpenPostgres(ctx, bad, testKey, false)
		if !errors.Is(err, ErrPostgresAuth) || strings.Contains(err.Error(), bad.Password) {
			t.Fatalf("wrong password: %v; want ErrPostgresAuth without the password", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		bad := cfg
		bad.Port = freeTCPPort(t)
		bad.ConnectTimeout = 2 * time.Second
		_, err := OpenPostgres(ctx, bad, testKey, false)
		if !errors.Is(err, ErrPostgresUnreachable) {
			t.Fatalf("nothing listening: %v; want ErrPostgresUnreachable", err)
		}
	})
}

// TestPostgresDumpHoldsNoToken: pg_dump of the store shows neither token
// nor scope, and a value moved to another row does not open.
func TestPostgresDumpHoldsNoToken(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	cfg := pgConfig(srv, srv.NewDatabase(t))
	s, err := OpenPostgres(ctx, cfg, testKey, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, other := sample("plain"), sample("other")
	for _, x := range []*Consent{c, other} {
		if _, err := s.Put(ctx, x, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutPending(ctx, &Pending{State: "st-1", Route: "bpce", Subject: "plain", Verifier: "verifier-secret-value",
		Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command(pgtest.BinDir()+"/pg_dump", "--data-only", srv.DSN(cfg.Database)).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !bytes.Contains(dump, []byte("app-a")) {
		t.Fatalf("the dump does not hold the consents' rows:\n%s", dump)
	}
	for _, secretText := range []string{c.RefreshToken.Reveal(), c.AccessToken.Reveal(), "aisp", "verifier-secret-value"} {
		if bytes.Contains(dump, []byte(secretText)) {
			t.Fatalf("the dump holds %q in clear", secretText)
		}
	}
	// Move other's value onto c's row: it must not open.
	if _, err := s.pool.Exec(ctx, `UPDATE consents SET value = (SELECT value FROM consents WHERE subject = 'other') WHERE subject = 'plain'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, c.Key()); !errors.Is(err, errOpen) {
		t.Fatalf("moved value: %v; want it not to open", err)
	}
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestPostgresPending(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	s, err := OpenPostgres(ctx, pgConfig(srv, srv.NewDatabase(t)), testKey, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := &Pending{State: "abc", Route: "bpce", Owner: "app-a", Subject: "marc", Verifier: "v3rifier",
		RedirectURI: "https://tp.example/v1/callback", ReturnURL: "https://app.example/done", Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)}
	if err := s.PutPending(ctx, want); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakePending(ctx, "unknown"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown state: %v; want ErrNotFound", err)
	}
	// Concurrent takes: exactly one gets it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got []*Pending
	for range 6 {
		wg.Go(func() {
			p, err := s.TakePending(ctx, "abc")
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Error(err)
			}
			if err == nil {
				mu.Lock()
				got = append(got, p)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != 1 {
		t.Fatalf("%d takes succeeded; want exactly 1", len(got))
	}
	if p := got[0]; *p != *want && !(p.Expires.Equal(want.Expires) && p.Verifier == want.Verifier && p.ReturnURL == want.ReturnURL) {
		t.Fatalf("took %+v, want %+v", p, want)
	}
	if err := s.PutPending(ctx, &Pending{State: "old", Route: "bpce", Subject: "marc", Expires: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakePending(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired state: %v; want ErrNotFound", err)
	}
}

// TestPostgresCommitsWaitForTheFlush: the store's connections commit with
// synchronous_commit on even where the database's default is off.
func TestPostgresCommitsWaitForTheFlush(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	cfg := pgConfig(srv, srv.NewDatabase(t))
	s, err := OpenPostgres(ctx, cfg, testKey, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "ALTER DATABASE "+cfg.Database+" SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenPostgres(ctx, cfg, testKey, false); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v string
	if err := s.pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil || v != "on" {
		t.Fatalf("synchronous_commit = %q, %v; want on", v, err)
	}
}

// A database that lacks a migration below its highest one (two lines of
// development merged) reports the schema complete only up to the gap, and
// migrating fills the gap.
func TestPostgresMigrationGap(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Start(t)
	cfg := pgConfig(srv, srv.NewDatabase(t))
	if _, err := MigratePostgres(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pool, err := connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Undo migration 0002 as if this database had never had it.
	if _, err := pool.Exec(ctx, `DROP TABLE outbox; DELETE FROM schema_migrations WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	if v, err := schemaVersion(ctx, pool); err != nil || v != 1 {
		t.Fatalf("schema with a gap at 2: version %d %v; want 1", v, err)
	}
	if _, err := OpenPostgres(ctx, cfg, testKey, false); !errors.Is(err, ErrNotMigrated) {
		t.Fatalf("open over the gap: %v; want ErrNotMigrated", err)
	}
	applied, err := MigratePostgres(ctx, cfg)
	if err != nil || len(applied) != 1 || applied[0] != "0002_outbox" {
		t.Fatalf("migrate over the gap applied %v %v; want 0002_outbox", applied, err)
	}
	if v, err := schemaVersion(ctx, pool); err != nil || v != latestMigration() {
		t.Fatalf("after: version %d %v", v, err)
	}
}
