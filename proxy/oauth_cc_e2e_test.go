package proxy_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// client_credentials routes built from YAML, one per client authentication
// method (the secret from a file, the private_key_jwt key from a PEM file,
// tls_client_auth by the route's certificate): the app's requests go out
// with a route-wide token; a wrong secret is the proxy's token error, and
// neither the secret nor a token reaches the app or the log.
func TestOAuthClientCredentialsRoutes(t *testing.T) {
	b := newBank(t)
	dir := t.TempDir()
	for n, v := range map[string]string{"good": ccSecret, "bad": "not-the-secret-55"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u := b.srv.URL + "/stet/psd2/oauth/token"
	routeYAML := func(name, token string) string {
		return fmt.Sprintf(`
  - name: %s
    hosts: [%s.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing: {profile: stet, key_id: %s, key: {pem: {cert_file: %s, key_file: %s}}}
    token:
      type: client_credentials
      url: %s
      scopes: [aisp]
      rate_limit: {requests_per_minute: 600, burst: 10}
%s`, name, name, b.srv.URL, b.caFile, b.qwacCert, b.qwacKey, bpceKeyID, b.sealCert, b.sealKey, u, token)
	}
	yaml := "listen: {proxy: 127.0.0.1:0, admin: 'off'}\nroutes:" +
		routeYAML("post", "      client_id: cc-post\n      auth_method: client_secret_post\n      client_secret: {file: "+dir+"/good}\n") +
		routeYAML("basic", "      client_id: cc-basic\n      client_secret: {file: "+dir+"/good}\n") +
		routeYAML("jwt", "      client_id: cc-jwt\n      auth_method: private_key_jwt\n      private_key: {file: "+b.jwtKey+"}\n") +
		routeYAML("mtls", "      client_id: "+bpceClientID+"\n      auth_method: tls_client_auth\n") +
		routeYAML("wrong", "      client_id: cc-post\n      auth_method: client_secret_post\n      client_secret: {file: "+dir+"/bad}\n")
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	log, logs := testlog.New(t)
	logs.ForbidStrings(ccSecret, "not-the-secret-55")
	logs.Forbid(b.emu.Issued)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	x := &tp{proxyURL: &url.URL{Scheme: "http", Host: srv.Addr("proxy")}}
	app := x.app(t, "")
	for _, name := range []string{"post", "basic", "jwt", "mtls"} {
		req, _ := http.NewRequest("GET", "http://"+name+".example/stet/psd2/v1/accounts", nil)
		for range 3 {
			if a := app.do(app.c, req); a.status != http.StatusOK {
				t.Fatalf("%s: %d %s", name, a.status, a.body)
			}
		}
	}
	req, _ := http.NewRequest("GET", "http://wrong.example/stet/psd2/v1/accounts", nil)
	a := app.do(app.c, req)
	if a.status != http.StatusServiceUnavailable || errorCode(t, a) != proxy.CodeTokenRejected || !strings.Contains(string(a.body), "OAuth2 client authentication") {
		t.Fatalf("wrong secret: %d %s", a.status, a.body)
	}
	if !strings.Contains(logs.String(), "route wrong") {
		t.Fatal("the log does not name the route whose secret was refused")
	}
	// One token per route, reused: 5 token requests for 13 app requests.
	if n := len(b.emu.TokenRequests()); n != 5 {
		t.Fatalf("%d token requests, want 5", n)
	}
	app.assertNoSecrets(b)
	for _, s := range app.seen {
		if strings.Contains(s, ccSecret) || strings.Contains(s, "not-the-secret-55") {
			t.Fatal("the app received a client secret")
		}
	}
}

// private_key_jwt with the key in Vault Transit: the assertion is signed by
// Vault (the key never leaves it) and the bank accepts it.
func TestOAuthClientCredentialsTransitKey(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	vs := vaulttest.Start(t)
	transit := vaulttest.Unique("transit")
	vs.Mount(transit, "transit")
	vs.Write(transit+"/keys/client-jwt", map[string]any{"type": "ecdsa-p256"})
	pubPEM := vs.Read(transit + "/keys/client-jwt").Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string)
	blk, _ := pem.Decode([]byte(pubPEM))
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	b := newBank(t, map[string]stet.Client{"cc-transit": {Method: "private_key_jwt", Key: pub}})
	t.Setenv("TP_TEST_VAULT_TOKEN", vs.Token)
	yaml := fmt.Sprintf(`vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: transit
    hosts: [transit.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing: {profile: stet, key_id: %s, key: {pem: {cert_file: %s, key_file: %s}}}
    token:
      type: client_credentials
      url: %s/stet/psd2/oauth/token
      client_id: cc-transit
      auth_method: private_key_jwt
      private_key: {vault_transit: {mount: %s, key: client-jwt}}
`, vs.Addr, b.srv.URL, b.caFile, b.qwacCert, b.qwacKey, bpceKeyID, b.sealCert, b.sealKey, b.srv.URL, transit)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vc.Close() })
	log, logs := testlog.New(t)
	logs.Forbid(b.emu.Issued)
	srv := serve(t, cfg, assemble.Options{Vault: vc}, proxy.Options{Log: log})
	app := (&tp{proxyURL: &url.URL{Scheme: "http", Host: srv.Addr("proxy")}}).app(t, "")
	req, _ := http.NewRequest("GET", "http://transit.example/stet/psd2/v1/accounts", nil)
	if a := app.do(app.c, req); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.body)
	}
	if f := b.emu.TokenRequests(); len(f) != 1 || f[0].Get("client_assertion") == "" {
		t.Fatalf("token requests: %d", len(f))
	}
	app.assertNoSecrets(b)
}
