package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/berlingroup"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// tlsGateway is tokenproxy as an HTTPS proxy: its listener's certificate
// from a gateway CA, callers by client certificate (payments) or password
// (ledger), both allowed on the intercepting Banking Circle route.
type tlsGateway struct {
	h                  *harness
	proxyURL           *url.URL
	gatewayCA          *pki.CA
	bundle             string // the gateway CA and the interception CA
	payments, stranger *tls.Certificate
	paymentsFiles      pki.Files
	pw                 string
	dir                string // the listener's certificate files are server.crt and server.key here
}

func newTLSGateway(t *testing.T) *tlsGateway {
	t.Helper()
	dir := t.TempDir()
	g := &tlsGateway{pw: "ledger-pass-Q7w", dir: dir}
	var err error
	if g.gatewayCA, err = pki.NewCA("gateway CA"); err != nil {
		t.Fatal(err)
	}
	callersCA, _ := pki.NewCA("callers CA")
	server, err := g.gatewayCA.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	sf, _ := pki.WriteFiles(dir, "server", server, "x")
	g.payments, g.stranger = mustClient(t, callersCA, "payments-svc"), mustClient(t, callersCA, "stranger-svc")
	g.paymentsFiles, _ = pki.WriteFiles(dir, "payments", g.payments, "x")
	callersFile, gwFile := filepath.Join(dir, "callers-ca.pem"), filepath.Join(dir, "gateway-ca.pem")
	if err := callersCA.WriteCertFile(callersFile); err != nil {
		t.Fatal(err)
	}
	if err := g.gatewayCA.WriteCertFile(gwFile); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(g.pw), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "intercept-ca.pem")
	h, _ := interceptHarness(t, harnessOpts{
		listen: fmt.Sprintf("  proxy_tls: {cert_file: %s, key_file: %s, client_ca_file: %s, reload_interval: 50ms}\n", sf.Cert, sf.Key, callersFile),
		top: fmt.Sprintf("callers:\n  - name: payments\n    certificate: {subject: payments-svc}\n  - name: ledger\n    password: {file: %s}\n", pwFile) +
			"interception:\n  ca:\n    generate: {write_cert_to: " + caFile + "}\n",
		extraRoute: "    allow: {callers: [payments, ledger]}\n",
	})
	g.h = h
	g.proxyURL = &url.URL{Scheme: "https", Host: h.srv.Addr("proxy")}
	g.bundle = filepath.Join(dir, "bundle.pem")
	a, _ := os.ReadFile(gwFile)
	b, _ := os.ReadFile(caFile)
	if err := os.WriteFile(g.bundle, append(a, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *tlsGateway) client(t *testing.T, cert *tls.Certificate, user *url.Userinfo) *http.Client {
	u := *g.proxyURL
	u.User = user
	tc := &tls.Config{RootCAs: caPool(t, g.bundle)}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&u), TLSClientConfig: tc}}
}

