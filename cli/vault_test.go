package cli_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// AppRole login end to end, and a wrong secret_id: a clear error naming the
// method and role, never the secret, and exit status 2 at start-up.
func TestVaultAppRoleStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("approle")
	srv.EnableAuth(mount, "approle")
	kv := vaulttest.Unique("kv")
	srv.Mount(kv, "kv-v2")
	srv.Policy("tp-read-"+kv, fmt.Sprintf(`path "%s/data/*" { capabilities = ["read"] }
path "%s/metadata/*" { capabilities = ["read"] }`, kv, kv))
	roleID, secretID := srv.AppRole(mount, "payments", map[string]any{"token_policies": "tp-read-" + kv})
	f := newFixture(t)
	srv.PutKV(kv, "bank", map[string]any{"username": "user-abc", "password": "password-xyz-123", "passcode": passcode})
	write(t, filepath.Join(f.dir, "role_id"), roleID)
	write(t, filepath.Join(f.dir, "secret_id"), secretID)
	write(t, filepath.Join(f.dir, "bad_secret_id"), "00000000-dead-beef-0000-000000000000")
	cfg := func(secretFile string) string {
		p := filepath.Join(f.dir, "vault.yaml")
		write(t, p, fmt.Sprintf(`
vault:
  address: %s
  auth: {method: approle, approle: {mount: %s, role: payments, role_id: {file: %s}, secret_id: {file: %s}}}
listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    client_certificate:
      pkcs12: {file: %s, passcode: {vault: {mount: %s, path: bank, field: passcode}}}
    token:
      username: {vault: {mount: %s, path: bank, field: username}}
      password: {vault: {mount: %s, path: bank, field: password}}
`, srv.Addr, mount, filepath.Join(f.dir, "role_id"), secretFile, f.pfx, kv, kv, kv))
		return p
	}
	code, out, errOut := run(t, "validate", "--config", cfg(filepath.Join(f.dir, "secret_id")))
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("approle: exit %d\n%s%s", code, out, errOut)
	}
	for _, cmd := range []string{"validate", "run"} {
		code, out, errOut = run(t, cmd, "--config", cfg(filepath.Join(f.dir, "bad_secret_id")))
		if code != 2 || !strings.Contains(errOut, "approle") || !strings.Contains(errOut, "payments") {
			t.Fatalf("%s with a wrong secret_id: exit %d\n%s%s", cmd, code, out, errOut)
		}
		if strings.Contains(out+errOut, "dead-beef") || strings.Contains(out+errOut, secretID) {
			t.Fatalf("the secret_id was printed:\n%s", errOut)
		}
	}
}
