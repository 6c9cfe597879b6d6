package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// bcIBAN is an account the Banking Circle emulator lists.
const bcIBAN = "DK6289000049910085"

// interceptHarness runs the Banking Circle emulator behind tokenproxy with
// the route intercepting CONNECT tunnels; the generated CA's certificate is
// written to the returned path.
func interceptHarness(t *testing.T, o harnessOpts) (*harness, string) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if o.top == "" {
		o.top = "interception:\n  ca:\n    generate: {write_cert_to: " + caFile + "}\n"
	}
	o.extraRoute = "    intercept: true\n" + o.extraRoute
	return newHarness(t, o), caFile
}

// caPool reads a PEM CA file into a pool.
func caPool(t testing.TB, files ...string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(b) {
			t.Fatalf("no certificate in %s", f)
		}
	}
	return pool
}

// connectRaw opens a CONNECT to target through the proxy at addr and
// returns the connection and the proxy's answer (its body read when it is
// not 200).
func connectRaw(t testing.TB, addr, target string, header http.Header) (net.Conn, answer) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := &http.Request{Method: http.MethodConnect, Host: target, URL: nil, Header: header}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	_ = req.Header.Write(conn)
	fmt.Fprint(conn, "\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		a.body, _ = io.ReadAll(resp.Body)
		return conn, a
	}
	if br.Buffered() > 0 {
		t.Fatalf("proxy sent %d bytes after the 200", br.Buffered())
	}
	return conn, a
}

// The command-line and language clients reach the Banking Circle emulator
// with https:// URLs through interception; tokenproxy adds the token and the
// client certificate.
func TestInterceptLanguageClients(t *testing.T) {
	h, caFile := interceptHarness(t, harnessOpts{})
	proxyURL := h.proxyURL.String()
	bankURL := "https://" + bcHost + "/api/v1/accounts"
	tests := []struct {
		name string
		argv []string
		env  []string
	}{
		{"curl --cacert with HTTPS_PROXY", []string{"curl", "-sS", "--fail-with-body", "--max-time", "10", "--cacert", caFile, bankURL}, nil},
		{"curl with CURL_CA_BUNDLE", []string{"curl", "-sS", "--fail-with-body", "--max-time", "10", bankURL}, []string{"CURL_CA_BUNDLE=" + caFile}},
		{"python requests with REQUESTS_CA_BUNDLE", []string{"/usr/bin/python3", "-c",
			"import requests, sys; r = requests.get('" + bankURL + "', timeout=10); print(r.status_code, r.text); sys.exit(r.status_code != 200)"},
			[]string{"REQUESTS_CA_BUNDLE=" + caFile}},
		{"python urllib with SSL_CERT_FILE", []string{"/usr/bin/python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('" + bankURL + "', timeout=10).read().decode())"},
			[]string{"SSL_CERT_FILE=" + caFile}},
		{"node with NODE_EXTRA_CA_CERTS", []string{"node", "-e", nodeConnect(bcHost, "/api/v1/accounts")},
			[]string{"NODE_EXTRA_CA_CERTS=" + caFile}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			needTool(t, tc.argv[0])
			before := len(h.emu.Handshakes())
			cmd := exec.Command(tc.argv[0], tc.argv[1:]...)
			cmd.Env = append(cleanEnv(), append(tc.env, "HTTPS_PROXY="+proxyURL, "https_proxy="+proxyURL)...)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), bcIBAN) {
				t.Fatalf("%s: %v\n%s", tc.argv[0], err, out)
			}
			if hs := h.emu.Handshakes(); len(hs) > before && !strings.Contains(hs[len(hs)-1].Subject, "tokenproxy-client-1") {
				t.Fatalf("the bank saw client certificate %q", hs[len(hs)-1].Subject)
			}
		})
	}
	if st := h.emu.Stats(); st.Handshakes == 0 || len(h.emu.IssuedTokens()) == 0 {
		t.Fatalf("the bank saw no mTLS handshake or issued no token: %+v", st)
	}
	if m := h.metricsText(t); !strings.Contains(m, `tokenproxy_interceptions_total{host="`+bcHost+`"}`) {
		t.Fatal("interceptions are not counted")
	}
}

