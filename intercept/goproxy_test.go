package intercept

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/testlog"
)

// fixture is the pattern the proxy copies: goproxy with a CONNECT handler
// that looks the route up, checks Proxy-Authorization before accepting the
// tunnel, then lets Tunnel.TLSConfig terminate the app's TLS; decrypted
// requests go through Tunnel.Check and then the pipeline (here: forward to
// an upstream "bank" over the route's own TLS, adding a token).
type fixture struct {
	proxyURL string
	caFile   string
	ca       *GeneratedCA
	obs      *countObserver
	bank     *httptest.Server
	bankSeen chan *http.Request
}

const (
	callerName = "payments"
	callerPass = "s3cret-pass"
	routeHost  = "bank.example"
)

func jsonRefusal(req *http.Request, status int, code, msg string) *http.Response {
	body, _ := json.Marshal(map[string]string{"error": code, "message": msg, "route": ""})
	resp := goproxy.NewResponse(req, "application/json", status, string(body))
	resp.Header.Set("X-Tokenproxy-Error", code)
	return resp
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{obs: &countObserver{}, bankSeen: make(chan *http.Request, 16)}
	f.bank = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.bankSeen <- r
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"accounts":[{"iban":"DK5000400440116243"}]}`)
	}))
	t.Cleanup(f.bank.Close)
	bankURL, _ := url.Parse(f.bank.URL)
	f.caFile = filepath.Join(t.TempDir(), "ca.pem")
	f.ca = mustGenerate(t, GenerateConfig{WriteCertTo: f.caFile, Hosts: []string{routeHost, "other.example"}})
	leaves := NewLeaves(f.ca, LeafConfig{Observer: f.obs})
	intercepted := allowOnly(routeHost, "other.example") // hosts with an intercepting route
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(callerName+":"+callerPass))

	// Everything goproxy logs (verbose) goes to a capture that must never hold the CA key.
	zl, capture := testlog.New(t)
	capture.ForbidStrings(keySecrets(t, &tls.Certificate{PrivateKey: f.ca.cur.Load().key})...)
	gp := goproxy.NewProxyHttpServer()
	gp.Verbose = true
	gp.Logger = log.New(zap.NewStdLog(zl).Writer(), "", 0)
	gp.AllowHTTP2 = false
	gp.Tr = f.bank.Client().Transport.(*http.Transport) // the route's transport (never goproxy's default)
	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		t, err := leaves.Open(host, "", intercepted) // 1. route lookup: intercepted hosts only
		if err != nil {
			ctx.Resp = jsonRefusal(ctx.Req, http.StatusForbidden, "connect_refused", err.Error())
			return goproxy.RejectConnect, host
		}
		if ctx.Req.Header.Get("Proxy-Authorization") != wantAuth { // 2. caller, before the tunnel is accepted
			ctx.Resp = jsonRefusal(ctx.Req, http.StatusProxyAuthRequired, "caller_authentication_required", "send Proxy-Authorization")
			ctx.Resp.Header.Set("Proxy-Authenticate", `Basic realm="tokenproxy"`)
			return goproxy.RejectConnect, host
		}
		t.Caller = callerName
		ctx.UserData = t // 3. goproxy hands it to every request read from the tunnel
		return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: t.GoproxyTLSConfig}, host
	})
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		tun, ok := ctx.UserData.(*Tunnel)
		if !ok {
			return r, jsonRefusal(r, http.StatusBadRequest, "bad_request", "plain requests are not part of this example")
		}
		if err := tun.Check(r); err != nil { // 4. TLS only, and only the CONNECT host
			return r, jsonRefusal(r, http.StatusForbidden, "connect_refused", err.Error())
		}
		// 5. The normal pipeline: token, signature, the route's upstream over its own TLS.
		r.URL.Host = bankURL.Host
		r.Host = bankURL.Host
		r.Header.Set("Authorization", "Bearer route-token")
		r.Header.Set("X-Caller", tun.Caller)
		return r, nil
	})
	srv := httptest.NewServer(gp)
	t.Cleanup(srv.Close)
	f.proxyURL = srv.URL
	return f
}

func needCurl(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is needed")
		}
		t.Skip("curl not installed")
	}
	return p
}

func TestGoproxyInterceptionWithCurl(t *testing.T) {
	curl := needCurl(t)
	f := newFixture(t)
	withAuth := strings.Replace(f.proxyURL, "http://", "http://"+callerName+":"+callerPass+"@", 1)
	tests := []struct {
		name        string
		proxy       string
		url         string
		wantConnect string // CONNECT status curl saw
		wantBody    string
	}{
		{"intercepted route", withAuth, "https://bank.example/api/v1/accounts", "200", "DK5000400440116243"},
		{"host without an intercepting route", withAuth, "https://unknown.example/", "403", ""},
		{"no caller credentials", f.proxyURL, "https://bank.example/api/v1/accounts", "407", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(curl, "-sS", "--max-time", "10", "--proxy", tc.proxy, "--cacert", f.caFile,
				"-w", "\n%{http_connect} %{http_code}", tc.url).CombinedOutput()
			s := string(out)
			lines := strings.Split(strings.TrimSpace(s), "\n")
			codes := strings.Fields(lines[len(lines)-1])
			if len(codes) == 0 || codes[0] != tc.wantConnect {
				t.Fatalf("CONNECT answered %v, want %s (curl: %v)\n%s", codes, tc.wantConnect, err, s)
			}
			if tc.wantBody != "" {
				if err != nil || !strings.Contains(s, tc.wantBody) || codes[1] != "200" {
					t.Fatalf("curl: %v\n%s", err, s)
				}
				seen := <-f.bankSeen
				if seen.Header.Get("Authorization") != "Bearer route-token" || seen.Header.Get("X-Caller") != callerName {
					t.Fatalf("bank saw headers %v", seen.Header)
				}
			} else if err == nil {
				t.Fatalf("curl succeeded through a refused CONNECT:\n%s", s)
			}
		})
	}
	if f.obs.get("intercepted bank.example") != 1 || f.obs.get("refused unknown.example not_intercepted") != 1 {
		t.Fatalf("observer saw %v", f.obs.n)
	}
}

// connectTLS opens a tunnel to connectHost through the fixture's proxy and
// starts TLS with serverName, trusting only the interception CA.
func (f *fixture) connectTLS(t testing.TB, connectHost, serverName string) (*tls.Conn, error) {
	t.Helper()
	raw := f.connect(t, connectHost)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.ca.CertPEM())
	c := tls.Client(raw, &tls.Config{ServerName: serverName, RootCAs: pool, MinVersion: tls.VersionTLS12})
	return c, c.Handshake()
}

// connect opens an accepted CONNECT tunnel through the fixture's proxy.
func (f *fixture) connect(t testing.TB, connectHost string) net.Conn {
	t.Helper()
	u, _ := url.Parse(f.proxyURL)
	raw, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	auth := base64.StdEncoding.EncodeToString([]byte(callerName + ":" + callerPass))
	_, _ = io.WriteString(raw, "CONNECT "+connectHost+" HTTP/1.1\r\nHost: "+connectHost+"\r\nProxy-Authorization: Basic "+auth+"\r\n\r\n")
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v %v", connectHost, resp, err)
	}
	return raw
}

func TestGoproxyInterceptionSNIMismatch(t *testing.T) {
	f := newFixture(t)
	// Both hosts are intercepted, yet a tunnel to one may not present the other's name.
	_, err := f.connectTLS(t, "other.example:443", routeHost)
	if err == nil {
		t.Fatal("handshake with SNI bank.example in a tunnel to other.example succeeded")
	}
	if f.obs.get("refused other.example sni_mismatch") != 1 {
		t.Fatalf("observer saw %v (handshake error %v)", f.obs.n, err)
	}
	c, err := f.connectTLS(t, "bank.example:443", routeHost)
	if err != nil {
		t.Fatalf("matching SNI: %v", err)
	}
	st := c.ConnectionState()
	if st.Version < tls.VersionTLS12 || st.NegotiatedProtocol != "" && st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("negotiated %x %q", st.Version, st.NegotiatedProtocol)
	}
	if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != routeHost {
		t.Fatalf("app saw certificate for %v", got)
	}
	if st.PeerCertificates[0].Equal(f.bank.Certificate()) {
		t.Fatal("the app saw the bank's certificate")
	}
}

func TestGoproxyInterceptionInnerRequestChecks(t *testing.T) {
	tests := []struct {
		name     string
		useTLS   bool
		request  string
		wantCode int
		wantText string
	}{
		{"same host", true, "GET /api/v1/accounts HTTP/1.1\r\nHost: bank.example\r\n\r\n", http.StatusOK, "DK50"},
		{"other host inside the tunnel", true, "GET /api/v1/accounts HTTP/1.1\r\nHost: other.example\r\n\r\n", http.StatusForbidden, "inside a tunnel to"},
		{"other port inside the tunnel", true, "GET / HTTP/1.1\r\nHost: bank.example:8443\r\n\r\n", http.StatusForbidden, "inside a tunnel to"},
		{"plain HTTP inside the tunnel", false, "GET /api/v1/accounts HTTP/1.1\r\nHost: bank.example\r\n\r\n", http.StatusForbidden, "must carry TLS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var c io.ReadWriter
			if tc.useTLS {
				tlsConn, err := f.connectTLS(t, "bank.example:443", routeHost)
				if err != nil {
					t.Fatal(err)
				}
				c = tlsConn
			} else {
				c = f.connect(t, "bank.example:443")
			}
			_, _ = io.WriteString(c, tc.request)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantText) {
				t.Fatalf("answered %d %s, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.wantText)
			}
			if called := len(f.bankSeen) > 0; called != (tc.wantCode == http.StatusOK) {
				t.Fatalf("bank called: %v", called)
			}
		})
	}
}

func TestGoproxyInterceptionAfterCARotation(t *testing.T) {
	curl := needCurl(t)
	f := newFixture(t)
	withAuth := strings.Replace(f.proxyURL, "http://", "http://"+callerName+":"+callerPass+"@", 1)
	oldCA := filepath.Join(t.TempDir(), "old-ca.pem")
	if err := os.WriteFile(oldCA, f.ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(caFile string) (string, error) {
		out, err := exec.Command(curl, "-sS", "--max-time", "10", "--proxy", withAuth, "--cacert", caFile,
			"https://bank.example/api/v1/accounts").CombinedOutput()
		return string(out), err
	}
	if out, err := get(oldCA); err != nil {
		t.Fatalf("before rotation: %v\n%s", err, out)
	}
	<-f.bankSeen
	if err := f.ca.Rotate(); err != nil { // rewrites f.caFile, as the app's mounted file would be
		t.Fatal(err)
	}
	if out, err := get(oldCA); err == nil {
		t.Fatalf("after rotation the old CA still verified the leaf:\n%s", out)
	}
	if out, err := get(f.caFile); err != nil || !strings.Contains(out, "DK5000400440116243") {
		t.Fatalf("after rotation with the rewritten CA file: %v\n%s", err, out)
	}
}
