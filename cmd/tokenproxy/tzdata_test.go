package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTimeZonesWithoutZoneinfo: the binary knows Europe/Berlin on a host
// without a time zone database (a distroless image): `validate` of a
// frequency_per_day route passes in a mount namespace where
// the system's zoneinfo directories and the build's GOROOT/lib/time are
// empty and ZONEINFO names no file. Go falls back on those whatever
// ZONEINFO says, so hiding them is what shows that the embedded copy
// (time/tzdata) answers.
func TestTimeZonesWithoutZoneinfo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	if err := exec.Command(unshare, "-rm", "true").Run(); err != nil {
		t.Skipf("no unprivileged mount namespace here: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenproxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A binary also looks in the GOROOT it was built with (lib/time/zoneinfo.zip).
	gr, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	goroot := strings.TrimSpace(string(gr))
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "tokenproxy.yaml")
	if err := os.WriteFile(cfg, []byte(`
routes:
  - name: bank
    hosts: [bank.example]
    upstream: https://bank.example
    client_certificate: {pem: {cert_file: qwac.pem, key_file: qwac.key}}
    frequency_per_day: {limit: 4, time_zone: Europe/Berlin}
    token:
      type: authorization_code
      url: https://bank.example/token
      client_id: app
      auth_method: tls_client_auth
      authorize_url: https://bank.example/authorize
consents:
  callback_url: https://tokenproxy.example/v1/callback
  store:
    bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		script := `for d in /usr/share/zoneinfo /usr/share/lib/zoneinfo /usr/lib/locale/TZ /etc/zoneinfo "$3/lib/time"; do
  [ -d "$d" ] && mount --bind "$0" "$d"; done
[ -e /usr/share/zoneinfo/Europe/Berlin ] && { echo "zoneinfo still visible"; exit 3; }
[ -e "$3/lib/time/zoneinfo.zip" ] && { echo "GOROOT's zoneinfo.zip still visible"; exit 3; }
exec "$1" validate --skip-credentials --config "$2"`
		c := exec.Command(unshare, "-rm", "sh", "-c", script, empty, bin, cfg, goroot)
		c.Env = append(os.Environ(), "ZONEINFO=/nonexistent/zoneinfo.zip")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := run(); err != nil {
		t.Fatalf("validate without a zoneinfo directory: %v\n%s", err, out)
	}
}
