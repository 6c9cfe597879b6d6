package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// BenchmarkTracing sends signed requests (RFC 9421, ECDSA P-256) through
// the forward proxy to an mTLS upstream with tracing off (no provider: no
// span) and on (always sampled, batched OTLP/HTTP export to a receiver in
// this process): three spans a request, server, sign and upstream, with
// the app's traceparent continued.
func BenchmarkTracing(b *testing.B) {
	ca, _ := pki.NewCA("bench CA")
	dir := b.TempDir()
	qseal, _ := ca.IssueClient("qseal")
	sf, _ := pki.WriteFiles(dir, "qseal", qseal, "x")
	qwac, _ := ca.IssueClient("qwac")
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	up := mtlsUpstream(b, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	yaml := fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: bg
    hosts: [psd2.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: rfc9421
      algorithm: ecdsa-p256-sha256
      key_id: bench
      key: {pem: {cert_file: %s, key_file: %s}}
`, up.URL, caFile, qf.Cert, qf.Key, sf.Cert, sf.Key)
	var exported atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		exported.Add(n)
	}))
	b.Cleanup(recv.Close)

	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			cfg, err := config.Parse([]byte(yaml))
			if err != nil {
				b.Fatal(err)
			}
			opts := proxy.Options{Log: zap.NewNop()}
			if on {
				exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
				if err != nil {
					b.Fatal(err)
				}
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts.TracerProvider = tp
			}
			srv := serve(b, cfg, assemble.Options{}, opts)
			c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")}), MaxIdleConnsPerHost: 64}}
			var mu sync.Mutex
			var lat []time.Duration
			before := exported.Load()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t0 := time.Now()
					req, _ := http.NewRequest(http.MethodGet, "http://psd2.bank.example/v1/accounts", nil)
					req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
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
			if tp, ok := opts.TracerProvider.(*sdktrace.TracerProvider); ok {
				_ = tp.ForceFlush(context.Background())
				b.ReportMetric(float64(exported.Load()-before)/float64(b.N), "export-B/op")
			}
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			}
		})
	}
}
