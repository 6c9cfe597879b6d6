package assemble_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// metadataAS serves an authorization server's metadata over mTLS; par says
// whether it has a pushed authorization request endpoint. It counts the
// requests for the document.
func metadataAS(t *testing.T, dir string, par bool) (issuer, caFile string, cert pki.Files, reads *atomic.Int64) {
	t.Helper()
	ca, err := pki.NewCA("fapi assemble test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("tpp")
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = pki.WriteFiles(dir, "qwac", client, "x"); err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	reads = &atomic.Int64{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-authorization-server" {
			http.NotFound(w, r)
			return
		}
		reads.Add(1)
		m := map[string]any{"issuer": issuer, "token_endpoint": issuer + "/token", "authorization_endpoint": issuer + "/authorize",
			"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "tls_client_auth"}, "authorization_response_iss_parameter_supported": true}
		if par {
			m["pushed_authorization_request_endpoint"] = issuer + "/par"
			m["require_pushed_authorization_requests"] = true
		}
		_ = json.NewEncoder(w).Encode(m)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, caFile, cert, reads
}

func fapiConfig(t *testing.T, dir, issuer, caFile string, cert pki.Files, extra string) *config.Config {
	t.Helper()
	key := make([]byte, 32)
	kf := filepath.Join(dir, "store.key")
	if err := os.WriteFile(kf, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	jwk := filepath.Join(dir, "client.key")
	if err := os.WriteFile(jwk, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `
routes:
  - name: psd2
    hosts: [api.bank.example]
    upstream: https://api.bank.example
    tls: {ca_file: ` + caFile + `}
    client_certificate: {pem: {cert_file: ` + cert.Cert + `, key_file: ` + cert.Key + `}}
    token:
      type: authorization_code
      profile: fapi2
      issuer: ` + issuer + `
      discovery: true
      client_id: tpp-1
      auth_method: private_key_jwt
      private_key: {file: ` + jwk + `}
      certificate_bound: true
` + extra + `consents:
  callback_url: http://127.0.0.1:9091/v1/callback
  store:
    bbolt: {path: ` + filepath.Join(dir, "consents.db") + `, key: {file: ` + kf + `}}
`
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	return cfg
}

func buildFAPI(t *testing.T, cfg *config.Config) error {
	t.Helper()
	cs, err := assemble.OpenConsents(context.Background(), cfg, assemble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	_, err = assemble.Build(context.Background(), cfg, assemble.Options{Consents: cs})
	return err
}

// TestFAPIDiscoveryAtStartup: a fapi2 route's endpoints come from the
// bank's metadata, read over the route's mTLS client; a bank whose metadata
// has no PAR endpoint fails the build naming the document and the field.
func TestFAPIDiscoveryAtStartup(t *testing.T) {
	t.Run("with PAR", func(t *testing.T) {
		dir := t.TempDir()
		issuer, caFile, cert, reads := metadataAS(t, dir, true)
		if err := buildFAPI(t, fapiConfig(t, dir, issuer, caFile, cert, "")); err != nil {
			t.Fatal(err)
		}
		if reads.Load() != 1 {
			t.Fatalf("the metadata was read %d times", reads.Load())
		}
	})
	t.Run("bank without PAR", func(t *testing.T) {
		dir := t.TempDir()
		issuer, caFile, cert, _ := metadataAS(t, dir, false)
		err := buildFAPI(t, fapiConfig(t, dir, issuer, caFile, cert, ""))
		want := "routes[0](psd2).token.par: the bank's metadata at " + issuer + "/.well-known/oauth-authorization-server has no pushed_authorization_request_endpoint; token.par needs one"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v\nwant %s", err, want)
		}
	})
	t.Run("metadata requires PAR", func(t *testing.T) {
		dir := t.TempDir()
		issuer, caFile, cert, _ := metadataAS(t, dir, true)
		cfg := fapiConfig(t, dir, issuer, caFile, cert, "")
		cfg.Routes[0].Token.Profile, cfg.Routes[0].Token.PAR = "", false
		err := buildFAPI(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "requires pushed authorization requests; set token.par: true") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("another issuer", func(t *testing.T) {
		dir := t.TempDir()
		issuer, caFile, cert, _ := metadataAS(t, dir, true)
		err := buildFAPI(t, fapiConfig(t, dir, issuer+"/other", caFile, cert, ""))
		if err == nil || !strings.Contains(err.Error(), "routes[0](psd2).token.discovery: route psd2: ") {
			t.Fatalf("err = %v", err)
		}
	})
}
