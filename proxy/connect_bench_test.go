package proxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// benchIntercept serves two intercepted hosts of one mTLS route whose
// upstream answers a small JSON body; cacheSize 1 with the two hosts
// alternating makes every connection issue a new leaf.
func benchIntercept(b *testing.B, cacheSize int) (proxyAddr string, roots *x509.CertPool) {
	b.Helper()
	ca, _ := pki.NewCA("bench CA")
	dir := b.TempDir()
	client, _ := ca.IssueClient("tokenproxy")
	files, _ := pki.WriteFiles(dir, "client", client, "x")
	caFile, icaFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "intercept-ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		b.Fatal(err)
	}
	up := mtlsUpstream(b, ca, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"accounts":[]}`)
	}))
	yaml := fmt.Sprintf(`listen: {proxy: 127.0.0.1:0, admin: 'off'}
interception:
  ca: {generate: {write_cert_to: %s}}
  cache_size: %d
  issue_rate: 1000000
  issue_burst: 1000000
routes:
  - name: bank
    hosts: [a.bank.example, b.bank.example]
    intercept: true
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
`, icaFile, cacheSize, up.URL, caFile, files.Cert, files.Key)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	srv := serve(b, cfg, assemble.Options{}, proxy.Options{})
	return srv.Addr("proxy"), caPool(b, icaFile)
}

// tunnelRequest makes one new intercepted connection (TCP, CONNECT, TLS)
// and sends one request on it.
func tunnelRequest(b *testing.B, proxyAddr, host string, roots *x509.CertPool) {
	raw, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(raw, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	resp.Body.Close()
	c := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
	fmt.Fprintf(c, "GET /accounts HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	readOK(b, bufio.NewReader(c))
}

func readOK(b *testing.B, br *bufio.Reader) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("request: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// BenchmarkInterceptNewConnection: a new connection with one request,
// intercepted with a cached leaf, with a newly issued leaf, and plain HTTP.
func BenchmarkInterceptNewConnection(b *testing.B) {
	b.Run("intercepted_leaf_cached", func(b *testing.B) {
		addr, roots := benchIntercept(b, 1000)
		tunnelRequest(b, addr, "a.bank.example", roots)
		b.ResetTimer()
		for range b.N {
			tunnelRequest(b, addr, "a.bank.example", roots)
		}
	})
	b.Run("intercepted_leaf_issued", func(b *testing.B) {
		addr, roots := benchIntercept(b, 1)
		hosts := [2]string{"a.bank.example", "b.bank.example"}
		b.ResetTimer()
		for i := range b.N {
			tunnelRequest(b, addr, hosts[i%2], roots)
		}
	})
	b.Run("plain_http", func(b *testing.B) {
		addr, _ := benchIntercept(b, 1000)
		b.ResetTimer()
		for range b.N {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprint(raw, "GET http://a.bank.example/accounts HTTP/1.1\r\nHost: a.bank.example\r\nConnection: close\r\n\r\n")
			readOK(b, bufio.NewReader(raw))
			raw.Close()
		}
	})
}

// BenchmarkInterceptKeptAlive: one request on a kept-alive connection,
// plain HTTP through the forward proxy against HTTPS in a tunnel.
func BenchmarkInterceptKeptAlive(b *testing.B) {
	for _, tc := range []struct{ name, url string }{
		{"plain_http", "http://a.bank.example/accounts"},
		{"intercepted_https", "https://a.bank.example/accounts"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr, roots := benchIntercept(b, 1000)
			tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr}),
				TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 1}
			b.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Transport: tr}
			get := func() {
				resp, err := c.Get(tc.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			get()
			b.ResetTimer()
			for range b.N {
				get()
			}
		})
	}
}
