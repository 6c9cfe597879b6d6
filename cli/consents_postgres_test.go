package cli_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
)

// A Postgres consent store's start-up errors name the field to fix: an
// unmigrated schema (and `tokenproxy store migrate`, which fixes it), a
// wrong key, a wrong password, a server nobody answers on.
func TestPostgresConsentStoreAtStartup(t *testing.T) {
	srv := pgtest.Start(t)
	db := srv.NewDatabase(t)
	f := newFixture(t)
	good, wrong := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	write(t, filepath.Join(f.dir, "good.key"), good)
	write(t, filepath.Join(f.dir, "wrong.key"), wrong)
	write(t, filepath.Join(f.dir, "pg.pass"), srv.Password())
	write(t, filepath.Join(f.dir, "wrong.pass"), "not-the-password")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := func(port int, pass, key string) string {
		p := filepath.Join(f.dir, "pg.yaml")
		write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
%sconsents:
  listen: 127.0.0.1:0
  callback_url: https://tokenproxy.example/v1/callback
  store:
    postgres:
      host: 127.0.0.1
      port: %d
      database: %s
      user: %s
      password: {file: %s/%s}
      key: {file: %s/%s}
      tls: {mode: disable}
      max_connections: 4
`, f.bpceRoutes(), port, db, pgtest.User, f.dir, pass, f.dir, key))
		return p
	}
	expect := func(t *testing.T, wantCode int, args []string, want ...string) {
		t.Helper()
		code, out, errOut := run(t, args...)
		t.Logf("%s: exit %d: %s%s", args[0], code, out, errOut)
		if code != wantCode {
			t.Fatalf("%s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out+errOut, w) {
				t.Fatalf("%s: output lacks %q:\n%s%s", strings.Join(args, " "), w, out, errOut)
			}
		}
		for _, s := range []string{good, wrong, srv.Password()} {
			if strings.Contains(out+errOut, s) {
				t.Fatal("a secret was printed")
			}
		}
	}
	ok := cfg(srv.Port(), "pg.pass", "good.key")
	expect(t, cli.ExitConfig, []string{"validate", "--config", ok}, "consents.store.postgres", "tokenproxy store migrate", "migrate_on_start")
	expect(t, cli.ExitOK, []string{"store", "migrate", "--config", ok}, "applied 0001_consents")
	expect(t, cli.ExitOK, []string{"store", "migrate", "--config", ok}, "up to date")
	expect(t, cli.ExitOK, []string{"validate", "--config", ok}, "configuration OK")
	expect(t, cli.ExitConfig, []string{"validate", "--config", cfg(srv.Port(), "pg.pass", "wrong.key")},
		"consents.store.postgres.key", "not the one this store was created with")
	expect(t, cli.ExitConfig, []string{"validate", "--config", cfg(srv.Port(), "wrong.pass", "good.key")},
		"consents.store.postgres.password", "refused the user or password")
	expect(t, cli.ExitConfig, []string{"run", "--config", cfg(closedPort, "pg.pass", "good.key")},
		"consents.store.postgres.host", "unreachable", fmt.Sprintf("127.0.0.1:%d", closedPort))
}
