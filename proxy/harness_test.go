package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/admin"
	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

const (
	bcHost     = "sandbox.bankingcircleconnect.com"
	bcUser     = "m2m-user-7f3a"
	bcPassword = "pa55word-Zq9xK2"
	bcPasscode = "pfx-passcode-Hk83"
)

// harness runs the emulator and tokenproxy in front of it, configured from
// YAML with the certificate and secrets in files, as in production.
type harness struct {
	t        *testing.T
	ca       *pki.CA
	emu      *bankingcircle.Server
	srv      *proxy.Server
	logs     *testlog.Capture
	dir      string
	pfx      string
	proxyURL *url.URL
	metrics  *metrics.Metrics
	cancel   context.CancelFunc
	done     chan error
}

type harnessOpts struct {
	extraRoute string // YAML appended to the route
	top        string // YAML inserted at the top level
	listen     string // YAML appended to the listen block
	emu        func(*bankingcircle.Config)
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	ca, err := pki.NewCA("tokenproxy test CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer([]string{"localhost", bcHost}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ecfg := bankingcircle.Config{ServerCert: serverCert, ClientCAs: ca.CertPool(), Username: bcUser, Password: bcPassword, TokenTTL: 300 * time.Second}
	if o.emu != nil {
		o.emu(&ecfg)
	}
	emu, err := bankingcircle.New(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })

	dir := t.TempDir()
	client, err := ca.IssueClient("tokenproxy-client-1", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(dir, "client", client, bcPasscode)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"passcode": bcPasscode, "username": bcUser, "password": bcPassword} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := o.top + fmt.Sprintf(`
listen:
  proxy: 127.0.0.1:0
  admin: 127.0.0.1:0
%sshutdown_grace: 5s
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    upstream: %s
    listen: 127.0.0.1:0
    tls:
      ca_file: %s
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
      reload_interval: 100ms
    token:
      url: %s/api/v1/authorizations/authorize
      username: {file: %s}
      password: {file: %s}
      skew: 1ms
      max_wait: 1s
%s`, o.listen, emu.APIURL(), caFile, files.PFX, filepath.Join(dir, "passcode"), emu.AuthURL(),
		filepath.Join(dir, "username"), filepath.Join(dir, "password"), o.extraRoute)
	// Two routes both naming 127.0.0.1:0 are fine: each gets its own free port.
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	log, logs := testlog.New(t)
	logs.ForbidStrings(bcUser+":"+bcPassword, bcPassword, bcPasscode)
	logs.Forbid(emu.IssuedTokens)
	h := &harness{t: t, ca: ca, emu: emu, logs: logs, dir: dir, pfx: files.PFX}
	m := metrics.New()
	h.metrics = m
	srv := build(t, cfg, assemble.Options{Log: log, TokenObserver: m, OnReload: m.Reload,
		InterceptObserver: intercept.NewPrometheusObserver(m.Registry())}, proxy.Options{
		Log: log, Observer: m,
		Admin: func(s *proxy.Server) http.Handler { return admin.Handler(s, m.Handler()) },
	})
	for _, r := range srv.Routes() {
		for _, hc := range r.Certificates() {
			m.WatchCertificate(r.Name, hc.Kind, hc.Holder.Load)
		}
	}
	h.srv = srv
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	h.proxyURL = &url.URL{Scheme: "http", Host: srv.Addr("proxy")}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- srv.Serve(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Error("server did not stop")
	}
}

// client returns a stock HTTP client that uses tokenproxy as its HTTP proxy.
func (h *harness) client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(h.proxyURL), MaxIdleConnsPerHost: 1000},
		Timeout:   30 * time.Second,
	}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) get(c *http.Client, rawURL string) answer {
	h.t.Helper()
	resp, err := c.Get(rawURL)
	if err != nil {
		h.t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// errorCode decodes tokenproxy's JSON error body.
func errorCode(t *testing.T, a answer) string {
	t.Helper()
	var e struct{ Error, Message, Route string }
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body is not JSON: %q", a.body)
	}
	if a.header.Get(proxy.HeaderError) != e.Error || e.Message == "" {
		t.Fatalf("error header %q, body %q", a.header.Get(proxy.HeaderError), a.body)
	}
	return e.Error
}

var _ = tls.VersionTLS12
var _ = strings.Contains

// build builds cfg's routes with bo and a server for them, listening on
// cfg's addresses.
func build(t testing.TB, cfg *config.Config, bo assemble.Options, opts proxy.Options) *proxy.Server {
	t.Helper()
	if bo.Log == nil {
		bo.Log = opts.Log
	}
	routes, err := assemble.Build(context.Background(), cfg, bo)
	if err != nil {
		t.Fatal(err)
	}
	if opts.ProxyListener, err = assemble.BuildProxyListener(context.Background(), cfg, bo); err != nil {
		t.Fatal(err)
	}
	opts.ProxyAddr, opts.AdminAddr = cfg.Listen.Proxy, cfg.Listen.Admin
	opts.ShutdownGrace, opts.ExpiryWarning = cfg.ShutdownGrace, cfg.CertificateExpiryWarning
	return proxy.New(routes, opts)
}

// serve builds tokenproxy from cfg, listens, and serves until the test ends.
func serve(t testing.TB, cfg *config.Config, bo assemble.Options, opts proxy.Options) *proxy.Server {
	t.Helper()
	srv := build(t, cfg, bo, opts)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv
}
