package cli_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
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

// TestMain lets a test run tokenproxy as a child process (runMain): the
// child is this test binary with TOKENPROXY_TEST_ARGS set.
func TestMain(m *testing.M) {
	if args := os.Getenv("TOKENPROXY_TEST_ARGS"); args != "" {
		os.Exit(cli.Execute(strings.Split(args, "\x1f")))
	}
	os.Exit(m.Run())
}

// runMain runs tokenproxy with args as a process of its own and returns its
// exit code and its stdout and stderr as one stream, as a terminal shows
// them: what a process-wide logger writes to the real stderr shows too.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0]) //nolint:gosec // G702: re-runs this test binary
	cmd.Env = append(os.Environ(), "TOKENPROXY_TEST_ARGS="+strings.Join(args, "\x1f"))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %v: %v\n%s", args, err, out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// checkLine is a line of check's report: a step with its verdict, a step's
// fix, or the closing verdict.
var checkLine = regexp.MustCompile(`^(\[(ok  |skip|warn|FAIL)\] \S+ +\S.*|\s+fix: \S.*|tokenproxy: check (failed|passed with warnings)|all checks passed)$`)

// With Redis's port closed, check's output is its report and nothing else:
// go-redis's own messages (connection pool errors) go to the log at debug
// level, never raw between the report's lines.
func TestCheckOutputWithRedisDown(t *testing.T) {
	f := newFixture(t)
	rs := redistest.Start(t)
	cfg := f.redisConfigFile(t, rs.Addr())
	rs.Stop()
	code, out := runMain(t, "check", "--config", cfg, "--timeout", "3s")
	if code != cli.ExitConfig {
		t.Fatalf("check with Redis's port closed: exit %d, want %d\n%s", code, cli.ExitConfig, out)
	}
	if !strings.Contains(out, "[FAIL] -              redis store") || !strings.Contains(out, "store.redis.addresses") {
		t.Fatalf("check does not report the store:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if !checkLine.MatchString(l) {
			t.Fatalf("a line that is not check's report:\n%s\nin:\n%s", l, out)
		}
	}
}
