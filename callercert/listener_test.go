package callercert

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
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

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// gateway is an HTTPS proxy listener that authenticates callers by client
// certificate or Basic password, the way the proxy wires it. It answers
// every request itself with the caller's name, standing in for the pipeline
// (proxy/connect_gateway_e2e_test.go drives the real one, CONNECT included).
type gateway struct {
	addr       string
	dir        string
	holder     *certs.Holder
	serverCA   *pki.CA
	callersCA  *pki.CA
	serverCAPE string
}

const basicUser, basicPass = "batch", "batch-pass"

type refusal struct {
	status       int
	code, msg    string
	authenticate bool
}

func (f *refusal) write(w http.ResponseWriter) {
	body, _ := json.Marshal(map[string]string{"error": f.code, "message": f.msg, "route": "bank"})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Tokenproxy-Error", f.code)
	if f.authenticate {
		w.Header().Set("Proxy-Authenticate", `Basic realm="tokenproxy"`)
	}
	w.WriteHeader(f.status)
	_, _ = w.Write(body)
}

// callerOf authenticates a request: a verified client certificate first,
// else Proxy-Authorization Basic.
func callerOf(m *Mapper, r *http.Request) (string, *refusal) {
	name, ok, err := m.FromConnection(r.TLS)
	var ue *UnknownCertificateError
	switch {
	case errors.As(err, &ue):
		return "", &refusal{http.StatusForbidden, "caller_not_allowed", ue.Error(), false}
	case err != nil:
		return "", &refusal{http.StatusForbidden, "caller_not_allowed", "unreadable client certificate", false}
	case ok:
		return name, nil
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(basicUser+":"+basicPass))
	if r.Header.Get("Proxy-Authorization") == want {
		return basicUser, nil
	}
	return "", &refusal{http.StatusProxyAuthRequired, "caller_authentication_required", "present a client certificate or Basic credentials", true}
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{dir: t.TempDir()}
	var err error
	if g.serverCA, err = pki.NewCA("Gateway Server CA"); err != nil {
		t.Fatal(err)
	}
	if g.callersCA, err = pki.NewCA("Gateway Callers CA"); err != nil {
		t.Fatal(err)
	}
	srvCert, err := g.serverCA.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g.holder = certs.NewHolder(srvCert)
	g.serverCAPE = filepath.Join(g.dir, "server-ca.pem")
	if err := g.serverCA.WriteCertFile(g.serverCAPE); err != nil {
		t.Fatal(err)
	}
	m, err := NewMapper([]Caller{
		{Name: "payments", Certificate: Match{Subject: "CN=payments,O=Example"}},
		{Name: "billing", Certificate: Match{SPIFFEID: "spiffe://prod.example/ns/billing"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The proxy (proxy/connect.go) serves CONNECT and the pipeline; this
	// stand-in answers absolute-URI requests with the caller's name.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, denied := callerOf(m, r)
		if denied != nil {
			denied.write(w)
			return
		}
		_, _ = io.WriteString(w, "caller="+caller+" url="+r.URL.String())
	})
	pool, err := LoadCertPool(writePEM(t, g.dir, "callers-ca.pem", g.callersCA.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(tls.NewListener(ln, ServerConfig(g.holder, pool))) }()
	t.Cleanup(func() { _ = srv.Close() })
	g.addr = ln.Addr().String()
	return g
}

func writePEM(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientFiles writes a client certificate and key issued by ca.
func (g *gateway) clientFiles(t *testing.T, ca *pki.CA, name string, subject pkix.Name, uris ...string) (string, string) {
	t.Helper()
	c := issueClient(t, ca, subject, uris...)
	certPEM, keyPEM, err := pki.EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, g.dir, name+".crt", certPEM), writePEM(t, g.dir, name+".key", keyPEM)
}

func TestHTTPSProxyListenerWithCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	g := startGateway(t)
	otherCA, _ := pki.NewCA("Someone Else's CA")
	type certFiles struct{ cert, key string }
	payments := func() certFiles {
		c, k := g.clientFiles(t, g.callersCA, "payments", pkix.Name{CommonName: "payments", Organization: []string{"Example"}})
		return certFiles{c, k}
	}()
	billing := func() certFiles {
		c, k := g.clientFiles(t, g.callersCA, "billing", pkix.Name{CommonName: "whatever"}, "spiffe://prod.example/ns/billing")
		return certFiles{c, k}
	}()
	stranger := func() certFiles {
		c, k := g.clientFiles(t, g.callersCA, "stranger", pkix.Name{CommonName: "stranger"})
		return certFiles{c, k}
	}()
	foreign := func() certFiles {
		c, k := g.clientFiles(t, otherCA, "foreign", pkix.Name{CommonName: "payments", Organization: []string{"Example"}})
		return certFiles{c, k}
	}()
	tests := []struct {
		name     string
		cert     *certFiles
		userinfo string
		url      string
		wantCode string // "" means the TLS handshake with the proxy fails
		wantBody string
	}{
		{"certificate by subject", &payments, "", "http://bank.example/api/v1/accounts", "200", "caller=payments"},
		{"certificate by SPIFFE ID", &billing, "", "http://bank.example/api/v1/accounts", "200", "caller=billing"},
		{"unknown certificate", &stranger, "", "http://bank.example/api/v1/accounts", "403", `"error":"caller_not_allowed"`},
		{"Basic password, no certificate", nil, basicUser + ":" + basicPass + "@", "http://bank.example/api/v1/accounts", "200", "caller=batch"},
		{"no credentials", nil, "", "http://bank.example/api/v1/accounts", "407", `"error":"caller_authentication_required"`},
		{"certificate from another CA", &foreign, "", "http://bank.example/api/v1/accounts", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-sS", "--max-time", "10", "--proxy", "https://" + tc.userinfo + g.addr,
				"--proxy-cacert", g.serverCAPE, "-w", "\n%{http_code}"}
			if tc.cert != nil {
				args = append(args, "--proxy-cert", tc.cert.cert, "--proxy-key", tc.cert.key)
			}
			out, err := exec.Command(curl, append(args, tc.url)...).CombinedOutput()
			s := strings.TrimSpace(string(out))
			if tc.wantCode == "" {
				if err == nil {
					t.Fatalf("curl succeeded with a certificate the listener does not trust:\n%s", s)
				}
				return
			}
			if !strings.HasSuffix(s, "\n"+tc.wantCode) || !strings.Contains(s, tc.wantBody) {
				t.Fatalf("curl (%v):\n%s\nwant %s with %q", err, s, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestHTTPSProxyListenerWithGoTransport(t *testing.T) {
	g := startGateway(t)
	roots := x509.NewCertPool()
	roots.AddCert(g.serverCA.Certificate())
	client := issueClient(t, g.callersCA, pkix.Name{CommonName: "payments", Organization: []string{"Example"}})
	get := func(proxy string, cert *tls.Certificate, roots *x509.CertPool) (string, error) {
		pu, _ := url.Parse(proxy)
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://bank.example/api/v1/accounts")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b), nil
	}
	if got, err := get("https://"+g.addr, client, roots); err != nil || !strings.Contains(got, "caller=payments") {
		t.Fatalf("with a client certificate: %q %v", got, err)
	}
	if got, err := get("https://"+basicUser+":"+basicPass+"@"+g.addr, nil, roots); err != nil || !strings.Contains(got, "caller=batch") {
		t.Fatalf("with a Basic password: %q %v", got, err)
	}

	// The server certificate reloads: a new connection sees the new one.
	newCA, _ := pki.NewCA("Gateway Server CA 2")
	next, _ := newCA.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	g.holder.Store(next)
	if _, err := get("https://"+g.addr, client, roots); err == nil {
		t.Fatal("after rotation the old server CA still verified the listener")
	}
	newRoots := x509.NewCertPool()
	newRoots.AddCert(newCA.Certificate())
	if got, err := get("https://"+g.addr, client, newRoots); err != nil || !strings.Contains(got, "caller=payments") {
		t.Fatalf("after rotation: %q %v", got, err)
	}
}
