package proxy_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// What identifies the app to tokenproxy (the gateway caller's
// Proxy-Authorization), what the app names as hop-by-hop, and the headers the
// route owns (the signature and its certificate) never reach the upstream
// as the app sent them; the app's end-to-end headers do.
func TestHeadersThatNeverReachTheUpstream(t *testing.T) {
	ca, _ := pki.NewCA("hygiene CA")
	dir := t.TempDir()
	qwac, _ := ca.IssueClient("qwac")
	seal, _ := ca.IssueClient("seal", pki.WithKeyType(pki.RSA2048))
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	sf, _ := pki.WriteFiles(dir, "seal", seal, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	if err := os.WriteFile(filepath.Join(dir, "caller"), []byte("s3cret-caller"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := &capture{}
	u := mtlsUpstream(t, ca, up)
	cfg, err := config.Parse(fmt.Appendf(nil, `
listen: {proxy: 127.0.0.1:0, admin: 'off'}
callers: [{name: payments, password: {file: %s}}]
routes:
  - name: bg
    hosts: [psd2.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    allow: {callers: [payments]}
    signing:
      profile: berlin-group
      key: {pem: {cert_file: %s, key_file: %s}}
`, filepath.Join(dir, "caller"), u.URL, caFile, qf.Cert, qf.Key, sf.Cert, sf.Key))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testlog.New(t)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	proxyURL := &url.URL{Scheme: "http", User: url.UserPassword("payments", "s3cret-caller"), Host: srv.Addr("proxy")}
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	req, _ := http.NewRequest(http.MethodGet, "http://psd2.bank.example/v1/accounts", nil)
	req.Header.Set("Connection", "X-Caller-Hint")
	req.Header.Set("X-Caller-Hint", "payments")
	req.Header.Set("Signature", "forged")
	req.Header.Set("TPP-Signature-Certificate", "forged")
	req.Header.Set("Digest", "SHA-256=forged")
	req.Header.Set("PSU-ID", "psu-1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
	}
	got, _ := up.at(0)
	for _, k := range []string{"Proxy-Authorization", "X-Caller-Hint", "Connection"} {
		if v := got.Header.Values(k); v != nil {
			t.Fatalf("%s reached the upstream: %q", k, v)
		}
	}
	for _, k := range []string{"Signature", "TPP-Signature-Certificate", "Digest"} {
		if v := got.Header.Values(k); len(v) != 1 || v[0] == "forged" || v[0] == "SHA-256=forged" {
			t.Fatalf("%s at the upstream: %q; want tokenproxy's one value", k, v)
		}
	}
	if got.Header.Get("PSU-ID") != "psu-1" {
		t.Fatal("the app's end-to-end header PSU-ID did not reach the upstream")
	}
}
