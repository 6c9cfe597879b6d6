package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/proxy"
)

// gatewayCallers defines a Basic caller allowed on the route and one that is not.
func gatewayCallers(t *testing.T) (top, pw string) {
	t.Helper()
	pw = "caller-pass-8Jq2"
	f := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("callers:\n  - name: payments\n    password: {file: %s}\n  - name: ledger\n    password: {file: %s}\n", f, f), pw
}

func basic(user, pw string) http.Header {
	return http.Header{"Proxy-Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))}}
}

// A CONNECT is refused with the JSON error, before any tunnel exists, when
// no route intercepts its host or its caller is not authorised; inside a
// tunnel, only TLS to the CONNECT host and port is served.
func TestInterceptRefusals(t *testing.T) {
	callers, pw := gatewayCallers(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	h, _ := interceptHarness(t, harnessOpts{
		top:        callers + "interception:\n  ca:\n    generate: {write_cert_to: " + caFile + "}\n",
		extraRoute: "    allow: {callers: [payments]}\n  - name: plain\n    hosts: [plain.bank.example]\n    upstream: https://127.0.0.1:9\n",
	})
	addr := h.srv.Addr("proxy")
	refusals := []struct {
		name, target string
		header       http.Header
		status       int
		code         string
	}{
		{"host without a route", "unknown.example:443", basic("payments", pw), 403, proxy.CodeConnectRefused},
		{"route that does not intercept", "plain.bank.example:443", basic("payments", pw), 403, proxy.CodeConnectRefused},
		{"no credentials", bcHost + ":443", nil, 407, proxy.CodeCallerAuthRequired},
		{"wrong password", bcHost + ":443", basic("payments", "nope"), 407, proxy.CodeCallerAuthRequired},
		{"caller not on the route", bcHost + ":443", basic("ledger", pw), 403, proxy.CodeCallerNotAllowed},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, a := connectRaw(t, addr, tc.target, tc.header)
			if a.status != tc.status || errorCode(t, a) != tc.code {
				t.Fatalf("got %d %s", a.status, a.body)
			}
			if tc.status == 407 && a.header.Get("Proxy-Authenticate") == "" {
				t.Fatal("407 without Proxy-Authenticate")
			}
		})
	}

	open := func(t *testing.T, sni string) (*tls.Conn, error) {
		conn, a := connectRaw(t, addr, bcHost+":443", basic("payments", pw))
		if a.status != 200 {
			t.Fatalf("CONNECT: %d %s", a.status, a.body)
		}
		tc := tls.Client(conn, &tls.Config{ServerName: sni, RootCAs: caPool(t, caFile), InsecureSkipVerify: sni != bcHost}) //nolint:gosec // the SNI test must send a foreign name
		return tc, tc.Handshake()
	}
	m := h.metricsText(t)
	for _, want := range []string{`tokenproxy_interception_refusals_total{reason="not_intercepted"} 2`, `tokenproxy_interception_refusals_total{reason="caller_refused"} 3`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	t.Run("SNI differs from the CONNECT host", func(t *testing.T) {
		if _, err := open(t, "plain.bank.example"); err == nil {
			t.Fatal("handshake with a foreign SNI succeeded")
		}
		if !strings.Contains(h.metricsText(t), `tokenproxy_interception_refusals_total{reason="sni_mismatch"} 1`) {
			t.Fatal("the SNI refusal is not counted")
		}
	})
	t.Run("plain HTTP inside the tunnel", func(t *testing.T) {
		conn, _ := connectRaw(t, addr, bcHost+":443", basic("payments", pw))
		fmt.Fprintf(conn, "GET /api/v1/accounts HTTP/1.1\r\nHost: %s\r\n\r\n", bcHost)
		b, _ := io.ReadAll(conn)
		if strings.Contains(string(b), bcIBAN) || strings.HasPrefix(string(b), "HTTP/") {
			t.Fatalf("plain HTTP in a tunnel was served: %q", b)
		}
	})
	for _, host := range []string{"plain.bank.example", bcHost + ":8443"} {
		t.Run("inner Host "+host, func(t *testing.T) {
			tc, err := open(t, bcHost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(tc, "GET /api/v1/accounts HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if a := (answer{resp.StatusCode, resp.Header, b}); a.status != 403 || errorCode(t, a) != proxy.CodeConnectRefused {
				t.Fatalf("got %d %s", a.status, b)
			}
		})
	}
	t.Run("authorised caller", func(t *testing.T) {
		u := *h.proxyURL
		u.User = nil
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&u),
			ProxyConnectHeader: basic("payments", pw), TLSClientConfig: &tls.Config{RootCAs: caPool(t, caFile)}}}
		a := h.get(c, "https://"+bcHost+"/api/v1/accounts")
		if a.status != 200 || !strings.Contains(string(a.body), bcIBAN) {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if h.logs.Count(`"caller":"payments"`) == 0 {
			t.Fatal("the tunnel's caller is not in the request log")
		}
	})
}

