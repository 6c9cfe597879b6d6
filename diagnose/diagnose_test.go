package diagnose_test

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

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/diagnose"
	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const (
	user, password, passcode = "check-user", "check-password-881", "check-passcode-552"
)

type env struct {
	ca      *pki.CA
	emu     *bankingcircle.Server
	dir     string
	pfx     string
	caFile  string
	apiURL  string
	authURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca, err := pki.NewCA("check CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	emu, err := bankingcircle.New(bankingcircle.Config{ServerCert: sc, ClientCAs: ca.CertPool(), Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	e := &env{ca: ca, emu: emu, dir: t.TempDir(), apiURL: emu.APIURL(), authURL: emu.AuthURL()}
	client, _ := ca.IssueClient("check-client", pki.WithValidity(time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour)))
	files, err := pki.WriteFiles(e.dir, "client", client, passcode)
	if err != nil {
		t.Fatal(err)
	}
	e.pfx = files.PFX
	e.caFile = filepath.Join(e.dir, "ca.pem")
	if err := ca.WriteCertFile(e.caFile); err != nil {
		t.Fatal(err)
	}
	for n, v := range map[string]string{"user": user, "password": password, "passcode": passcode, "badpass": "not-the-passcode"} {
		if err := os.WriteFile(filepath.Join(e.dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) config(t *testing.T, edit func(*config.Route)) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
routes:
  - name: bc
    preset: bankingcircle-sandbox
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s/passcode}}
    token:
      url: %s/api/v1/authorizations/authorize
      username: {file: %s/user}
      password: {file: %s/password}
`, e.apiURL, e.caFile, e.pfx, e.dir, e.authURL, e.dir, e.dir)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg.Routes[0])
	}
	return cfg
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	other, _ := pki.NewCA("other CA")
	otherFile := filepath.Join(e.dir, "other.pem")
	if err := other.WriteCertFile(otherFile); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old, _ := e.ca.IssueClient("old", pki.WithValidity(now.Add(-72*time.Hour), now.Add(-time.Hour)))
	oldFiles, _ := pki.WriteFiles(e.dir, "old", old, passcode)

	tests := []struct {
		name    string
		edit    func(*config.Route)
		emu     func(*bankingcircle.Server)
		worst   diagnose.Verdict
		want    []string
		notWant string
	}{
		{name: "all good", worst: diagnose.OK, want: []string{"[ok  ] bc", "pkcs12 passcode", "client certificate accepted", "token", "probe", "GET /api/v1/accounts -> 200"}},
		{name: "wrong passcode", edit: func(r *config.Route) { r.ClientCert.PKCS12.Passcode.File = e.dir + "/badpass" },
			worst: diagnose.Fail, want: []string{"[FAIL] bc", "the passcode does not open", "fix: set the passcode"}},
		{name: "missing file", edit: func(r *config.Route) { r.ClientCert.PKCS12.File = e.dir + "/nope.pfx" },
			worst: diagnose.Fail, want: []string{"pkcs12 file", "no such file", "fix: check the path"}},
		{name: "expired certificate", edit: func(r *config.Route) { r.ClientCert.PKCS12.File = oldFiles.PFX },
			worst: diagnose.Fail, want: []string{"certificate", "expired on", "renewed certificate"}},
		{name: "we do not trust the server", edit: func(r *config.Route) { r.TLS.CAFile = otherFile },
			worst: diagnose.Fail, want: []string{"tls handshake", "does not trust the server's certificate", "fix: set tls.ca_file"}},
		{name: "server rejects our certificate", emu: func(s *bankingcircle.Server) { s.SetClientCAs(other.CertPool()) },
			worst: diagnose.Fail, want: []string{"tls handshake", "the server rejected our client certificate", "fix: use the certificate the provider issued"}},
		{name: "credentials rejected", emu: func(s *bankingcircle.Server) { s.SetCredentials(user, "changed") },
			worst: diagnose.Fail, want: []string{"token", "rejected the username or password (HTTP 401)", "fix: set token.username/password"}},
		{name: "IP not whitelisted", emu: func(s *bankingcircle.Server) { _ = s.SetAllowedIPs("192.0.2.10") },
			worst: diagnose.Fail, want: []string{"HTTP 403", "the provider saw the request come from 127.0.0.1", "your egress IP is probably not whitelisted"}},
		{name: "no access to accounts", emu: func(s *bankingcircle.Server) { s.SetNoAccountAccess(true) },
			worst: diagnose.Fail, want: []string{"-> 404", "the user has no access to accounts"}},
		{name: "DNS failure", edit: func(r *config.Route) { r.Upstream = "https://no-such-host.invalid" },
			worst: diagnose.Fail, want: []string{"dns upstream", "no-such-host.invalid", "fix: check the host name"}},
		{name: "TCP refused", edit: func(r *config.Route) { r.Upstream = "https://127.0.0.1:1" },
			worst: diagnose.Fail, want: []string{"tcp upstream", "refused", "fix: allow outbound traffic"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.emu.SetClientCAs(e.ca.CertPool())
			e.emu.SetCredentials(user, password)
			_ = e.emu.SetAllowedIPs()
			e.emu.SetNoAccountAccess(false)
			if tc.emu != nil {
				tc.emu(e.emu)
			}
			var out bytes.Buffer
			rep, err := diagnose.Run(context.Background(), e.config(t, tc.edit), "", &out, diagnose.Options{Timeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Worst != tc.worst {
				t.Fatalf("worst %v, want %v:\n%s", rep.Worst, tc.worst, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("report lacks %q:\n%s", w, out.String())
				}
			}
			for _, s := range []string{password, passcode, "changed"} {
				if strings.Contains(out.String(), s) {
					t.Fatalf("report prints a secret:\n%s", out.String())
				}
			}
		})
	}
}
