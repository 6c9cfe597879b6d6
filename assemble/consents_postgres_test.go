package assemble_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// pgStore is a consents.store.postgres block's varying part.
type pgStore struct {
	host, user, passFile string
	port                 int
	database             string
	tls                  string // the tls: block's YAML, "" for none
	migrate              bool
}

// postgresConsentsConfig is a configuration with an authorization_code
// route and a Postgres consent store, parsed and validated as a file is.
func postgresConsentsConfig(t *testing.T, dir string, st pgStore) *config.Config {
	t.Helper()
	kf := filepath.Join(dir, "consent.key")
	if err := os.WriteFile(kf, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsBlock := ""
	if st.tls != "" {
		tlsBlock = "\n      tls: " + st.tls
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
      host: %[2]s
      port: %[3]d
      database: %[4]s
      user: %[5]s
      password: {file: %[6]s}
      key: {file: %[7]s}
      max_connections: 2
      migrate_on_start: %[8]v%[9]s
`, dir, st.host, st.port, st.database, st.user, st.passFile, kf, st.migrate, tlsBlock)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	return cfg
}

// encrypted reports whether every connection the store holds to database
// is TLS, as the server sees them (pg_stat_ssl), and that there is one.
func encrypted(t *testing.T, srv *pgtest.Server, database string) bool {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	var all bool
	if err := c.QueryRow(ctx, `SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
		WHERE a.datname = $1 AND a.application_name = 'tokenproxy'`, database).Scan(&n, &all); err != nil {
		t.Fatal(err)
	}
	return n > 0 && all
}

// The consent store's TLS settings reach the connection from the
// configuration file: each mode against a server with TLS (certificate for
// 127.0.0.1 and localhost from the server's own CA) and one without; a
// failure names the tls field to fix and never holds the password.
func TestPostgresConsentStoreTLS(t *testing.T) {
	tlsSrv := pgtest.StartTLS(t)
	plainSrv := pgtest.Start(t)
	dir := t.TempDir()
	otherCA, err := pki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := filepath.Join(dir, "other-ca.pem")
	if err := otherCA.WriteCertFile(wrongCA); err != nil {
		t.Fatal(err)
	}
	rightCA := tlsSrv.CAFile()
	for _, tc := range []struct {
		name    string
		plain   bool   // against the server without TLS
		host    string // default 127.0.0.1
		tls     string
		field   string // the field a failure names; "" for success
		errIs   error
		wantTLS bool
	}{
		{name: "verify-full with the server's CA", tls: "{mode: verify-full, ca_file: " + rightCA + "}", wantTLS: true},
		{name: "verify-full by default", tls: "{ca_file: " + rightCA + "}", wantTLS: true},
		{name: "verify-full by host name", host: "localhost", tls: "{mode: verify-full, ca_file: " + rightCA + "}", wantTLS: true},
		{name: "verify-full with server_name", tls: "{mode: verify-full, ca_file: " + rightCA + ", server_name: localhost}", wantTLS: true},
		{name: "verify-full with another CA", tls: "{mode: verify-full, ca_file: " + wrongCA + "}",
			field: "consents.store.postgres.tls.ca_file", errIs: consentstore.ErrPostgresCertUntrusted},
		{name: "verify-full with system roots", tls: "{mode: verify-full}",
			field: "consents.store.postgres.tls.ca_file", errIs: consentstore.ErrPostgresCertUntrusted},
		{name: "verify-full with a wrong server_name", tls: "{mode: verify-full, ca_file: " + rightCA + ", server_name: db.example}",
			field: "consents.store.postgres.tls.server_name", errIs: consentstore.ErrPostgresCertName},
		{name: "verify-ca ignores the name", tls: "{mode: verify-ca, ca_file: " + rightCA + ", server_name: db.example}", wantTLS: true},
		{name: "verify-ca with another CA", tls: "{mode: verify-ca, ca_file: " + wrongCA + "}",
			field: "consents.store.postgres.tls.ca_file", errIs: consentstore.ErrPostgresCertUntrusted},
		{name: "require without a CA", tls: "{mode: require}", wantTLS: true},
		{name: "require with a CA file verifies the chain", tls: "{mode: require, ca_file: " + wrongCA + "}",
			field: "consents.store.postgres.tls.ca_file", errIs: consentstore.ErrPostgresCertUntrusted},
		{name: "a CA file that is not there", tls: "{mode: verify-full, ca_file: " + filepath.Join(dir, "missing.pem") + "}",
			field: "consents.store.postgres.tls.ca_file", errIs: consentstore.ErrPostgresCAFile},
		{name: "require against a server without TLS", plain: true, tls: "{mode: require}",
			field: "consents.store.postgres.tls.mode", errIs: consentstore.ErrPostgresTLSRefused},
		{name: "the default against a server without TLS", plain: true,
			field: "consents.store.postgres.tls.mode", errIs: consentstore.ErrPostgresTLSRefused},
		{name: "disable against a server without TLS", plain: true, tls: "{mode: disable}"},
		{name: "disable against a server with TLS", tls: "{mode: disable}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tlsSrv
			if tc.plain {
				srv = plainSrv
			}
			host := tc.host
			if host == "" {
				host = srv.Host()
			}
			pass := filepath.Join(t.TempDir(), "pg.pass")
			if err := os.WriteFile(pass, []byte(srv.Password()), 0o600); err != nil {
				t.Fatal(err)
			}
			db := srv.NewDatabase(t)
			cfg := postgresConsentsConfig(t, dir, pgStore{host: host, port: srv.Port(), database: db, user: pgtest.User,
				passFile: pass, tls: tc.tls, migrate: true})
			a := assemble.New(cfg, assemble.Setup{})
			defer a.Close()
			err := a.OpenConsents(context.Background())
			if err != nil && strings.Contains(err.Error(), srv.Password()) {
				t.Fatalf("the error holds the password: %v", err)
			}
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := encrypted(t, srv, db); got != tc.wantTLS {
					t.Fatalf("the store's connections encrypted: %v; want %v", got, tc.wantTLS)
				}
				return
			}
			var step *assemble.StepError
			var fe *problem.FieldError
			if !errors.As(err, &step) || step.Step != assemble.StepConsents || !errors.As(err, &fe) || fe.Path != tc.field || fe.Fix == "" {
				t.Fatalf("OpenConsents: %v; want a consents step error naming %s, with a fix", err, tc.field)
			}
			if !errors.Is(err, tc.errIs) || !errors.Is(err, consentstore.ErrPostgresTLS) {
				t.Fatalf("OpenConsents: %v; want %v", err, tc.errIs)
			}
			t.Logf("%v", err)
		})
	}
}
