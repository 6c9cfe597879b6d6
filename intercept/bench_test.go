package intercept

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	"golang.org/x/time/rate"
)

// benchProxy is goproxy with interception of every *.bank.example host;
// every request is answered by the handler itself, so the figures are the
// proxy's cost, not an upstream's.
func benchProxy(b *testing.B, cacheSize int) (proxyURL string, roots *x509.CertPool) {
	b.Helper()
	ca := mustGenerate(b, GenerateConfig{})
	leaves := NewLeaves(ca, LeafConfig{CacheSize: cacheSize, IssueRate: rate.Inf})
	allow := func(h string) bool { return strings.HasSuffix(h, "bank.example") }
	gp := goproxy.NewProxyHttpServer()
	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		t, err := leaves.Open(host, "", allow)
		if err != nil {
			return goproxy.RejectConnect, host
		}
		ctx.UserData = t
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: t.GoproxyTLSConfig}, host
	})
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		if t, ok := ctx.UserData.(*Tunnel); ok {
			if err := t.Check(r); err != nil {
				return r, goproxy.NewResponse(r, "text/plain", http.StatusForbidden, err.Error())
			}
		}
		return r, goproxy.NewResponse(r, "application/json", http.StatusOK, `{"accounts":[]}`)
	})
	srv := httptest.NewServer(gp)
	b.Cleanup(srv.Close)
	roots = x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	return srv.URL, roots
}

// openTunnel makes one new intercepted connection: TCP, CONNECT, TLS.
func openTunnel(b *testing.B, proxyAddr, host string, roots *x509.CertPool) {
	raw, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(raw, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host)
	resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err := c.Handshake(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkNewInterceptedConnection: TCP + CONNECT + TLS handshake with a
// leaf from the cache, and with a leaf newly issued for each connection.
func BenchmarkNewInterceptedConnection(b *testing.B) {
	b.Run("leaf_cached", func(b *testing.B) {
		p, roots := benchProxy(b, 1000)
		u, _ := url.Parse(p)
		openTunnel(b, u.Host, "bank.example", roots)
		b.ResetTimer()
		for range b.N {
			openTunnel(b, u.Host, "bank.example", roots)
		}
	})
	b.Run("plain_http_new_connection_baseline", func(b *testing.B) {
		p, _ := benchProxy(b, 1000)
		u, _ := url.Parse(p)
		b.ResetTimer()
		for range b.N {
			raw, err := net.Dial("tcp", u.Host)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprint(raw, "GET http://bank.example/api/v1/accounts HTTP/1.1\r\nHost: bank.example\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("plain request: %v %v", resp, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			raw.Close()
		}
	})
	b.Run("leaf_issued", func(b *testing.B) {
		p, roots := benchProxy(b, 1)
		u, _ := url.Parse(p)
		b.ResetTimer()
		for i := range b.N {
			openTunnel(b, u.Host, fmt.Sprintf("h%d.bank.example", i), roots)
		}
	})
}

// BenchmarkLeafIssue is the leaf cost alone: key generation and signing.
func BenchmarkLeafIssue(b *testing.B) {
	ca := mustGenerate(b, GenerateConfig{})
	leaves := NewLeaves(ca, LeafConfig{CacheSize: 1, IssueRate: rate.Inf})
	allow := func(string) bool { return true }
	b.Run("cached", func(b *testing.B) {
		for range b.N {
			if _, err := leaves.Certificate(b.Context(), "bank.example", allow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("issued", func(b *testing.B) {
		for i := range b.N {
			if _, err := leaves.Certificate(b.Context(), fmt.Sprintf("h%d.example", i), allow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRequest: one request on a kept-alive connection, plain HTTP
// through the forward proxy against HTTPS through an intercepted tunnel.
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct{ name, url string }{
		{"plain_http_forward", "http://bank.example/api/v1/accounts"},
		{"intercepted_https_keepalive", "https://bank.example/api/v1/accounts"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p, roots := benchProxy(b, 1000)
			pu, _ := url.Parse(p)
			tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 1}
			b.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			get := func() {
				resp, err := client.Get(tc.url)
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