// metricsText is the admin listener's /metrics page.
func (h *harness) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + h.srv.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Requests in a tunnel get the plain listener's HTTP/1.1 handling: several
// on one kept-alive connection, and Connection: close ends it.
func TestInterceptKeepAliveAndConnectionClose(t *testing.T) {
	h, caFile := interceptHarness(t, harnessOpts{})
	conn, a := connectRaw(t, h.srv.Addr("proxy"), bcHost+":443", nil)
	if a.status != 200 {
		t.Fatalf("CONNECT: %d %s", a.status, a.body)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: bcHost, RootCAs: caPool(t, caFile)})
	br := bufio.NewReader(tc)
	for i, hdr := range []string{"", "", "Connection: close\r\n"} {
		fmt.Fprintf(tc, "GET /api/v1/accounts HTTP/1.1\r\nHost: %s\r\n%s\r\n", bcHost, hdr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), bcIBAN) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if n, err := br.ReadByte(); err == nil {
		t.Fatalf("the tunnel stayed open after Connection: close (read %q)", n)
	}
}

// A request inside a tunnel framed by both Content-Length and
// Transfer-Encoding is answered and the tunnel then closed (RFC 9112 section
// 6.3), as on the plain listeners: a request pipelined behind it is never served.
func TestInterceptAmbiguousFramingClosesTunnel(t *testing.T) {
	h, caFile := interceptHarness(t, harnessOpts{})
	conn, a := connectRaw(t, h.srv.Addr("proxy"), bcHost+":443", nil)
	if a.status != 200 {
		t.Fatalf("CONNECT: %d %s", a.status, a.body)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: bcHost, RootCAs: caPool(t, caFile)})
	br := bufio.NewReader(tc)
	fmt.Fprintf(tc, "POST /api/v1/accounts HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /api/v1/accounts HTTP/1.1\r\nHost: %s\r\n\r\n", bcHost, bcHost)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !resp.Close {
		t.Fatalf("answer to an ambiguously framed request did not say Connection: close (status %d)", resp.StatusCode)
	}
	if n, err := br.ReadByte(); err == nil {
		t.Fatalf("the pipelined request was served on the same tunnel (read %q)", n)
	}
}

// Shutdown closes idle tunnels: the hijacked connections are drained with
// the listeners.
func TestInterceptDrainClosesTunnels(t *testing.T) {
	h, caFile := interceptHarness(t, harnessOpts{})
	conn, a := connectRaw(t, h.srv.Addr("proxy"), bcHost+":443", nil)
	if a.status != 200 {
		t.Fatalf("CONNECT: %d %s", a.status, a.body)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: bcHost, RootCAs: caPool(t, caFile)})
	br := bufio.NewReader(tc)
	fmt.Fprintf(tc, "GET /api/v1/accounts HTTP/1.1\r\nHost: %s\r\n\r\n", bcHost)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("shutdown waited %v for an idle tunnel", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the idle tunnel is still open after shutdown")
	}
}