// nodeConnect opens the tunnel by hand (Node 20's core ignores
// HTTPS_PROXY), then speaks TLS over it trusting NODE_EXTRA_CA_CERTS.
func nodeConnect(host, path string) string {
	return `
const http = require('http'), tls = require('tls');
const p = new URL(process.env.HTTPS_PROXY);
const headers = p.username ? {'Proxy-Authorization': 'Basic ' + Buffer.from(decodeURIComponent(p.username) + ':' + decodeURIComponent(p.password)).toString('base64')} : {};
http.request({host: p.hostname, port: p.port, method: 'CONNECT', path: '` + host + `:443', headers})
  .on('connect', (res, socket) => {
    if (res.statusCode !== 200) { console.log('CONNECT ' + res.statusCode); process.exit(1); }
    const s = tls.connect({socket, servername: '` + host + `', ALPNProtocols: ['http/1.1']}, () => {
      s.write('GET ` + path + ` HTTP/1.1\r\nHost: ` + host + `\r\nConnection: close\r\n\r\n');
    });
    let out = '';
    s.on('data', d => { out += d; });
    s.on('end', () => { console.log(out); process.exit(/ 200 /.test(out.split('\r\n')[0]) ? 0 : 1); });
    s.on('error', e => { console.log('TLS ' + e.message); process.exit(1); });
  })
  .on('error', e => { console.log(e.message); process.exit(1); })
  .end();
setTimeout(() => { console.log('timed out'); process.exit(2); }, 10000);
`
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed (scripts/test.sh installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
}

// cleanEnv is the environment without the host's proxy and trust settings.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
			"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// The app's TLS ends at tokenproxy and the bank's begins there: the app gets
// a leaf from the interception CA (never the bank's certificate) and the
// bank sees tokenproxy's client certificate (never the app's TLS).
func TestInterceptNeitherSideSeesTheOther(t *testing.T) {
	h, caFile := interceptHarness(t, harnessOpts{})
	app := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(h.proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: caPool(t, caFile), Certificates: []tls.Certificate{*mustClient(t, h.ca, "app-own-cert")}}}}
	resp, err := app.Get("https://" + bcHost + "/api/v1/accounts")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), bcIBAN) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: bcHost, Roots: caPool(t, caFile)}); err != nil {
		t.Fatalf("the app's leaf does not chain to the interception CA: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: h.ca.CertPool()}); err == nil {
		t.Fatal("the app saw a certificate of the bank's CA")
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != bcHost || len(leaf.IPAddresses) != 0 {
		t.Fatalf("leaf names %v %v; want only %s", leaf.DNSNames, leaf.IPAddresses, bcHost)
	}
	hs := h.emu.Handshakes()
	if len(hs) == 0 {
		t.Fatal("the bank saw no handshake")
	}
	for _, x := range hs {
		if !strings.Contains(x.Subject, "tokenproxy-client-1") {
			t.Fatalf("the bank saw client certificate %q, not tokenproxy's", x.Subject)
		}
	}
	if n := h.logs.Count(`"host":"` + bcHost + `"`); n == 0 {
		t.Fatal("the tunnelled request was not logged like a plain one")
	}
}

func mustClient(t testing.TB, ca *pki.CA, cn string) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueClient(cn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeCA writes ca's certificate and PKCS#8 key as PEM files.
func writeCAFiles(t testing.TB, ca *pki.CA, certFile, keyFile string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ca.Signer())
	if err != nil {
		t.Fatal(err)
	}
	// The key file first: the reloader reads the pair when the certificate changes.
	if err := os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile+".tmp", ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(keyFile+".tmp", keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".tmp", certFile); err != nil {
		t.Fatal(err)
	}
}

// After the CA files are replaced, a new connection gets a leaf from the
// new CA, without a restart.
func TestInterceptCARotationFromFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	oldCA, _ := pki.NewCA("interception CA 1")
	newCA, _ := pki.NewCA("interception CA 2")
	writeCAFiles(t, oldCA, certFile, keyFile)
	h, _ := interceptHarness(t, harnessOpts{top: fmt.Sprintf("interception:\n  ca:\n    files: {cert_file: %s, key_file: %s, reload_interval: 50ms}\n", certFile, keyFile)})
	leafIssuer := func() string {
		conn, a := connectRaw(t, h.srv.Addr("proxy"), bcHost+":443", nil)
		if a.status != 200 {
			t.Fatalf("CONNECT: %d %s", a.status, a.body)
		}
		pool := x509.NewCertPool()
		pool.AddCert(oldCA.Certificate())
		pool.AddCert(newCA.Certificate())
		tc := tls.Client(conn, &tls.Config{ServerName: bcHost, RootCAs: pool})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].Issuer.CommonName
	}
	if got := leafIssuer(); got != "interception CA 1" {
		t.Fatalf("leaf issued by %q", got)
	}
	writeCAFiles(t, newCA, certFile, keyFile)
	deadline := time.Now().Add(10 * time.Second)
	for leafIssuer() != "interception CA 2" {
		if time.Now().After(deadline) {
			t.Fatal("no leaf from the new CA 10s after the rotation")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ = context.Background
var _ = proxy.HeaderError
