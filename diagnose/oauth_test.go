package diagnose_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/diagnose"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// `tokenproxy check` probes each OAuth2 grant's token endpoint: a real
// client_credentials request, and for authorization_code a made-up refresh
// token the bank must refuse with invalid_grant. A wrong client secret fails
// the step, naming the route and never the secret.
func TestCheckOAuthGrants(t *testing.T) {
	ca, err := pki.NewCA("check CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sc, _ := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	qwac, _ := ca.IssueClient("tpp QWAC")
	files, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	const good, bad = "cc-secret-Qw81", "not-the-secret-77"
	for n, v := range map[string]string{"good": good, "bad": bad} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	emu := stet.New(stet.Config{OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{
		"stet-app": {Method: "tls_client_auth", CertSubject: "tpp QWAC"},
		"cc-app":   {Method: "client_secret_basic", Secret: good},
	}}})
	srv := httptest.NewUnstartedServer(emu)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u := srv.URL + "/stet/psd2/oauth/"
	route := func(name, token string) string {
		return fmt.Sprintf(`
  - name: %s
    hosts: [%s.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    token:
      url: %stoken
%s`, name, name, srv.URL, caFile, files.Cert, files.Key, u, token)
	}
	y := "routes:" +
		route("consent", "      type: authorization_code\n      client_id: stet-app\n      auth_method: tls_client_auth\n      authorize_url: "+u+"authorize\n") +
		route("cc", "      type: client_credentials\n      client_id: cc-app\n      client_secret: {file: "+dir+"/good}\n") +
		route("ccbad", "      type: client_credentials\n      client_id: cc-app\n      client_secret: {file: "+dir+"/bad}\n") +
		"consents: {callback_url: https://tp.example/v1/callback, store: {bbolt: {path: " + dir + "/c.db, key: {env: TP_UNSET_KEY}}}}\n"
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	var out bytes.Buffer
	rep, err := diagnose.Run(context.Background(), cfg, "", &out, diagnose.Options{})
	if err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	for _, want := range []string{
		"[ok  ] consent        token                        the token endpoint accepted the client",
		"[skip] consent        probe                        per-customer route",
		"[ok  ] cc             token                        client_credentials token obtained",
		"[FAIL] ccbad          token                        token request failed: route ccbad",
		"invalid_client",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if rep.Worst != diagnose.Fail || strings.Contains(text, good) || strings.Contains(text, bad) {
		t.Fatalf("worst %v, or a secret in the report", rep.Worst)
	}
	if _, err := os.Stat(dir + "/c.db"); !os.IsNotExist(err) {
		t.Fatal("check opened the consent store")
	}
}
