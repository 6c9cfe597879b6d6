package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// `tokenproxy check` prints one line for a Postgres consent store: the
// server reached, the user authenticated, the TLS in effect, the schema
// version against this binary's and the key check; or the field to fix and
// how. Against a real server with TLS.
func TestCheckPostgresConsents(t *testing.T) {
	srv := pgtest.StartTLS(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodKey, wrongKey := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	write("good.key", goodKey)
	write("wrong.key", wrongKey)
	write("pg.pass", srv.Password())
	write("wrong.pass", "not-the-password")
	migrated, fresh := srv.NewDatabase(t), srv.NewDatabase(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	runtime, runtimePass := srv.NewRole(t)
	write("runtime.pass", runtimePass)
	type store struct {
		port           int
		db, user, pass string
		key, tls       string
		migrateOnStart bool
	}
	cfgOf := func(s store) *config.Config {
		if s.port == 0 {
			s.port = srv.Port()
		}
		if s.user == "" {
			s.user = pgtest.User
		}
		if s.pass == "" {
			s.pass = "pg.pass"
		}
		if s.key == "" {
			s.key = "good.key"
		}
		if s.tls == "" {
			s.tls = "{mode: verify-full, ca_file: " + srv.CAFile() + "}"
		}
		yaml := fmt.Sprintf(`
routes:
  - name: bank
    hosts: [bank.example]
    upstream: https://bank.example
    client_certificate:
      pem: {cert_file: %[1]s/c.pem, key_file: %[1]s/c.pem}
    token:
      type: authorization_code
      url: https://bank.example/token
      client_id: app
      auth_method: tls_client_auth
      authorize_url: https://bank.example/authorize
consents:
  callback_url: http://127.0.0.1:9091/v1/callback
  store:
    postgres:
      host: 127.0.0.1
      port: %[2]d
      database: %[3]s
      user: %[4]s
      password: {file: %[1]s/%[5]s}
      key: {file: %[1]s/%[6]s}
      tls: %[7]s
      migrate_on_start: %[8]v
`, dir, s.port, s.db, s.user, s.pass, s.key, s.tls, s.migrateOnStart)
		cfg, err := config.Parse([]byte(yaml))
		if err != nil {
			t.Fatalf("%v\n%s", err, yaml)
		}
		return cfg
	}
	check := func(t *testing.T, s store) (string, bool) {
		t.Helper()
		var out bytes.Buffer
		a := assemble.New(cfgOf(s), assemble.Setup{Probe: true, ProbeTimeout: 5 * time.Second})
		defer a.Close()
		failed := checkConsents(context.Background(), a, &out)
		t.Logf("\n%s", out.String())
		for _, secret := range []string{srv.Password(), runtimePass, goodKey, wrongKey} {
			if strings.Contains(out.String(), secret) {
				t.Fatal("a secret was printed")
			}
		}
		if a.Consents != nil {
			t.Fatal("check left a consent store in the assembly")
		}
		return out.String(), failed
	}

	// Before the schema is migrated: a failure, or what migrate_on_start will do.
	out, failed := check(t, store{db: fresh})
	wantLine(t, out, failed, true, "[FAIL]", "postgres consent store", "consents.store.postgres:", "TLS 1.3", "schema version 0, this tokenproxy needs 2",
		"fix: run `tokenproxy store migrate --config FILE`")
	out, failed = check(t, store{db: fresh, migrateOnStart: true})
	wantLine(t, out, failed, false, "[ok  ]", "schema version 0 (this tokenproxy's: 2; migrate_on_start applies it")
	// check changed nothing.
	out, failed = check(t, store{db: fresh})
	wantLine(t, out, failed, true, "[FAIL]", "schema version 0")

	if _, err := consentstore.MigratePostgres(context.Background(), consentstore.PostgresConfig{Host: srv.Host(), Port: srv.Port(),
		Database: migrated, User: pgtest.User, Password: srv.Password(), TLSMode: "disable"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		s      store
		failed bool
		want   []string
	}{
		{"good", store{db: migrated}, false, []string{"[ok  ]", "postgres consent store",
			fmt.Sprintf("127.0.0.1:%d reachable", srv.Port()), `user "tokenproxy" authenticated`, "PostgreSQL 1",
			"TLS 1.3, verified: host name 127.0.0.1 and certificate chain", "schema version 2 (this tokenproxy's), key matches"}},
		{"good, unverified", store{db: migrated, tls: "{mode: require}"}, false, []string{"[ok  ]", "TLS 1.3, server certificate not verified (tls.mode require)"}},
		{"good, plain", store{db: migrated, tls: "{mode: disable}"}, false, []string{"[ok  ]", "not encrypted (tls.mode disable)"}},
		{"wrong key", store{db: migrated, key: "wrong.key"}, true, []string{"[FAIL]", "consents.store.postgres.key:", "reachable",
			"not the one this store was created with", "fix: give the key the store knows under that id"}},
		{"wrong password", store{db: migrated, pass: "wrong.pass"}, true, []string{"[FAIL]", "consents.store.postgres.password:",
			"refused the user or password", `fix: give the password of database user "tokenproxy"`}},
		{"unreachable", store{db: migrated, port: closedPort}, true, []string{"[FAIL]", "consents.store.postgres.host:", "unreachable",
			fmt.Sprintf("fix: check that PostgreSQL runs and accepts connections at 127.0.0.1:%d", closedPort)}},
		{"untrusted certificate", store{db: migrated, tls: "{mode: verify-full}"}, true, []string{"[FAIL]", "consents.store.postgres.tls.ca_file:",
			"not signed by a trusted CA", "fix: give the PEM file of the CA"}},
		{"runtime role without grants", store{db: migrated, user: runtime, pass: "runtime.pass"}, true, []string{"[FAIL]",
			"consents.store.postgres.user:", "lacks a privilege", "permission denied", "fix: ", "runtime grants"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, failed := check(t, tc.s)
			wantLine(t, out, failed, tc.failed, tc.want...)
		})
	}

	// No Postgres consent store: no line.
	var buf bytes.Buffer
	a := assemble.New(&config.Config{}, assemble.Setup{Probe: true})
	if checkConsents(context.Background(), a, &buf) || buf.Len() != 0 {
		t.Fatalf("no consents block: %q; want nothing checked", buf.String())
	}
}

func wantLine(t *testing.T, out string, failed, wantFailed bool, want ...string) {
	t.Helper()
	if failed != wantFailed {
		t.Fatalf("failed = %v; want %v\n%s", failed, wantFailed, out)
	}
	if n := strings.Count(out, "["); n != 1 {
		t.Fatalf("%d lines; want one:\n%s", n, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output:\n%s\nwant it to contain %q", out, w)
		}
	}
}
