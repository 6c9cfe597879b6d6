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
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
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
	ca, _ := pki.NewCA("bench CA")
	dir := b.TempDir()
	qseal, _ := ca.IssueClient("qseal", pki.WithKeyType(pki.RSA2048))
	sf, _ := pki.WriteFiles(dir, "qseal", qseal, "x")
	benchSigned(b, ca, dir, fmt.Sprintf("{pem: {cert_file: %s, key_file: %s}}", sf.Cert, sf.Key), "")
}

// BenchmarkTransitSignedRequestThroughProxy is the same with the signing key
// in Vault Transit (a Vault dev server on the same cores): every signature is
// a Transit call.
func BenchmarkTransitSignedRequestThroughProxy(b *testing.B) {
	if os.Getenv("VAULT_ADDR") == "" {
		b.Skip("needs VAULT_ADDR/VAULT_TOKEN (bash .ci/vault.sh start)")
	}
	srv := vaulttest.Start(b)
	ca, transit, kv := transitQSealC(b, srv)
	b.Setenv("TP_BENCH_VAULT_TOKEN", srv.Token)
	benchSigned(b, ca, b.TempDir(), fmt.Sprintf("{vault_transit: {key: {mount: %s, key: qseal}, certificate: {mount: %s, path: tpp/qseal, field: certificate}}}", transit, kv),
		fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_BENCH_VAULT_TOKEN}}}\n", srv.Addr))
}

func benchSigned(b *testing.B, ca *pki.CA, dir, key, top string) {
	qwac, _ := ca.IssueClient("qwac")
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	up := mtlsUpstream(b, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	cfg, err := config.Parse([]byte(top + fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: bg
    hosts: [psd2.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: berlin-group
      key: %s
`, up.URL, caFile, qf.Cert, qf.Key, key)))
	if err != nil {
		b.Fatal(err)
	}
	bo := assemble.Options{}
	if cfg.Vault != nil {
		vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
		if err != nil {
			b.Fatal(err)
		}
		defer vc.Close()
		bo = assemble.Options{Vault: vc}
	}
	srv := serve(b, cfg, bo, proxy.Options{Log: zap.NewNop()})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")}), MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
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
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}
	})
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	}
}
