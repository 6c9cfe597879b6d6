package cli_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// Rotating a consent store's key from the command line, for bbolt and
// Postgres: a store sealed under key a; the new key b alone is refused,
// naming a; b listed first with a opens; `store rekey` re-seals everything;
// b alone then opens.
func TestStoreRekey(t *testing.T) {
	keyA, keyB := bytes.Repeat([]byte{0xa}, 32), bytes.Repeat([]byte{0xb}, 32)
	for _, tc := range []struct {
		name string
		// setup returns the consents.store block for a keys: list and what
		// fills the store under a keyring.
		setup func(t *testing.T, f *fixture) (store func(keys string) string, seed func(t *testing.T, ring *consentstore.Keyring))
	}{
		{"bbolt", func(t *testing.T, f *fixture) (func(string) string, func(*testing.T, *consentstore.Keyring)) {
			path := filepath.Join(f.dir, "consents.db")
			return func(keys string) string {
					return fmt.Sprintf("bbolt:\n      path: %s\n      keys:%s", path, keys)
				}, func(t *testing.T, ring *consentstore.Keyring) {
					s, err := consentstore.OpenBolt(path, ring)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					seedConsents(t, s)
				}
		}},
		{"postgres", func(t *testing.T, f *fixture) (func(string) string, func(*testing.T, *consentstore.Keyring)) {
			srv := pgtest.Start(t)
			db := srv.NewDatabase(t)
			write(t, filepath.Join(f.dir, "pg.pass"), srv.Password())
			pc := consentstore.PostgresConfig{Host: srv.Host(), Port: srv.Port(), Database: db, User: pgtest.User,
				Password: srv.Password(), TLSMode: "disable", MaxConns: 2}
			return func(keys string) string {
					return fmt.Sprintf("postgres:\n      host: 127.0.0.1\n      port: %d\n      database: %s\n      user: %s\n      password: {file: %s}\n      tls: {mode: disable}\n      migrate_on_start: true\n      keys:%s",
						srv.Port(), db, pgtest.User, filepath.Join(f.dir, "pg.pass"), keys)
				}, func(t *testing.T, ring *consentstore.Keyring) {
					s, err := consentstore.OpenPostgres(context.Background(), pc, ring, true)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Close()
					seedConsents(t, s)
				}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			write(t, filepath.Join(f.dir, "a.key"), hex.EncodeToString(keyA))
			write(t, filepath.Join(f.dir, "b.key"), hex.EncodeToString(keyB))
			store, seed := tc.setup(t, f)
			ring, err := consentstore.NewKeyring(consentstore.StoreKey{ID: "a", Key: keyA})
			if err != nil {
				t.Fatal(err)
			}
			seed(t, ring)
			// keyList lists keys given as id=file.
			keyList := func(keys ...string) string {
				var b strings.Builder
				for _, k := range keys {
					id, file, _ := strings.Cut(k, "=")
					fmt.Fprintf(&b, "\n        - {id: %s, key: {file: %s}}", id, filepath.Join(f.dir, file))
				}
				return b.String()
			}
			cfg := func(name string, ids ...string) string {
				p := filepath.Join(f.dir, name+".yaml")
				write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
%sconsents:
  listen: 127.0.0.1:0
  callback_url: https://tokenproxy.example/v1/callback
  store:
    %s
`, f.bpceRoutes(), store(keyList(ids...))))
				return p
			}
			expect := func(wantCode int, args []string, want ...string) {
				t.Helper()
				code, out, errOut := run(t, args...)
				if code != wantCode {
					t.Fatalf("%s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out, errOut)
				}
				for _, w := range want {
					if !strings.Contains(out+errOut, w) {
						t.Fatalf("%s: output lacks %q:\n%s%s", strings.Join(args, " "), w, out, errOut)
					}
				}
				for _, k := range [][]byte{keyA, keyB} {
					if strings.Contains(out+errOut, hex.EncodeToString(k)) {
						t.Fatal("a key was printed")
					}
				}
			}
			onlyB, both := cfg("b", "b=b.key"), cfg("ba", "b=b.key", "a=a.key")
			expect(cli.ExitConfig, []string{"validate", "--config", onlyB}, ".keys", `key id "a"`, "store rekey")
			expect(cli.ExitConfig, []string{"validate", "--config", cfg("wrong", "b=b.key", "a=b.key")}, ".keys", `key id "a"`, "not the one")
			expect(cli.ExitConfig, []string{"validate", "--config", cfg("bad-id", "b=b.key", "a/1=a.key")}, ".keys[1].id", "1 to 32")
			expect(cli.ExitOK, []string{"validate", "--config", both}, "configuration OK")
			expect(cli.ExitOK, []string{"store", "rekey", "--config", both, "--batch", "3"},
				"10 values to re-seal under key id \"b\"", "re-sealed 10 values; 0 left", "older keys can be removed")
			expect(cli.ExitOK, []string{"store", "rekey", "--config", both}, "0 values to re-seal")
			expect(cli.ExitOK, []string{"validate", "--config", onlyB}, "configuration OK")
		})
	}
}

func seedConsents(t *testing.T, s consentstore.Store) {
	t.Helper()
	for i := range 10 {
		c := &consentstore.Consent{Route: "bpce", Owner: "", Subject: "psu-" + strconv.Itoa(i), State: consentstore.Active,
			RefreshToken: secret.New("rt-" + strconv.Itoa(i)), Created: time.Now(), RefreshExpiry: time.Now().Add(90 * 24 * time.Hour)}
		if _, err := s.Put(context.Background(), c, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// A Vault KV consent store has nothing of tokenproxy's to re-seal; rekey
// says so instead of pretending.
func TestStoreRekeyVaultKV(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.dir, "v.yaml")
	write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
vault: {address: http://127.0.0.1:1, auth: {method: token, token: {file: %s}}}
%sconsents:
  listen: 127.0.0.1:0
  callback_url: https://tokenproxy.example/v1/callback
  store: {vault_kv: {path: tokenproxy/consents}}
`, f.passFile, f.bpceRoutes()))
	code, out, errOut := run(t, "store", "rekey", "--config", p)
	if code != cli.ExitConfig || !strings.Contains(out+errOut, "vault operator rotate") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
}

// A running tokenproxy holds its bbolt store, so it re-seals the store
// itself: started with the new key first, it re-seals every value in the
// background while it serves; afterwards the new key alone opens the store.
func TestRunReSealsItsBoltStore(t *testing.T) {
	keyA, keyB := bytes.Repeat([]byte{0xa}, 32), bytes.Repeat([]byte{0xb}, 32)
	f := newFixture(t)
	write(t, filepath.Join(f.dir, "a.key"), hex.EncodeToString(keyA))
	write(t, filepath.Join(f.dir, "b.key"), hex.EncodeToString(keyB))
	path := filepath.Join(f.dir, "consents.db")
	ring, err := consentstore.NewKeyring(consentstore.StoreKey{ID: "a", Key: keyA})
	if err != nil {
		t.Fatal(err)
	}
	s, err := consentstore.OpenBolt(path, ring)
	if err != nil {
		t.Fatal(err)
	}
	seedConsents(t, s)
	s.Close()
	cfg := func(name, keys string) string {
		p := filepath.Join(f.dir, name+".yaml")
		write(t, p, fmt.Sprintf(`
listen: {proxy: %s, admin: 'off'}
%sconsents:
  listen: %s
  callback_url: https://tokenproxy.example/v1/callback
  store:
    bbolt:
      path: %s
      keys: %s
`, freeAddr(t), f.bpceRoutes(), freeAddr(t), path, keys))
		return p
	}
	both := cfg("both", fmt.Sprintf("[{id: b, key: {file: %s/b.key}}, {id: a, key: {file: %s/a.key}}]", f.dir, f.dir))
	onlyB := cfg("b", fmt.Sprintf("[{id: b, key: {file: %s/b.key}}]", f.dir))

	log, logs := testlog.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var out syncBuffer
	go func() {
		done <- cli.Execute([]string{"run", "--config", both}, cli.WithOutput(&out, &out), cli.WithLogger(log), cli.WithContext(ctx))
	}()
	deadline := time.After(30 * time.Second)
	for logs.Count("consent store re-sealed") == 0 {
		select {
		case code := <-done:
			t.Fatalf("run exited %d:\n%s\n%s", code, out.String(), logs.String())
		case <-deadline:
			t.Fatalf("no background re-seal within 30 s:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if logs.Count(`"resealed": 10`) != 1 && logs.Count(`"resealed":10`) != 1 {
		t.Fatalf("want 10 values re-sealed:\n%s", logs.String())
	}
	cancel()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("run exited %d:\n%s", code, out.String())
	}
	if code, o, e := run(t, "validate", "--config", onlyB); code != cli.ExitOK {
		t.Fatalf("the new key alone after the background re-seal: exit %d\n%s%s", code, o, e)
	}
}
