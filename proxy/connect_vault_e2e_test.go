package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// The gateway's interception CA in Vault's PKI engine: the host certificate
// an app gets through the real server is signed by Vault (the CA key never
// leaves it) and names only the CONNECT host.
func TestInterceptVaultPKI(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("intercept-pki")
	srv.Mount(mount, "pki")
	rs := srv.Write(mount+"/root/generate/internal", map[string]any{"common_name": "Gateway Interception CA", "ttl": "720h"})
	blk, _ := pem.Decode([]byte(rs.Data["certificate"].(string)))
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	srv.Write(mount+"/roles/intercept", map[string]any{
		"allowed_domains": "api.bank.example", "allow_bare_domains": true, "allow_subdomains": false,
		"key_type": "ec", "key_bits": 256, "max_ttl": "48h", "server_flag": true, "client_flag": false, "no_store": true,
	})

	ca, _ := pki.NewCA("bank CA")
	dir := t.TempDir()
	client, _ := ca.IssueClient("tokenproxy-gateway")
	files, _ := pki.WriteFiles(dir, "client", client, "x")
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	up := mtlsUpstream(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.TLS.PeerCertificates[0].Subject.CommonName
		_, _ = io.WriteString(w, `{"accounts":[]}`)
	}))
	s, _, _ := startWithVault(t, srv, fmt.Sprintf(`listen: {proxy: 127.0.0.1:0, admin: 'off'}
interception:
  ca: {vault_pki: {mount: %s, role: intercept}}
routes:
  - name: bank
    hosts: [api.bank.example]
    intercept: true
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
`, mount, up.URL, caFile, files.Cert, files.Key))
	roots := x509.NewCertPool()
	roots.AddCert(root)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: s.Addr("proxy")}),
		TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := c.Get("https://api.bank.example/accounts")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if leaf.Issuer.CommonName != "Gateway Interception CA" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "api.bank.example" {
		t.Fatalf("leaf issued by %q for %v", leaf.Issuer.CommonName, leaf.DNSNames)
	}
	if cn := <-seen; cn != "tokenproxy-gateway" {
		t.Fatalf("the bank saw client certificate %q", cn)
	}
}
