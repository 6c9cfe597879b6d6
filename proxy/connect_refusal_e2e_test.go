package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
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

// A client that sends plain HTTP into a tunnel (curl --proxytunnel with an
// http:// URL) is cut off before anything is served, and the refusal is
// counted as not_tls and logged as a warning naming the host and the reason,
// never the bytes the client sent.
func TestInterceptPlainBytesInTunnel(t *testing.T) {
	needTool(t, "curl")
	h, _ := interceptHarness(t, harnessOpts{})
	const marker = "plain-bytes-Qv7x"
	h.logs.ForbidStrings(marker) // no line may quote what the client sent
	cmd := exec.Command("curl", "-sS", "--max-time", "10", "--proxytunnel", "--proxy", h.proxyURL.String(),
		"-H", "X-Marker: "+marker, "http://"+bcHost+":443/api/v1/accounts")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Contains(string(out), bcIBAN) {
		t.Fatalf("plain HTTP in a tunnel was served: %v\n%s", err, out)
	}
	if m := h.metricsText(t); !strings.Contains(m, `tokenproxy_interception_refusals_total{reason="not_tls"} 1`) {
		t.Fatalf("the refusal is not counted as not_tls:\n%s", grepLines(m, "refusals"))
	}
	// The line is written before the tunnel is closed, so before curl returns.
	if h.logs.Count(`"level":"warn"`, `"msg":"CONNECT tunnel refused"`, `"host":"`+bcHost+`"`, `"reason":"not_tls"`) != 1 {
		t.Fatalf("no warning names the host and not_tls:\n%s", h.logs)
	}
	if st := h.emu.Stats(); st.APIRequests != 0 {
		t.Fatalf("the bank saw %d requests", st.APIRequests)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// The 403 for a CONNECT that gets no tunnel says what is missing in each
// case, and an intercepted host is tunnelled only on 443 and its upstream's
// port: another port is refused with connect_port_refused and counted.
func TestConnectRefusalMessages(t *testing.T) {
	plainRoute := "  - name: plain\n    hosts: [plain.bank.example]\n    upstream: https://127.0.0.1:9\n"
	intercepting, _ := interceptHarness(t, harnessOpts{extraRoute: plainRoute})
	plain := newHarness(t, harnessOpts{})
	upstreamPort := intercepting.srv.Route("bankingcircle").Upstream.Port()
	tests := []struct {
		name      string
		h         *harness
		target    string
		status    int
		code      string
		want, not []string
	}{
		{"interception: host without a route", intercepting, "unknown.example:443", 403, proxy.CodeConnectRefused,
			[]string{`no route for host \"unknown.example\"`, "intercept: true"}, []string{"does not tunnel CONNECT"}},
		{"interception: route that does not intercept", intercepting, "plain.bank.example:443", 403, proxy.CodeConnectRefused,
			[]string{"route plain does not intercept CONNECT", "http://plain.bank.example/", "set intercept: true on the route"}, []string{"no route"}},
		{"interception: another port", intercepting, bcHost + ":8443", 403, proxy.CodeConnectPortRefused,
			[]string{"route bankingcircle intercepts CONNECT to \\\"" + bcHost + "\\\" only on port 443 or " + upstreamPort + ", not 8443"}, nil},
		{"interception: port 443", intercepting, bcHost + ":443", 200, "", nil, nil},
		{"interception: the upstream's port", intercepting, bcHost + ":" + upstreamPort, 200, "", nil, nil},
		{"no interception: host without a route", plain, "unknown.example:443", 403, proxy.CodeConnectRefused,
			[]string{`no route for host \"unknown.example\"`, "does not tunnel CONNECT"}, nil},
		{"no interception: route", plain, bcHost + ":443", 403, proxy.CodeConnectRefused,
			[]string{"does not tunnel CONNECT", "http://" + bcHost + "/", "intercept: true on route bankingcircle", "interception block"}, []string{"no route"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, a := connectRaw(t, tc.h.srv.Addr("proxy"), tc.target, nil)
			if a.status != tc.status || tc.code != "" && errorCode(t, a) != tc.code {
				t.Fatalf("got %d %s; want %d %s", a.status, a.body, tc.status, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(a.body), w) {
					t.Errorf("the answer lacks %q: %s", w, a.body)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(string(a.body), n) {
					t.Errorf("the answer says %q: %s", n, a.body)
				}
			}
		})
	}
	if m := intercepting.metricsText(t); !strings.Contains(m, `tokenproxy_interception_refusals_total{reason="port_refused"} 1`) {
		t.Fatalf("the port refusal is not counted:\n%s", grepLines(m, "refusals"))
	}
}
