package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

const passcode = "correct-passcode-91x"

type fixture struct {
	dir, pfx, passFile string
	ca                 *pki.CA
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := pki.NewCA("cli test CA")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: t.TempDir(), ca: ca}
	c, err := ca.IssueClient("cli-client")
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(f.dir, "client", c, passcode)
	if err != nil {
		t.Fatal(err)
	}
	f.pfx = files.PFX
	f.passFile = filepath.Join(f.dir, "passcode")
	write(t, f.passFile, passcode)
	write(t, filepath.Join(f.dir, "user"), "user-abc")
	write(t, filepath.Join(f.dir, "pass"), "password-xyz-123")
	return f
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) config(t *testing.T, clientCert string) string {
	t.Helper()
	p := filepath.Join(f.dir, "tokenproxy.yaml")
	write(t, p, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    client_certificate:
%s
    token:
      username: {file: %s/user}
      password: {file: %s/pass}
`, clientCert, f.dir, f.dir))
	return p
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	log, logs := testlog.New(t)
	logs.ForbidStrings(passcode, "password-xyz-123", "wrong-passcode-77")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cli.Execute(args, cli.WithOutput(&out, &errb), cli.WithLogger(log), cli.WithContext(ctx))
	for _, s := range []string{passcode, "password-xyz-123", "wrong-passcode-77"} {
		if strings.Contains(out.String()+errb.String(), s) {
			t.Fatalf("a secret was printed:\n%s%s", out.String(), errb.String())
		}
	}
	return code, out.String(), errb.String()
}

func TestValidateAndStartupErrors(t *testing.T) {
	f := newFixture(t)
	other, _ := f.ca.IssueClient("other")
	_, otherKey, _ := pki.EncodePEM(other)
	mine, _ := f.ca.IssueClient("mine")
	mineCert, _, _ := pki.EncodePEM(mine)
	write(t, filepath.Join(f.dir, "mismatch.crt"), string(mineCert))
	write(t, filepath.Join(f.dir, "mismatch.key"), string(otherKey))
	now := time.Now()
	old, _ := f.ca.IssueClient("old", pki.WithValidity(now.Add(-72*time.Hour), now.Add(-24*time.Hour)))
	oldFiles, _ := pki.WriteFiles(f.dir, "old", old, passcode)
	write(t, filepath.Join(f.dir, "wrongpass"), "wrong-passcode-77")

	pkcs12 := func(file, pass string) string {
		return fmt.Sprintf("      pkcs12: {file: %s, passcode: {file: %s}}", file, pass)
	}
	tests := []struct {
		name, cert string
		code       int
		want       []string
	}{
		{"valid", pkcs12(f.pfx, f.passFile), 0, []string{"route bankingcircle", "configuration OK"}},
		{"wrong passcode", pkcs12(f.pfx, filepath.Join(f.dir, "wrongpass")), 2,
			[]string{"routes[0](bankingcircle).client_certificate.pkcs12.passcode", "passcode is wrong"}},
		{"missing file", pkcs12(filepath.Join(f.dir, "nope.pfx"), f.passFile), 2,
			[]string{"client_certificate.pkcs12", "nope.pfx", "does not exist"}},
		{"key mismatch", fmt.Sprintf("      pem: {cert_file: %s/mismatch.crt, key_file: %s/mismatch.key}", f.dir, f.dir), 2,
			[]string{"client_certificate.pem", "private key does not match"}},
		{"expired", pkcs12(oldFiles.PFX, f.passFile), 2,
			[]string{"client_certificate", "expired on", "renewed"}},
		{"passcode variable unset", fmt.Sprintf("      pkcs12: {file: %s, passcode: {env: TOKENPROXY_TEST_UNSET_PASSCODE}}", f.pfx), 2,
			[]string{"client_certificate.pkcs12.passcode", "TOKENPROXY_TEST_UNSET_PASSCODE", "set the environment variable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config(t, tc.cert)
			for _, cmd := range []string{"validate", "run"} {
				if cmd == "run" && tc.code == 0 {
					continue
				}
				code, out, errOut := run(t, cmd, "--config", cfg)
				if code != tc.code {
					t.Fatalf("%s: exit %d, want %d\n%s%s", cmd, code, tc.code, out, errOut)
				}
				for _, w := range tc.want {
					if !strings.Contains(out+errOut, w) {
						t.Fatalf("%s: output lacks %q:\n%s%s", cmd, w, out, errOut)
					}
				}
			}
		})
	}
}

func TestConfigErrorsExit2(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.dir, "bad.yaml")
	write(t, p, "routes:\n  - name: x\n    preset: bankingcircle-sandbox\n    tokn: {}\n")
	code, _, errOut := run(t, "validate", "--config", p)
	if code != 2 || !strings.Contains(errOut, `unknown key "tokn" in a route`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, _, errOut = run(t, "validate", "--config", filepath.Join(f.dir, "missing.yaml"))
	if code != 2 || !strings.Contains(errOut, "missing.yaml") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if code, _, _ := run(t, "validate"); code != cli.ExitUsage {
		t.Fatalf("no --config: exit %d", code)
	}
}

// A passcode's fix is the secret's, not the file format's.
func TestPasscodeFixFitsItsCause(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, fmt.Sprintf("      pkcs12: {file: %s, passcode: {env: TOKENPROXY_TEST_UNSET_PASSCODE}}", f.pfx))
	_, out, errOut := run(t, "validate", "--config", cfg)
	if strings.Contains(out+errOut, "check that the file is a PKCS#12") {
		t.Fatalf("a missing passcode variable gets the malformed-file fix:\n%s", errOut)
	}
}

// validate --skip-credentials runs the signer's own option check.
func TestSkipCredentialsChecksSigningOptions(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ name, signing, want string }{
		{"bad algorithm", "algorithm: rsa-md5", "signing.algorithm"},
		{"bad key_id template", "key_id: \"{nope}\"", "signing.key_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(f.dir, "signed.yaml")
			write(t, p, fmt.Sprintf(`
routes:
  - name: bg
    hosts: [psd2.bank.example]
    upstream: https://psd2.bank.example
    signing:
      profile: berlin-group
      %s
      key: {pkcs12: {file: %s, passcode: {file: %s}}}
`, tc.signing, f.pfx, f.passFile))
			code, _, errOut := run(t, "validate", "--skip-credentials", "--config", p)
			if code != cli.ExitConfig || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want %d naming %s:\n%s", code, cli.ExitConfig, tc.want, errOut)
			}
		})
	}
}

// Command-line mistakes exit with ExitUsage, whatever their wording.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"validate", "--nope"}, {"version", "extra"}} {
		if code, _, errOut := run(t, args...); code != cli.ExitUsage {
			t.Fatalf("%q: exit %d, want %d: %s", args, code, cli.ExitUsage, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "tokenproxy ") {
		t.Fatalf("%d %q", code, out)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The demo is a command of its own (cmd/tokenproxy-demo), not part of the
// production binary.
func TestNoDemoCommand(t *testing.T) {
	if code, _, _ := run(t, "demo"); code != cli.ExitUsage {
		t.Fatalf("tokenproxy demo: exit %d, want %d", code, cli.ExitUsage)
	}
}

// bpceRoutes is the routes: block the consent configuration tests share:
// one authorization_code route on BPCE presenting f's client certificate.
func (f *fixture) bpceRoutes() string {
	return fmt.Sprintf(`routes:
  - name: bpce
    hosts: [api.bpce.example]
    upstream: https://api.bpce.example
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
    token:
      type: authorization_code
      url: https://api.bpce.example/stet/psd2/oauth/token
      client_id: PSDFR-ACPR-13807
      auth_method: tls_client_auth
      authorize_url: https://api.bpce.example/stet/psd2/oauth/authorize
`, f.pfx, f.passFile)
}