// connect sends a CONNECT over a TLS connection to the gateway.
func (g *tlsGateway) connect(t *testing.T, cert *tls.Certificate) answer {
	t.Helper()
	tc := &tls.Config{RootCAs: g.gatewayCA.CertPool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.Dial("tcp", g.proxyURL.Host, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", bcHost, bcHost)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// Nothing crosses the network in the clear between app and gateway: callers
// reach the route over a TLS proxy connection, by client certificate or by
// password, through interception and with absolute http:// URLs alike.
func TestHTTPSProxyCallers(t *testing.T) {
	g := newTLSGateway(t)
	accounts := "https://" + bcHost + "/api/v1/accounts"
	ok := []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"certificate caller, intercepted https", g.client(t, g.payments, nil), accounts},
		{"certificate caller, absolute http URL", g.client(t, g.payments, nil), "http://" + bcHost + "/api/v1/accounts"},
		{"password caller, intercepted https", g.client(t, nil, url.UserPassword("ledger", g.pw)), accounts},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			a := g.h.get(tc.c, tc.url)
			if a.status != 200 || !strings.Contains(string(a.body), bcIBAN) {
				t.Fatalf("%d %s", a.status, a.body)
			}
		})
	}
	if g.h.logs.Count(`"caller":"payments"`) < 2 || g.h.logs.Count(`"caller":"ledger"`) < 1 {
		t.Fatal("the callers are not in the request log")
	}
	t.Run("unknown certificate", func(t *testing.T) {
		a := g.connect(t, g.stranger)
		if a.status != 403 || errorCode(t, a) != proxy.CodeCallerNotAllowed {
			t.Fatalf("got %d %s", a.status, a.body)
		}
		a = g.h.get(g.client(t, g.stranger, nil), "http://"+bcHost+"/api/v1/accounts")
		if a.status != 403 || errorCode(t, a) != proxy.CodeCallerNotAllowed {
			t.Fatalf("absolute URL: got %d %s", a.status, a.body)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		a := g.connect(t, nil)
		if a.status != 407 || errorCode(t, a) != proxy.CodeCallerAuthRequired || a.header.Get("Proxy-Authenticate") == "" {
			t.Fatalf("got %d %v %s", a.status, a.header, a.body)
		}
	})
	t.Run("curl --proxy https:// with a client certificate", func(t *testing.T) {
		needTool(t, "curl")
		out, err := exec.Command("curl", "-sS", "--fail-with-body", "--max-time", "10", "--proxy", g.proxyURL.String(),
			"--proxy-cacert", g.bundle, "--proxy-cert", g.paymentsFiles.Cert, "--proxy-key", g.paymentsFiles.Key,
			"--cacert", g.bundle, accounts).CombinedOutput()
		if err != nil || !strings.Contains(string(out), bcIBAN) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("python requests with an https proxy and a password", func(t *testing.T) {
		needTool(t, "/usr/bin/python3")
		u := *g.proxyURL
		u.User = url.UserPassword("ledger", g.pw)
		cmd := exec.Command("/usr/bin/python3", "-c", "import requests, sys; r = requests.get('"+accounts+"', timeout=10); print(r.status_code, r.text); sys.exit(r.status_code != 200)")
		cmd.Env = append(cleanEnv(), "HTTPS_PROXY="+u.String(), "REQUESTS_CA_BUNDLE="+g.bundle)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), bcIBAN) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

// The listener's certificate reloads: after its files are replaced, a new
// connection is served the new certificate without a restart.
func TestHTTPSProxyCertificateReloads(t *testing.T) {
	g := newTLSGateway(t)
	next, _ := pki.NewCA("gateway CA 2")
	server, err := next.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	issuer := func() string {
		conn, err := tls.Dial("tcp", g.proxyURL.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads which certificate is served
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Issuer.CommonName
	}
	if got := issuer(); got != "gateway CA" {
		t.Fatalf("served a certificate from %q", got)
	}
	if _, err := pki.WriteFiles(g.dir, "server", server, "x"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for issuer() != "gateway CA 2" {
		if time.Now().After(deadline) {
			t.Fatal("the new listener certificate is not served 10s after the files changed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := g.client(t, g.payments, nil).Get("http://" + bcHost + "/api/v1/accounts")
	if err == nil {
		resp.Body.Close()
		t.Fatal("a client trusting only the old gateway CA still connected")
	}
}

// A Berlin Group call made with an https:// URL is signed by tokenproxy and
// accepted by the emulator's signature check.
func TestInterceptBerlinGroupSigned(t *testing.T) {
	ca, _ := pki.NewCA("PSD2 test QTSP")
	dir := t.TempDir()
	qwac, _ := ca.IssueClient("TPP QWAC")
	qseal, _ := ca.IssueClient("TPP QSealC", pki.WithKeyType(pki.RSA2048))
	qwacFiles, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	sealFiles, _ := pki.WriteFiles(dir, "qseal", qseal, "x")
	caFile, icaFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "intercept-ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	bg := berlingroup.New(berlingroup.Config{Roots: ca.CertPool()})
	bgSrv := mtlsUpstream(t, ca, bg)
	yaml := fmt.Sprintf(`listen: {proxy: 127.0.0.1:0, admin: 'off'}
interception:
  ca: {generate: {write_cert_to: %s}}
routes:
  - name: bg
    hosts: [psd2.bank.example]
    intercept: true
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
    signing:
      profile: berlin-group
      key:
        pem: {cert_file: %s, key_file: %s}
`, icaFile, bgSrv.URL, caFile, qwacFiles.Cert, qwacFiles.Key, sealFiles.Cert, sealFiles.Key)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	log, _ := testlog.New(t)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")}),
		TLSClientConfig: &tls.Config{RootCAs: caPool(t, icaFile)}}}
	resp, err := c.Get(strings.Replace(bgAccount, "http://", "https://", 1))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if acc, rej, why := bg.Counts(); acc != 1 || rej != 0 {
		t.Fatalf("berlin group accepted %d, rejected %d: %v", acc, rej, why)
	}
}
