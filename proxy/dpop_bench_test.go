package proxy_test

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
)

// BenchmarkDPoPRouteThroughProxy sends requests through a client_credentials
// route whose tokens are DPoP-bound (ES256 key file): each request carries a
// fresh proof, which the test bank verifies (go-jose) on the same cores.
func BenchmarkDPoPRouteThroughProxy(b *testing.B) {
	bank := newDPoPBank(b, true)
	benchBound(b, bank, dpopRoute(bank, "bank", writeECKey(b, bank.dir, "dpop.pem"), ""))
}

// BenchmarkBearerRouteThroughProxy is the same route with bearer tokens
// (bound to nothing; the bank checks no proof): the baseline.
func BenchmarkBearerRouteThroughProxy(b *testing.B) {
	bank := newDPoPBank(b, false)
	benchBound(b, bank, bank.routeYAML("bank", ""))
}

func benchBound(b *testing.B, bank *dpopBank, route string) {
	cfg, err := config.Parse([]byte("listen: {proxy: 127.0.0.1:0, admin: 'off'}\nroutes:" + route))
	if err != nil {
		b.Fatal(err)
	}
	srv := serve(b, cfg, assemble.Options{}, proxy.Options{Log: zap.NewNop()})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")}), MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get("http://bank.example/v1/accounts")
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
