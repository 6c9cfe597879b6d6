package cli_test

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/cli"
	"github.com/tokenproxy/tokenproxy/internal/redistest"
)

// redisConfigFile writes a configuration with the fixture's route and the
// shared store at addr.
func (f *fixture) redisConfigFile(t *testing.T, addr string) string {
	t.Helper()
	write(t, filepath.Join(f.dir, "redis.key"), base64.StdEncoding.EncodeToString(make([]byte, 32)))
	p := filepath.Join(f.dir, "redis.yaml")
	write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}
store:
  kind: redis
  redis:
    addresses: [%s]
    max_replicas: 2
    encryption_key: {file: %s/redis.key}
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
    token:
      username: {file: %s/user}
      password: {file: %s/pass}
`, addr, f.dir, f.pfx, f.passFile, f.dir, f.dir))
	return p
}

// validate checks that the shared store answers: with Redis reachable it
// passes; with Redis's port closed it fails naming the field and the fix,
// unless --skip-credentials says to check the configuration only.
func TestValidateSharedStore(t *testing.T) {
	f := newFixture(t)
	rs := redistest.Start(t)
	cfg := f.redisConfigFile(t, rs.Addr())
	if code, out, errOut := run(t, "validate", "--config", cfg); code != cli.ExitOK || !strings.Contains(out, "configuration OK") {
		t.Fatalf("validate with Redis running: exit %d\n%s%s", code, out, errOut)
	}
	rs.Stop()
	code, out, errOut := run(t, "validate", "--config", cfg)
	if code != cli.ExitConfig {
		t.Fatalf("validate with Redis's port closed: exit %d, want %d\n%s%s", code, cli.ExitConfig, out, errOut)
	}
	for _, w := range []string{"store.redis.addresses", rs.Addr(), "check that Redis runs", "--skip-credentials"} {
		if !strings.Contains(errOut, w) {
			t.Fatalf("validate with Redis's port closed: the message lacks %q:\n%s%s", w, out, errOut)
		}
	}
	if strings.Contains(out, "configuration OK") {
		t.Fatalf("validate says OK with Redis's port closed:\n%s", out)
	}
	if code, out, errOut := run(t, "validate", "--skip-credentials", "--config", cfg); code != cli.ExitOK {
		t.Fatalf("validate --skip-credentials with Redis's port closed: exit %d\n%s%s", code, out, errOut)
	}
}
