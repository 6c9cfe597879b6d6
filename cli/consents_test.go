package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/cli"
)

// The consent store's key is checked at start-up: validate creates the
// store with one key; validate and run with another key, or none, stop with
// exit 2 naming consents.store.bbolt.key and never showing a key.
func TestConsentStoreKeyAtStartup(t *testing.T) {
	f := newFixture(t)
	good, wrong := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	write(t, filepath.Join(f.dir, "good.key"), good)
	write(t, filepath.Join(f.dir, "wrong.key"), wrong)
	cfg := func(key string) string {
		p := filepath.Join(f.dir, "oauth.yaml")
		write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
%sconsents:
  listen: 127.0.0.1:0
  callback_url: https://tokenproxy.example/v1/callback
  store:
    bbolt: {path: %s/consents.db, key: %s}
`, f.bpceRoutes(), f.dir, key))
		return p
	}
	if code, out, errOut := run(t, "validate", "--config", cfg("{file: "+f.dir+"/good.key}")); code != cli.ExitOK {
		t.Fatalf("validate with the store's key: exit %d\n%s%s", code, out, errOut)
	}
	t.Setenv("TP_TEST_NO_KEY", "")
	for _, tc := range []struct{ key, want string }{
		{"{file: " + f.dir + "/wrong.key}", "not the one this store was created with"},
		{"{env: TP_TEST_NO_KEY}", "TP_TEST_NO_KEY"},
	} {
		for _, cmd := range []string{"validate", "run"} {
			code, out, errOut := run(t, cmd, "--config", cfg(tc.key))
			if code != cli.ExitConfig || !strings.Contains(errOut, "consents.store.bbolt.key") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("%s with key %s: exit %d\n%s%s", cmd, tc.key, code, out, errOut)
			}
			if strings.Contains(out+errOut, good) || strings.Contains(out+errOut, wrong) {
				t.Fatal("a key was printed")
			}
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, "consents.db")); err != nil {
		t.Fatal(err)
	}
}
