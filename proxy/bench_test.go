package proxy_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/internal/testpki"
	"github.com/tokenproxy/tokenproxy/proxy"
)

// BenchmarkRSA2048Sign is Go's own RSA-2048 PKCS#1 v1.5 signing rate on
// these cores: the ceiling for signed requests.
func BenchmarkRSA2048Sign(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("signing string"))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := key.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSignedRequestThroughProxy sends Berlin Group-signed requests
// (RSA-2048) through the forward proxy to an mTLS upstream, all in this
// process, on kept-alive connections. Compare its ns/op with
// BenchmarkRSA2048Sign's: the ratio is the share of Go's signing rate that
// reaches the upstream (the client and the upstream run on the same cores).
func BenchmarkSignedRequestThroughProxy(b *testing.B) {
	ca, _ := testpki.NewCA("bench CA")
	dir := b.TempDir()
	qwac, _ := ca.IssueClient("qwac")
	qseal, _ := ca.IssueClient("qseal", testpki.WithKeyType(testpki.RSA2048))
	qf, _ := testpki.WriteFiles(dir, "qwac", qwac, "x")
	sf, _ := testpki.WriteFiles(dir, "qseal", qseal, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	up := mtlsUpstream(b, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: bg
    hosts: [psd2.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: berlin-group
      key: {pem: {cert_file: %s, key_file: %s}}
`, up.URL, caFile, qf.Cert, qf.Key, sf.Cert, sf.Key)))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{Log: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")}), MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, "http://psd2.bank.example/v1/accounts", nil)
			req.Header.Set("PSU-ID", "PSU-1")
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
